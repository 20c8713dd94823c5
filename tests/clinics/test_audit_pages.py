from __future__ import annotations

import csv
import io
import json

import pytest
from django.urls import reverse

from clinics.models import AuditEvent

from ..conftest import World, seal_committed, token_client, user_client


def _body(response) -> bytes:  # noqa: ANN001
    return b"".join(response.streaming_content) if response.streaming else response.content


def test_audit_page_lists_and_filters_the_clinics_events(alice: World, bob: World) -> None:
    staff = user_client(alice.users["staff"])
    staff.get(reverse("patients:detail", kwargs={"pk": alice.patient.pk}))
    assert staff.get(reverse("clinics:audit")).status_code == 403
    admin = user_client(alice.users["clinic_admin"])
    page = admin.get(reverse("clinics:audit"), {"action": "patient.view"}).content.decode()
    assert "patient.view" in page and "staff@alice.test" in page and "member.add" not in page
    assert "permission.denied" in admin.get(reverse("clinics:audit"), {"actor": "staff@alice.test"}).content.decode()
    assert "bob" not in admin.get(reverse("clinics:audit")).content.decode()


def test_html_export_downloads_csv_and_json(alice: World) -> None:
    admin = user_client(alice.users["clinic_admin"])
    response = admin.get(reverse("clinics:audit-export"), {"format": "csv", "action": "member"})
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"] and response["Cache-Control"] == "no-store"
    rows = list(csv.DictReader(io.StringIO(_body(response).decode())))
    assert rows and {r["action"] for r in rows} == {"member.add"}
    assert len(rows) == 3
    data = json.loads(_body(admin.get(reverse("clinics:audit-export"), {"format": "json"})))
    order = [(not e["sealed"], e["seq"] or 0) for e in data]
    assert order == sorted(order)  # chain order, the unsealed events last
    assert AuditEvent.unscoped.filter(action="audit.export", clinic=alice.clinic).count() == 2


def test_api_lists_filters_and_exports_the_trail(alice: World, bob: World) -> None:
    client = token_client(alice, "clinic_admin")
    listing = client.get(reverse("api:audit-event-list"), {"action": "member.add"})
    assert listing.status_code == 200
    body = listing.json()
    assert {"results", "next", "count"} <= set(body) and body["count"] == 3
    assert all(e["chain"] == str(alice.clinic.id) for e in body["results"])
    since = AuditEvent.unscoped.filter(clinic=alice.clinic).order_by("id")[4].created_at
    newer = client.get(reverse("api:audit-event-list"), {"since": since.isoformat()}).json()
    assert all(e["created_at"] >= since.isoformat()[:19] for e in newer["results"])
    bad = client.get(reverse("api:audit-event-list"), {"since": "yesterday"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "validation_error"
    export = client.get(reverse("api:audit-event-export"), {"format": "csv"})
    assert export.status_code == 200 and export["Content-Type"].startswith("text/csv")
    text = _body(export).decode()
    assert "member.add" in text and str(bob.clinic.id) not in text
    export = client.get(reverse("api:audit-event-export"), {"format": "json", "actor": "clinic_admin@alice.test"})
    events = json.loads(_body(export))
    assert events and all(e["actor"] == "clinic_admin@alice.test" for e in events)
    assert client.get(reverse("api:audit-event-export"), {"format": "xml"}).status_code == 400
    assert token_client(alice, "dentist").get(reverse("api:audit-event-export")).status_code == 403


def test_no_patient_names_in_the_audit_trail(alice: World) -> None:
    client = token_client(alice, "staff")
    pid = alice.patient.pk
    client.patch(reverse("api:patient-detail", kwargs={"pk": pid}), {"family_name": "Renamedmarker"}, format="json")
    client.post(reverse("api:patient-search"), {"query": "Alicesonmarker"}, format="json")
    dump = json.dumps(list(AuditEvent.unscoped.values()), default=str)
    for name in ("Alicesonmarker", "Renamedmarker", "Marker"):
        assert name not in dump
    update = AuditEvent.unscoped.filter(action="patient.update").latest("id")
    assert update.details == {"fields": ["family_name"]} and update.object_id == str(pid)


def test_reading_the_trail_is_itself_audited_with_its_filters(alice: World) -> None:
    admin = user_client(alice.users["clinic_admin"])
    first = admin.get(reverse("clinics:audit")).content.decode()
    assert "member.add" in first and "audit.view" not in first  # the trail as it was before this read
    assert "audit.view" in admin.get(reverse("clinics:audit")).content.decode()  # the next read shows it
    admin.get(reverse("clinics:audit"), {"action": "member", "actor": "someone typed this"})
    seen = AuditEvent.unscoped.filter(action="audit.view", clinic=alice.clinic).latest("id")
    assert seen.actor_user == alice.users["clinic_admin"] and seen.object_type == "audit_trail" and seen.ip
    # which filters, not what was typed into them (free text stays out of the append-only trail)
    assert seen.details == {"filtered_by": ["action", "actor"], "page": 1, "events": 0}

    client = token_client(alice, "clinic_admin")
    body = client.get(reverse("api:audit-event-list"), {"action": "member.add", "page_size": 2}).json()
    assert len(body["results"]) == 2
    api_read = AuditEvent.unscoped.filter(action="audit.view", clinic=alice.clinic).order_by("-id").first()
    assert api_read.details == {"filtered_by": ["action"], "page": 1, "events": 2}
    assert AuditEvent.unscoped.filter(action="audit.view", clinic=alice.clinic).count() == 4
    # a member who may not read the trail leaves a denial, not a read
    user_client(alice.users["staff"]).get(reverse("clinics:audit"))
    assert AuditEvent.unscoped.filter(action="audit.view", clinic=alice.clinic).count() == 4


@pytest.mark.django_db(transaction=True)
def test_unsealed_events_are_listed_marked_and_exported_last(no_seal_on_commit: None, alice: World) -> None:
    seal_committed()
    admin = user_client(alice.users["clinic_admin"])
    assert "<em" not in admin.get(reverse("clinics:audit")).content.decode().split("<tbody>")[-1]  # all sealed
    page = admin.get(reverse("clinics:audit")).content.decode()  # shows the first read, not sealed yet
    rows = page.split("<tbody>")[-1].split("<tr")[1:]
    assert "unsealed" in rows[0] and "audit.view" in rows[0]  # newest first
    assert all("unsealed" not in row for row in rows[2:])
    data = json.loads(_body(admin.get(reverse("clinics:audit-export"), {"format": "json"})))
    unsealed = [e for e in data if not e["sealed"]]
    assert len(unsealed) == 3 and data[-3:] == unsealed  # the two reads and this export, last
    assert all(e["seq"] is None and e["prev_hash"] is None and e["hash"] is None for e in unsealed)
    sealed_seqs = [e["seq"] for e in data[:-3]]
    assert sealed_seqs == sorted(sealed_seqs) and all(e["sealed"] for e in data[:-3])
    csv_rows = list(
        csv.DictReader(io.StringIO(_body(admin.get(reverse("clinics:audit-export"), {"format": "csv"})).decode()))
    )
    assert [r["sealed"] for r in csv_rows[-5:]] == ["True"] + ["False"] * 4 and csv_rows[-1]["seq"] == ""
    listing = token_client(alice, "clinic_admin").get(reverse("api:audit-event-list")).json()["results"]
    assert not listing[0]["sealed"] and listing[0]["seq"] is None and listing[-1]["sealed"]
    seal_committed()
    data = json.loads(_body(admin.get(reverse("clinics:audit-export"), {"format": "json"})))
    assert [e["seq"] for e in data[:-1]] == list(range(1, len(data))) and not data[-1]["sealed"]
