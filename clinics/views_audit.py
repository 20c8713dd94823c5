"""The clinic's audit trail (clinic admins): the filtered, paged page and its CSV/JSON export; each read is
itself recorded."""

from __future__ import annotations

from typing import Any

from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import render

from .exports import EXPORT_FORMATS, audit_export_response, record_audit_trail_read
from .forms import AuditFilterForm
from .models import AuditOutcome
from .selectors import audit_events
from .views_base import ClinicView


def _audit_filters(request: HttpRequest) -> tuple[AuditFilterForm, dict[str, Any]]:
    form = AuditFilterForm(request.GET or None)
    filters = {k: v for k, v in form.cleaned_data.items() if v} if form.is_valid() else {}
    return form, filters


class AuditView(ClinicView):
    def get(self, request: HttpRequest) -> HttpResponse:
        form, filters = _audit_filters(request)
        page = Paginator(audit_events(**filters), 50).get_page(request.GET.get("page"))
        page.object_list = list(page.object_list)  # read before this read is itself recorded
        record_audit_trail_read(
            clinic_id=self.access.clinic.id, filters=filters, page=page.number, shown=len(page.object_list)
        )
        query = request.GET.copy()
        query.pop("page", None)
        return render(
            request,
            "clinics/audit.html",
            {
                "form": form,
                "page": page,
                "query": query.urlencode(),
                "formats": EXPORT_FORMATS,
                "outcomes": AuditOutcome,
                **self.registered_context(request),  # emergency-access grants (patients.pages)
            },
        )


class AuditExportView(ClinicView):
    def get(self, request: HttpRequest) -> HttpResponse:
        fmt = request.GET.get("format", "csv")
        if fmt not in EXPORT_FORMATS:
            return HttpResponseBadRequest("Unknown export format.")
        form, filters = _audit_filters(request)
        return audit_export_response(
            events=audit_events(**filters),
            fmt=fmt,
            clinic_id=self.access.clinic.id,
            filters=filters,
        )
