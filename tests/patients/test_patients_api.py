from __future__ import annotations

from django.urls import reverse

from clinics.tenancy import clinic_scope
from patients.selectors import patient_get, patient_identity
from patients.services import patient_create

from ..conftest import World, key_client, token_client, user_client

NEW = {"external_id": "PMS-77", "given_name": "Ada", "family_name": "Lovelace", "date_of_birth": "1990-12-10"}


def test_create_read_update_patient(alice: World) -> None:
    client = key_client(alice)
    created = client.post(reverse("api:patient-list"), NEW, format="json")
    assert created.status_code == 201
    body = created.json()
    assert body["external_id"] == "PMS-77" and body["sex"] == "unknown"
    url = reverse("api:patient-detail", kwargs={"pk": body["id"]})
    assert client.get(url).json()["family_name"] == "Lovelace"
    patched = client.patch(url, {"family_name": "King", "sex": "female"}, format="json")
    assert patched.status_code == 200 and patched.json()["family_name"] == "King"
    with clinic_scope(alice.clinic.id):
        patient = patient_get(body["id"])
        assert patient.sex == "female" and patient_identity(patient).family_name == "King"


def test_validation_errors_use_the_error_shape(alice: World) -> None:
    client = token_client(alice, "staff")
    response = client.post(reverse("api:patient-list"), {**NEW, "date_of_birth": "2999-01-01"}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_date_of_birth"
    response = client.post(reverse("api:patient-list"), {"given_name": ""}, format="json")
    error = response.json()["error"]
    assert response.status_code == 400 and error["code"] == "validation_error"
    assert {"external_id", "given_name", "family_name", "date_of_birth"} <= set(error["details"])
    response = client.post(reverse("api:patient-list"), "{not json", content_type="application/json")
    assert response.status_code == 400 and response.json()["error"]["code"] == "parse_error"


def test_duplicate_external_id_is_409_and_other_clinics_may_reuse_it(alice: World, bob: World) -> None:
    response = token_client(alice, "staff").post(
        reverse("api:patient-list"), {**NEW, "external_id": "alice-0001"}, format="json"
    )
    assert response.status_code == 409 and response.json()["error"]["code"] == "duplicate_external_id"
    response = token_client(bob, "staff").post(
        reverse("api:patient-list"), {**NEW, "external_id": "alice-0001"}, format="json"
    )
    assert response.status_code == 201


def test_list_is_paginated_and_searchable(alice: World, bob: World) -> None:
    import datetime as dt

    with clinic_scope(alice.clinic.id):
        for i in range(7):
            patient_create(
                external_id=f"P{i}", given_name="G", family_name=f"Fam{i}", date_of_birth=dt.date(2000, 1, 1)
            )
    client = token_client(alice, "dentist")
    page = client.get(reverse("api:patient-list"), {"page_size": 3}).json()
    assert page["count"] == 8 and len(page["results"]) == 3 and page["next"]
    ids = {p["id"] for p in page["results"]}
    while page["next"]:
        page = client.get(page["next"]).json()
        ids |= {p["id"] for p in page["results"]}
    assert len(ids) == 8 and str(bob.patient.pk) not in ids
    found = client.post(reverse("api:patient-search"), {"query": "fam3"}, format="json").json()
    assert [p["external_id"] for p in found["results"]] == ["P3"]


def test_html_patient_pages(alice: World) -> None:
    client = user_client(alice.users["staff"])
    response = client.post(reverse("patients:list"), {**NEW, "sex": "female"})
    assert response.status_code == 302
    detail = client.get(response["Location"])
    assert detail.status_code == 200 and b"Lovelace" in detail.content
    assert detail["Cache-Control"] == "no-store"
    searched = client.post(reverse("patients:list"), {"action": "search", "q": "Lovelace"})
    assert searched.status_code == 302 and "Lovelace" not in searched["Location"]  # never in a URL
    listing = client.get(searched["Location"])
    assert b"PMS-77" in listing.content and b"alice-0001" not in listing.content
    bad = client.post(reverse("patients:list"), {**NEW, "external_id": "PMS-77", "sex": "female"})
    assert bad.status_code == 400 and b"already exists" in bad.content
