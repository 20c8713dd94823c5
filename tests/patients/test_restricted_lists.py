"""Restricted records in lists and search (issue 24): to staff and API keys, who may not open them, a restricted
patient shows as "restricted record" with its practice id only, never a name, date of birth or sex; a name search
does not find it (the practice id does); the OpenAPI document says so, and its examples carry no such data."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from clinics.tenancy import clinic_scope
from patients.models import Patient

from ..conftest import World, key_client, token_client, user_client

BIRTH_DATE = "1980-05-17"  # the fixture patient's


@pytest.fixture
def restricted(alice: World) -> World:
    with clinic_scope(alice.clinic.id):
        Patient.objects.filter(pk=alice.patient.pk).update(restricted=True)
    return alice


def _principals(world: World) -> dict[str, Any]:
    return {"staff": token_client(world, "staff"), "api_key": key_client(world)}


def _no_identity(content: bytes, world: World) -> None:
    for secret in (world.patient_name, "Marker", BIRTH_DATE):
        assert secret.encode() not in content, secret


@pytest.mark.parametrize("principal", ["staff", "api_key"])
def test_lists_show_a_restricted_record_with_its_practice_id_only(principal: str, restricted: World) -> None:
    response = _principals(restricted)[principal].get(reverse("api:patient-list"))
    assert response.status_code == 200
    row = next(r for r in response.json()["results"] if r["id"] == str(restricted.patient.pk))
    assert row["restricted"] is True and row["external_id"] == "alice-0001"
    assert row["given_name"] is row["family_name"] is row["date_of_birth"] is row["sex"] is None
    _no_identity(response.content, restricted)


@pytest.mark.parametrize("principal", ["staff", "api_key"])
def test_search_finds_a_restricted_record_by_practice_id_only(principal: str, restricted: World) -> None:
    client = _principals(restricted)[principal]
    search = reverse("api:patient-search")
    by_name = client.post(search, {"query": restricted.patient_name}, format="json")
    assert by_name.status_code == 200 and by_name.json()["count"] == 0  # a name search confirms nothing
    by_id = client.post(search, {"query": "alice-0001"}, format="json")
    assert by_id.json()["count"] == 1 and by_id.json()["results"][0]["restricted"] is True
    _no_identity(by_id.content, restricted)


def test_dentists_and_admins_see_the_whole_record_in_lists(restricted: World) -> None:
    for role in ("dentist", "clinic_admin"):
        api = token_client(restricted, role)
        row = api.get(reverse("api:patient-list")).json()["results"][0]
        assert row["family_name"] == restricted.patient_name and row["restricted"] is True
        found = api.post(reverse("api:patient-search"), {"query": restricted.patient_name}, format="json")
        assert found.json()["count"] == 1


def test_the_patients_page_shows_staff_a_restricted_record_without_identity(restricted: World) -> None:
    staff = user_client(restricted.users["staff"])
    page = staff.get(reverse("patients:list"))
    assert page.status_code == 200 and b'data-testid="restricted-record"' in page.content
    assert b"alice-0001" in page.content
    _no_identity(page.content, restricted)
    staff.post(reverse("patients:list"), {"action": "search", "q": restricted.patient_name})
    searched = staff.get(reverse("patients:list")).content
    assert b"No patients match" in searched and b"alice-0001" not in searched  # the name finds nothing
    dentist_page = user_client(restricted.users["dentist"]).get(reverse("patients:list")).content
    assert restricted.patient_name.encode() in dentist_page


def test_the_schema_says_so_and_its_examples_hold_no_restricted_identity() -> None:
    schema = json.loads(Client().get(reverse("api:schema")).content)
    patient = schema["components"]["schemas"]["PatientOutput"]["properties"]
    for name in ("given_name", "family_name", "date_of_birth", "sex"):
        assert patient[name].get("nullable") is True and "restricted" in patient[name]["description"], name
    examples = []
    for path in ("/api/v1/patients/", "/api/v1/patients/search/"):
        for operation in schema["paths"][path].values():
            content = operation.get("responses", {}).get("200", {}).get("content", {})
            for media in content.values():
                examples += [e["value"] for e in media.get("examples", {}).values()]
    rows = [r for e in examples for r in e["results"]]
    restricted_rows = [r for r in rows if r["restricted"]]
    assert restricted_rows, "an example shows a restricted record"
    for row in restricted_rows:
        assert row["given_name"] is row["family_name"] is row["date_of_birth"] is row["sex"] is None
