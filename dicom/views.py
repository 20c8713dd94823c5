"""Pages: the inbox of received images that matched no patient (staff assign them to a patient or create one), and
the clinic admins' DICOM page (the node settings and the results sent back, with a resend action)."""

from __future__ import annotations

import datetime as dt
import uuid

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from clinics.services import ServiceError
from clinics.views_base import ClinicView
from patients.models import Patient
from patients.selectors import patient_list

from .models import DicomInstance, DicomSend
from .selectors import dicom_node, inbox_get, inbox_list, send_get, send_last_detail, send_list
from .services import dicom_node_configure, inbox_assign, inbox_preview, node_destination_string, send_resend

RECENT_SENDS = 50


class InboxView(ClinicView):
    """POST: ``instance`` and either ``patient`` (a practice id or name to search) or ``new`` with the new patient's
    ``external_id``, ``given_name``, ``family_name``, ``date_of_birth``."""

    template_name = "dicom/inbox.html"

    def _render(self, request: HttpRequest, *, status: int = 200, **extra: object) -> HttpResponse:
        items = [(instance, inbox_preview(instance)) for instance in inbox_list()[:100]]
        response = render(request, self.template_name, {"items": items, **extra}, status=status)
        response["Cache-Control"] = "no-store"
        return response

    def get(self, request: HttpRequest) -> HttpResponse:
        return self._render(request)

    def post(self, request: HttpRequest) -> HttpResponse:
        try:
            instance_id = uuid.UUID(request.POST.get("instance", ""))
        except ValueError:
            return self._render(request, error="Choose an image of the inbox.", status=400)
        try:
            instance = inbox_get(instance_id)
        except DicomInstance.DoesNotExist as exc:
            raise Http404 from exc
        try:
            if request.POST.get("action") == "new":
                born = dt.date.fromisoformat(request.POST.get("date_of_birth", ""))
                create = {k: request.POST.get(k, "") for k in ("external_id", "given_name", "family_name")}
                inbox_assign(instance=instance, actor=request.user, create={**create, "date_of_birth": born})
            else:
                found = list(patient_list(search=request.POST.get("patient", ""))[:2])
                if len(found) != 1:
                    return self._render(
                        request, error="Search for exactly one patient (practice id or name).", status=400
                    )
                inbox_assign(instance=instance, actor=request.user, patient=found[0])
        except ValueError:
            return self._render(request, error="Give the date of birth as YYYY-MM-DD.", status=400)
        except (ServiceError, Patient.DoesNotExist) as exc:
            return self._render(request, error=getattr(exc, "message", "Not possible."), status=400)
        messages.success(request, "Image assigned: it is stored in the patient's record and sent for analysis.")
        return redirect("dicom:inbox")


class SettingsView(ClinicView):
    """POST ``action``: ``save`` (the node form) or ``resend`` (``send``: its id)."""

    template_name = "dicom/settings.html"

    def _render(self, request: HttpRequest, *, status: int = 200, **extra: object) -> HttpResponse:
        sends = list(send_list()[:RECENT_SENDS])
        for send in sends:
            send.last_detail = send_last_detail(send)  # type: ignore[attr-defined]
        node = dicom_node()
        context = {"node": node, "destination": node_destination_string(node) if node else "", "sends": sends, **extra}
        return render(request, self.template_name, context, status=status)

    def get(self, request: HttpRequest) -> HttpResponse:
        return self._render(request)

    def post(self, request: HttpRequest) -> HttpResponse:
        if request.POST.get("action") == "resend":
            try:
                send: DicomSend = send_get(uuid.UUID(request.POST.get("send", "")))
            except (ValueError, DicomSend.DoesNotExist) as exc:
                raise Http404 from exc
            send_resend(send=send)
            messages.success(request, "Queued again: its state below changes once the PACS has answered.")
            return redirect("dicom:settings")
        post = request.POST
        try:
            port = int(post["dest_port"]) if post.get("dest_port") else None
            dicom_node_configure(
                called_ae=post.get("called_ae", ""),
                calling_aes=[v for v in post.get("calling_aes", "").replace(",", " ").split() if v],
                calling_ips=[v for v in post.get("calling_ips", "").replace(",", " ").split() if v],
                dest_ae=post.get("dest_ae", ""),
                dest_host=post.get("dest_host", ""),
                dest_port=port,
                dest_tls=post.get("dest_tls") == "on",
                send_preliminary=post.get("send_preliminary") == "on",
                send_secondary_capture=post.get("send_secondary_capture") == "on",
            )
        except ValueError:
            return self._render(request, error="The port must be a number.", status=400)
        except ServiceError as exc:
            return self._render(request, error=exc.message, status=exc.status if exc.status < 500 else 400)
        messages.success(request, "DICOM settings saved.")
        return redirect("dicom:settings")
