from __future__ import annotations

import datetime as dt
import uuid

import pytest
from django.urls import reverse

from clinics.models import Membership
from clinics.permissions import ROLE_PERMISSIONS, Role
from clinics.tenancy import TenantScopeError, clinic_scope
from patients.models import Patient
from patients.selectors import patient_get, patient_identity, patient_list

from ..conftest import World, key_client, token_client, user_client


def test_query_without_clinic_scope_raises(alice: World) -> None:
    with pytest.raises(TenantScopeError):
        list(Patient.objects.all())
    with pytest.raises(TenantScopeError):
        Patient.objects.get(pk=alice.patient.pk)
    with pytest.raises(TenantScopeError):
        patient_list()


def test_scope_only_sees_its_own_clinic(alice: World, bob: World) -> None:
    with clinic_scope(bob.clinic.id):
        ids = set(Patient.objects.values_list("id", flat=True))
        assert ids == {bob.patient.pk}
        assert not Patient.objects.filter(pk=alice.patient.pk).exists()
        assert alice.memberships["dentist"].pk not in set(Membership.objects.values_list("id", flat=True))


def test_rows_of_another_clinic_cannot_be_written(alice: World, bob: World) -> None:
    with clinic_scope(bob.clinic.id):
        with pytest.raises(TenantScopeError):
            Patient.objects.create(clinic=alice.clinic, sex="other")
        patient = Patient.unscoped.get(pk=alice.patient.pk)  # explicit escape hatch
        patient.sex = "other"
        with pytest.raises(TenantScopeError):
            patient.save()
    assert Patient.unscoped.get(pk=alice.patient.pk).sex == "unknown"


def test_scope_does_not_leak_between_requests(alice: World) -> None:
    from clinics.tenancy import current_clinic_id

    client = token_client(alice, "staff")
    assert client.get(reverse("api:patient-list")).status_code == 200
    assert current_clinic_id() is None


@pytest.mark.parametrize("method", ["get", "patch", "put", "delete"])
def test_cross_clinic_object_answers_404_like_a_missing_one(method: str, alice: World, bob: World) -> None:
    url = reverse("api:patient-detail", kwargs={"pk": alice.patient.pk})
    missing = reverse("api:patient-detail", kwargs={"pk": uuid.uuid4()})
    for client in (token_client(bob, "clinic_admin"), key_client(bob)):
        theirs = getattr(client, method)(url, {"family_name": "Hacked"}, format="json")
        nothing = getattr(client, method)(missing, {"family_name": "Hacked"}, format="json")
        assert theirs.status_code == nothing.status_code == 404
        assert (
            theirs.json()
            == nothing.json()
            == {"error": {"code": "not_found", "message": "Not found.", "details": None}}
        )
    with clinic_scope(alice.clinic.id):
        assert patient_identity(patient_get(alice.patient.pk)).family_name == alice.patient_name


def test_own_object_with_an_unoffered_method_is_405(alice: World) -> None:
    url = reverse("api:patient-detail", kwargs={"pk": alice.patient.pk})
    response = token_client(alice, "staff").put(url, {}, format="json")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_html_cross_clinic_detail_is_404(alice: World, bob: World) -> None:
    client = user_client(bob.users["clinic_admin"])
    assert client.get(reverse("patients:detail", kwargs={"pk": alice.patient.pk})).status_code == 404
    response = client.post(
        reverse("patients:detail", kwargs={"pk": alice.patient.pk}),
        {
            "external_id": "x",
            "given_name": "x",
            "family_name": "Hacked",
            "date_of_birth": "2000-01-01",
            "sex": "unknown",
        },
    )
    assert response.status_code == 404
    assert (
        client.post(
            reverse("clinics:member-update", kwargs={"pk": alice.memberships["dentist"].pk}), {"role": "clinic_admin"}
        ).status_code
        == 404
    )
    assert Membership.unscoped.get(pk=alice.memberships["dentist"].pk).role == Role.DENTIST


def test_clinic_cannot_be_chosen_by_request_data(alice: World, bob: World) -> None:
    """A member of bob cannot pick alice's clinic through the session switch or token request."""
    client = user_client(bob.users["clinic_admin"])
    assert client.post(reverse("clinics:switch-clinic"), {"clinic": str(alice.clinic.id)}).status_code == 400
    response = client.get(reverse("patients:list"))
    assert alice.patient_name.encode() not in response.content
    from tests.conftest import PASSWORD

    response = key_client(bob).post(
        reverse("api:token"),
        {"email": bob.users["staff"].email, "password": PASSWORD, "clinic": str(alice.clinic.id)},
        format="json",
    )
    assert response.status_code == 401
    created = token_client(bob, "staff").post(
        reverse("api:patient-list"),
        {
            "external_id": "n1",
            "given_name": "N",
            "family_name": "N",
            "date_of_birth": "2001-02-03",
            "clinic": str(alice.clinic.id),
        },
        format="json",
    )
    assert created.status_code == 201
    assert Patient.unscoped.get(pk=created.json()["id"]).clinic_id == bob.clinic.id


def test_policy_invariants_of_the_permission_map() -> None:
    """Independent of the map itself: the rules a compliance officer expects."""
    from clinics.permissions import API_KEY_GRANTABLE

    admin_only = (
        "audit.view",
        "audit.export",
        "member.manage",
        "apikey.manage",
        "patient.export",
        "patient.erase",
        "monitoring.view",
    )
    for perm in admin_only:
        assert ROLE_PERMISSIONS[perm] == {Role.CLINIC_ADMIN}, perm
        assert perm not in API_KEY_GRANTABLE
    assert API_KEY_GRANTABLE <= {
        "patient.view",
        "patient.create",
        "patient.update",
        "image.upload",
        "image.view",
        "analysis.view",
        "report.view",
    }
    assert ROLE_PERMISSIONS["finding.review"] == {Role.DENTIST}


def test_views_cannot_opt_out_of_scoping() -> None:
    from clinics.api.base import ClinicAPIView
    from clinics.views_base import ClinicView

    with pytest.raises(TypeError, match="dispatch"):
        type("Sneaky", (ClinicView,), {"dispatch": lambda self, request: None})
    for name in ("dispatch", "initial", "perform_authentication"):
        with pytest.raises(TypeError, match=name):
            type("SneakyApi", (ClinicAPIView,), {name: lambda self, request: None, "__module__": "patients.api"})


def test_a_task_without_a_clinic_scope_fails(alice: World) -> None:
    """Background code must enter a clinic explicitly; forgetting it is an error, not a leak."""
    from patients.services import patient_create

    with pytest.raises(TenantScopeError):
        patient_create(external_id="t1", given_name="T", family_name="T", date_of_birth=dt.date(2000, 1, 1))
