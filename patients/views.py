from __future__ import annotations

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render

from clinics import audit
from clinics.services import ServiceError
from clinics.views_base import ClinicView

from .forms import PatientForm
from .models import Patient
from .selectors import patient_list
from .services import patient_create, patient_update


def _no_store(response: HttpResponse) -> HttpResponse:
    response["Cache-Control"] = "no-store"
    return response


class PatientListView(ClinicView):
    def _render(self, request: HttpRequest, form: PatientForm, status: int = 200) -> HttpResponse:
        search = request.GET.get("q", "")
        page = Paginator(patient_list(search=search), 25).get_page(request.GET.get("page"))
        audit.record(action="patient.list", clinic_id=self.access.clinic.id, object_type="patient",
                     details={"ids": [str(p.id) for p in page], "searched": bool(search)})
        context = {"page": page, "q": search, "form": form}
        return _no_store(render(request, "patients/list.html", context, status=status))

    def get(self, request: HttpRequest) -> HttpResponse:
        return self._render(request, PatientForm())

    def post(self, request: HttpRequest) -> HttpResponse:
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
        audit.record(action="patient.view", clinic_id=self.access.clinic.id, object_type="patient",
                     object_id=patient.id)
        return _no_store(render(request, "patients/detail.html", {"patient": patient, "form": form}, status=status))

    def get(self, request: HttpRequest, pk: str) -> HttpResponse:
        patient = get_object_or_404(Patient.objects, pk=pk)
        form = PatientForm(initial={f: getattr(patient, f) for f in PatientForm.base_fields})
        return self._render(request, patient, form)

    def post(self, request: HttpRequest, pk: str) -> HttpResponse:
        patient = get_object_or_404(Patient.objects, pk=pk)
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
