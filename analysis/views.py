"""HTML pages of the analysis app: the signed visit report (HTML and PDF)."""

from __future__ import annotations

import io

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from PIL import Image as PILImage

from clinics import audit
from clinics.views_base import ClinicView
from patients.models import Image, Visit, data_keys_attach
from patients.restricted import restricted_visible
from patients.selectors import patient_identity
from patients.services import image_read

from .models import Report
from .report_wording import render_html_context
from .reports import report_content
from .selectors import visits_to_review


def _latest_report(pk: object) -> Report | None:
    """The newest signed version of a visit's report; None when not signed yet; 404 for no visit."""
    if not Visit.objects.filter(pk=pk).exists():
        raise Http404
    return Report.objects.filter(visit_id=pk).select_related("visit__patient", "signed_by").order_by("-version").first()


def _no_store(response: HttpResponse) -> HttpResponse:
    response["Cache-Control"] = "no-store"
    return response


class VisitReportPageView(ClinicView):
    """The patient-friendly report of the latest signed version (printable)."""

    def get(self, request: HttpRequest, pk: str) -> HttpResponse:
        report = _latest_report(pk)
        if report is None:
            return render(request, "analysis/report_unsigned.html", {"visit_id": pk}, status=200)
        content = report_content(report)
        audit.record(action="report.view", clinic_id=self.access.clinic.id, object_type="report", object_id=report.pk)
        context = {"report": report, "content": content, "plain": render_html_context(content)}
        return _no_store(render(request, "analysis/report.html", context))


class VisitReportPdfView(ClinicView):
    def get(self, request: HttpRequest, pk: str) -> HttpResponse:
        from .report_pdf import render_pdf  # imports reportlab (~0.1 s): not at start-up

        report = _latest_report(pk)
        if report is None:
            return HttpResponse("This visit has no signed report yet.", status=409, content_type="text/plain")
        content = report_content(report)
        images = {}
        for item in content["images"]:
            image = Image.objects.select_related("patient").prefetch_related("patient__data_keys").get(pk=item["id"])
            images[item["id"]] = PILImage.open(io.BytesIO(image_read(image=image, variant="original")))
        pdf = render_pdf(content, images)
        audit.record(
            action="report.download",
            clinic_id=self.access.clinic.id,
            object_type="report",
            object_id=report.pk,
            details={"format": "pdf"},
        )
        response = HttpResponse(pdf, content_type="application/pdf")
        response["Content-Disposition"] = f'inline; filename="report-{report.visit_id}-v{report.version}.pdf"'
        return _no_store(response)


class WorklistView(ClinicView):
    """Visits waiting for a dentist: scans uploaded, report not signed yet (or being amended)."""

    def get(self, request: HttpRequest) -> HttpResponse:
        rows = visits_to_review(include_restricted=restricted_visible(self.access))
        data_keys_attach([row["visit"].patient for row in rows])
        for row in rows:
            row["identity"] = patient_identity(row["visit"].patient)
        audit.record(
            action="visit.list",
            clinic_id=self.access.clinic.id,
            object_type="visit",
            details={"ids": [str(row["visit"].pk) for row in rows], "worklist": True},
        )
        return _no_store(render(request, "analysis/worklist.html", {"rows": rows}))
