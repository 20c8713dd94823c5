"""What the patients app adds to clinics' pages through clinics' hooks (``patients.pages``, registered in
``PatientsConfig.ready()``): the patient count on the home page, emergency-access grants on the audit page."""

from __future__ import annotations

from django.urls import reverse

from clinics.tenancy import clinic_scope
from patients.models import Patient

from ..conftest import World, user_client


def test_home_page_counts_the_clinics_patients_only(alice: World, bob: World) -> None:
    with clinic_scope(alice.clinic.id):
        expected = Patient.objects.count()
    page = user_client(alice.users["staff"]).get(reverse("clinics:home"))
    assert page.context["patient_count"] == expected == 1
    assert f"<strong>{expected}</strong> patients" in page.content.decode()


def test_audit_page_lists_grants_even_when_there_are_none(alice: World) -> None:
    page = user_client(alice.users["clinic_admin"]).get(reverse("clinics:audit"))
    assert page.context["grants"] == [] and b"No emergency access has been opened." in page.content
