"""``GET /api/v1/visits/``: the clinic's visits with their report state; filters, pagination, tenancy,
restricted records, the audit trail and the number of queries."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from analysis.models import Amendment, Report
from clinics.models import AuditEvent
from clinics.tenancy import clinic_scope
from patients.models import Image, Patient, Visit
from patients.services import patient_create

from ..conftest import World, key_client, token_client

URL = "/api/v1/visits/"
DAY = dt.date(2026, 3, 10)


def _visit(world: World, patient: Patient, day: dt.date, *, images: int = 0) -> Visit:
    with clinic_scope(world.clinic.id):
        visit = Visit.objects.create(patient=patient, visit_date=day)
        template = world.image
        for _ in range(images):
            fields = {f.attname: getattr(template, f.attname) for f in Image._meta.concrete_fields}
            fields.update(id=uuid.uuid4(), visit_id=visit.pk, patient_id=patient.pk)
            Image.objects.create(**fields)
        return visit


def _sign(world: World, visit: Visit, version: int = 1, *, at: dt.datetime | None = None) -> Report:
    with clinic_scope(world.clinic.id):
        previous = Report.objects.filter(visit=visit, version=version - 1).first()
        return Report.objects.create(
            visit=visit,
            version=version,
            content=b"",
            signed_by=world.users["dentist"],
            signed_at=at or timezone.now(),
            amends=previous,
        )


def _ids(response) -> list[str]:  # noqa: ANN001
    assert response.status_code == 200, response.content[:300]
    return [v["id"] for v in response.json()["results"]]


@pytest.fixture
def visits(alice: World) -> dict[str, Visit]:
    """alice's fixture visit (today, one image, not signed) and three more: signed once, signed twice with an
    amendment open on top, and an empty one."""
    patient = alice.patient
    with clinic_scope(alice.clinic.id):
        other = patient_create(
            external_id="alice-0002", given_name="Other", family_name="Person", date_of_birth=dt.date(1970, 1, 1)
        )
    signed = _visit(alice, patient, DAY, images=2)
    _sign(alice, signed, at=timezone.make_aware(dt.datetime(2026, 3, 11, 9, 30)))
    amended = _visit(alice, other, DAY + dt.timedelta(days=5), images=1)
    _sign(alice, amended, 1)
    second = _sign(alice, amended, 2)
    with clinic_scope(alice.clinic.id):
        Amendment.objects.create(visit=amended, reason="tooth number", opened_by=alice.users["dentist"])
    empty = _visit(alice, other, DAY - dt.timedelta(days=30))
    with clinic_scope(alice.clinic.id):
        fixture = Visit.objects.get(pk=alice.image.visit_id)
    return {"fixture": fixture, "signed": signed, "amended": amended, "empty": empty, "second": second}


def test_items_carry_the_visit_and_its_report_state(alice: World, visits: dict) -> None:
    response = key_client(alice).get(URL)
    body = response.json()
    assert response.status_code == 200 and body["count"] == 4
    by_id = {v["id"]: v for v in body["results"]}
    # newest first
    assert list(by_id) == [str(visits[k].pk) for k in ("fixture", "amended", "signed", "empty")]
    signed = by_id[str(visits["signed"].pk)]
    assert signed == {
        "id": str(visits["signed"].pk),
        "patient": str(alice.patient.pk),
        "date": "2026-03-10",
        "created_at": signed["created_at"],
        "image_count": 2,
        "signed": True,
        "report_version": 1,
        "signed_at": "2026-03-11T09:30:00Z",
        "amending": False,
    }
    amended = by_id[str(visits["amended"].pk)]
    assert (amended["signed"], amended["report_version"], amended["amending"], amended["image_count"]) == (
        True,
        2,
        True,
        1,
    )
    assert amended["signed_at"].replace("Z", "+00:00") == visits["second"].signed_at.isoformat()
    fixture = by_id[str(visits["fixture"].pk)]
    assert (fixture["signed"], fixture["report_version"], fixture["signed_at"], fixture["image_count"]) == (
        False,
        None,
        None,
        1,
    )
    assert by_id[str(visits["empty"].pk)]["image_count"] == 0


def test_filters(alice: World, visits: dict) -> None:
    client = token_client(alice, "staff")
    v = {k: str(visit.pk) for k, visit in visits.items() if isinstance(visit, Visit)}
    assert _ids(client.get(URL, {"patient": str(alice.patient.pk)})) == [v["fixture"], v["signed"]]
    assert _ids(client.get(URL, {"signed": "true"})) == [v["amended"], v["signed"]]
    assert _ids(client.get(URL, {"signed": "false"})) == [v["fixture"], v["empty"]]
    # since is included, until is not (as the audit trail's filters)
    assert _ids(client.get(URL, {"since": "2026-03-10", "until": "2026-03-15"})) == [v["signed"]]
    assert _ids(client.get(URL, {"since": "2026-03-10", "until": "2026-03-16"})) == [v["amended"], v["signed"]]
    assert _ids(client.get(URL, {"until": "2026-03-10"})) == [v["empty"]]
    assert _ids(client.get(URL, {"date": "2026-03-15"})) == [v["amended"]]
    assert _ids(client.get(URL, {"date": "2026-03-14"})) == []
    combined = client.get(URL, {"patient": str(alice.patient.pk), "signed": "false", "until": "2026-03-11"})
    assert _ids(combined) == []
    for bad in ({"since": "yesterday"}, {"signed": "maybe"}, {"patient": "alice-0001"}, {"date": "today"}):
        response = client.get(URL, bad)
        assert response.status_code == 400 and response.json()["error"]["code"] == "validation_error", bad
        assert list(response.json()["error"]["details"]) == list(bad)
    unknown = client.get(URL, {"date_from": "2026-03-10"})
    assert unknown.status_code == 400 and unknown.json()["error"]["details"]["unknown"] == ["date_from"]


def test_pagination(alice: World, visits: dict) -> None:
    client = key_client(alice)
    first = client.get(URL, {"page_size": 3}).json()
    assert first["count"] == 4 and len(first["results"]) == 3 and first["next"]
    second = client.get(first["next"]).json()
    assert len(second["results"]) == 1 and second["next"] is None
    assert {r["id"] for r in first["results"] + second["results"]} == {
        str(v.pk) for v in visits.values() if isinstance(v, Visit)
    }
    assert client.get(URL, {"page": 9}).status_code == 404


def test_other_clinics_visits_are_invisible(alice: World, bob: World, visits: dict) -> None:
    bobs = _ids(key_client(bob).get(URL))
    with clinic_scope(bob.clinic.id):
        assert bobs == [str(bob.image.visit_id)]
    assert _ids(key_client(bob).get(URL, {"patient": str(alice.patient.pk)})) == []
    assert str(bob.image.visit_id) not in _ids(key_client(alice).get(URL))


def test_restricted_patients_visits_only_for_dentists_and_admins(alice: World, visits: dict) -> None:
    Patient.unscoped.filter(pk=alice.patient.pk).update(restricted=True)
    hidden = {str(visits["fixture"].pk), str(visits["signed"].pk)}
    for who, client in (("staff", token_client(alice, "staff")), ("api key", key_client(alice))):
        shown = _ids(client.get(URL))
        assert not hidden & set(shown) and len(shown) == 2, who
        assert _ids(client.get(URL, {"patient": str(alice.patient.pk)})) == [], who
    for role in ("dentist", "clinic_admin"):
        assert hidden <= set(_ids(token_client(alice, role).get(URL))), role


def test_the_read_is_audited_with_the_ids_shown_and_the_filter_names(alice: World, visits: dict) -> None:
    shown = _ids(token_client(alice, "staff").get(URL, {"signed": "true", "page_size": 1}))
    event = AuditEvent.unscoped.filter(action="visit.list").get()
    assert event.details == {"ids": shown, "filtered_by": ["signed"]}
    assert event.actor_user_id == alice.users["staff"].pk and event.clinic_id == alice.clinic.id
    # a lookup of one patient names that patient's id, even when nothing is found
    token_client(alice, "staff").get(URL, {"patient": str(alice.patient.pk), "since": "2099-01-01"})
    looked_up = AuditEvent.unscoped.filter(action="visit.list").order_by("-id").first()
    assert looked_up.details["patient_id"] == str(alice.patient.pk) and looked_up.details["ids"] == []


def _queries(client, page_size: int) -> int:  # noqa: ANN001
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(URL, {"page_size": page_size})
    assert response.status_code == 200 and len(response.json()["results"]) == page_size
    return len(ctx.captured_queries)


def test_queries_do_not_grow_with_page_size(alice: World) -> None:
    for i in range(30):
        visit = _visit(alice, alice.patient, DAY - dt.timedelta(days=i), images=2)
        if i % 2:
            _sign(alice, visit)
    client = key_client(alice)
    _queries(client, 5)  # per-process caches
    small, large = _queries(client, 5), _queries(client, 30)
    assert large == small, f"{small} queries for 5 visits, {large} for 30 (N+1)"
