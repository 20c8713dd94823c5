from __future__ import annotations

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from clinics import audit
from clinics.services import ServiceError
from clinics.views_base import ClinicView

from .forms import PatientForm
from .models import Image, Modality, Patient
from .restricted import active_grant, break_glass_open, patient_restrict, restricted_visible
from .selectors import image_get, patient_get, patient_identity, patient_list, visit_list
from .services import (
    image_read,
    image_read_pixels16,
    patient_create,
    patient_erase,
    patient_export,
    patient_update,
)


def _no_store(response: HttpResponse) -> HttpResponse:
    response["Cache-Control"] = "no-store"
    return response


def _patient_or_404(pk: object) -> Patient:
    try:
        return patient_get(pk)
    except Patient.DoesNotExist as exc:
        raise Http404 from exc


SEARCH_SESSION_KEY = "patient_search"


class PatientListView(ClinicView):
    """Patients of the clinic. The search words travel in a POST and live in the session, never in
    the URL (URLs end up in access logs and browser history)."""

    def _render(self, request: HttpRequest, form: PatientForm, status: int = 200) -> HttpResponse:
        search = request.session.get(SEARCH_SESSION_KEY, "")
        visible = restricted_visible(self.access)
        page = Paginator(patient_list(search=search, restricted_names=visible), 25).get_page(request.GET.get("page"))
        # a restricted record that this member may not open shows its practice id only (issue 24)
        rows = [(p, patient_identity(p), p.restricted and not visible) for p in page]
        audit.record(
            action="patient.list",
            clinic_id=self.access.clinic.id,
            object_type="patient",
            details={"ids": [str(p.id) for p in page], "searched": bool(search)},
        )
        context = {"page": page, "rows": rows, "q": search, "form": form}
        return _no_store(render(request, "patients/list.html", context, status=status))

    def get(self, request: HttpRequest) -> HttpResponse:
        return self._render(request, PatientForm())

    def post(self, request: HttpRequest) -> HttpResponse:
        if request.POST.get("action") == "search":
            request.session[SEARCH_SESSION_KEY] = request.POST.get("q", "").strip()[:200]
            return redirect("patients:list")
        form = PatientForm(request.POST)
        if form.is_valid():
            try:
                patient = patient_create(**form.cleaned_data)
            except ServiceError as exc:
                form.add_error(None, exc.message)
            else:
                return redirect("patients:detail", pk=patient.id)
        return self._render(request, form, status=400)


class PatientDetailView(ClinicView):
    def _render(self, request: HttpRequest, patient: Patient, form: PatientForm, status: int = 200) -> HttpResponse:
        audit.record(
            action="patient.view", clinic_id=self.access.clinic.id, object_type="patient", object_id=patient.id
        )
        context = {
            "patient": patient,
            "identity": patient_identity(patient),
            "form": form,
            "visits": visit_list(patient),
            "can_export": self.access.can("patient.export"),
            "can_erase": self.access.can("patient.erase"),
            "can_upload": self.access.can("image.upload"),
            "can_restrict": self.access.can("patient.restrict"),
            "break_glass": active_grant(self.access.user, patient.pk) if self.access.user else None,
        }
        return _no_store(render(request, "patients/detail.html", context, status=status))

    def get(self, request: HttpRequest, pk: str) -> HttpResponse:
        patient = _patient_or_404(pk)
        identity = patient_identity(patient)
        form = PatientForm(initial={**identity.__dict__, "sex": patient.sex})
        return self._render(request, patient, form)

    def post(self, request: HttpRequest, pk: str) -> HttpResponse:
        patient = _patient_or_404(pk)
        form = PatientForm(request.POST)
        if form.is_valid():
            try:
                patient_update(patient=patient, **form.cleaned_data)
            except ServiceError as exc:
                form.add_error(None, exc.message)
            else:
                messages.success(request, "Patient record saved.")
                return redirect("patients:detail", pk=patient.id)
        return self._render(request, patient, form, status=400)


class UploadView(ClinicView):
    def get(self, request: HttpRequest, pk: str) -> HttpResponse:
        patient = _patient_or_404(pk)
        context = {"patient": patient, "identity": patient_identity(patient), "modalities": Modality.choices}
        return _no_store(render(request, "patients/upload.html", context))


class ImageView(ClinicView):
    """A decrypted image variant for the pages (thumbnail, preview or the sanitised original)."""

    def get(self, request: HttpRequest, pk: str) -> HttpResponse:
        try:
            image = image_get(pk)
        except Image.DoesNotExist as exc:
            raise Http404 from exc
        variant = request.GET.get("variant", "thumbnail")
        if variant == "pixels16":  # the raw values of a 16-bit X-ray, for the viewer's window/level
            try:
                data = image_read_pixels16(image=image)
            except ServiceError as exc:
                return HttpResponse(exc.message, status=exc.status, content_type="text/plain")
            return _no_store(HttpResponse(data, content_type="application/octet-stream"))
        try:
            data = image_read(image=image, variant=variant)
        except ServiceError as exc:
            return HttpResponse(exc.message, status=exc.status, content_type="text/plain")
        content_type = "image/png" if variant == "original" else "image/jpeg"
        return _no_store(HttpResponse(data, content_type=content_type))


class PatientRestrictView(ClinicView):
    """Dentists and clinic admins mark a record restricted (or open it again)."""

    def post(self, request: HttpRequest, pk: str) -> HttpResponse:
        patient = _patient_or_404(pk)
        restricted = request.POST.get("restricted") == "1"
        patient_restrict(access=self.access, patient=patient, restricted=restricted)
        done = "The record is now restricted." if restricted else "The record is no longer restricted."
        messages.success(request, done)
        return redirect("patients:detail", pk=patient.pk)


class BreakGlassView(ClinicView):
    """Emergency access to a restricted record: a reason, then time-limited access (admins notified)."""

    def post(self, request: HttpRequest, pk: str) -> HttpResponse:
        patient = _patient_or_404(pk)
        try:
            grant = break_glass_open(access=self.access, patient=patient, reason=request.POST.get("reason", ""))
        except ServiceError as exc:
            context = {"patient_id": patient.pk, "error": exc.message, "reason": request.POST.get("reason", "")}
            return render(request, "patients/restricted.html", context, status=exc.status)
        messages.warning(
            request,
            f"Emergency access is open until {grant.expires_at:%H:%M} UTC. The clinic admins were notified "
            "and every page you open is recorded.",
        )
        return redirect("patients:detail", pk=patient.pk)


class PatientExportView(ClinicView):
    def post(self, request: HttpRequest, pk: str) -> HttpResponse:
        patient = _patient_or_404(pk)
        response = HttpResponse(patient_export(patient=patient), content_type="application/zip")
        response["Content-Disposition"] = f'attachment; filename="patient-{patient.pk}.zip"'
        return _no_store(response)


class PatientEraseView(ClinicView):
    def post(self, request: HttpRequest, pk: str) -> HttpResponse:
        patient = _patient_or_404(pk)
        if request.POST.get("confirm", "").strip() != patient_identity(patient).external_id:
            messages.error(request, "Type the patient's practice id to confirm the erasure.")
            return redirect("patients:detail", pk=patient.pk)
        try:
            patient_erase(patient=patient)
        except ServiceError as exc:
            messages.error(request, exc.message)
            return redirect("patients:detail", pk=patient.pk)
        messages.success(request, "The patient and all their images were erased.")
        return redirect("patients:list")
