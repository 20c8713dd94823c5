"""Cursor (keyset) pages: the same rows in the same order as numbered pages, ties on created_at included."""

from __future__ import annotations

import datetime as dt

from django.urls import reverse

from clinics.tenancy import clinic_scope
from patients.models import Patient
from patients.services import patient_create

from ..conftest import World, key_client, token_client


def _walk(client, url: str, params: dict) -> tuple[list[str], list[dict]]:  # noqa: ANN001
    pages = [client.get(url, params).json()]
    while pages[-1]["next"]:
        assert len(pages) < 20
        pages.append(client.get(pages[-1]["next"]).json())
    return [row["id"] for page in pages for row in page["results"]], pages


def test_cursor_pages_list_every_patient_once_in_the_numbered_order(alice: World, bob: World) -> None:
    with clinic_scope(alice.clinic.id):
        for i in range(7):
            patient_create(external_id=f"C{i}", given_name="G", family_name=f"F{i}", date_of_birth=dt.date(2000, 1, 1))
        # four patients created in the same microsecond: the id breaks the tie, across a page boundary
        same = Patient.objects.order_by("created_at")[1].created_at
        for patient in Patient.objects.order_by("created_at")[:4]:
            Patient.objects.filter(pk=patient.pk).update(created_at=same)
    client, url = token_client(alice, "dentist"), reverse("api:patient-list")
    numbered, _ = _walk(client, url, {"page_size": 3})
    by_cursor, pages = _walk(client, url, {"page_size": 3, "cursor": ""})
    assert len(numbered) == 8 and str(bob.patient.pk) not in numbered
    assert by_cursor == numbered
    assert all(page["count"] is None and page["previous"] is None for page in pages)
    assert "cursor=" in pages[0]["next"] and "page=" not in pages[0]["next"]


def test_the_analyses_list_pages_by_cursor_too(alice: World) -> None:
    client, url = key_client(alice), reverse("api:analysis-list")
    ids, pages = _walk(client, url, {"cursor": ""})
    assert ids == [str(alice.analysis.pk)] and pages[0]["next"] is None


def test_a_forged_cursor_is_refused_in_the_error_shape(alice: World) -> None:
    client, url = key_client(alice), reverse("api:patient-list")
    for cursor in ("nonsense", "W10", "WyJ4IiwieSJd"):  # not base64 JSON; []; ["x","y"]
        response = client.get(url, {"cursor": cursor})
        assert response.status_code == 400, cursor
        assert response.json()["error"]["code"] == "invalid_cursor"


def test_lists_without_a_keyset_do_not_accept_a_cursor(alice: World) -> None:
    response = key_client(alice).get(reverse("api:visit-list"), {"cursor": ""})
    assert response.status_code == 400 and response.json()["error"]["code"] == "unknown_parameter"
