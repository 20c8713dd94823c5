"""Tooth numbers, surfaces and notes on findings, undoing a decision, the visit note, the clinic's notation,
and concurrent reviewers (ETag / If-Match, 412 naming who changed what)."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from analysis.models import AnalysisSettings, Finding, FindingDecision, VisitNote
from clinics import services
from clinics.models import AuditEvent, Role
from clinics.tenancy import clinic_scope

from ..conftest import PASSWORD, World, token_client, user_client

pytestmark = pytest.mark.django_db


def _detail(world: World) -> str:
    return reverse("api:finding-detail", kwargs={"pk": world.finding.pk})


def _review(world: World) -> str:
    return reverse("api:finding-review", kwargs={"pk": world.finding.pk})


def _events(world: World, action: str) -> list[AuditEvent]:
    return list(AuditEvent.unscoped.filter(clinic=world.clinic, action=action).order_by("id"))


def _second_dentist(world: World) -> Any:
    with clinic_scope(world.clinic.id):
        member = services.member_add(email="second-dentist@alice.test", role=Role.DENTIST, password=PASSWORD)
    world.users["dentist2"] = member.user
    return token_client(world, "dentist2")


def _notation(world: World, notation: str) -> None:
    with clinic_scope(world.clinic.id):
        AnalysisSettings.objects.update_or_create(defaults={"tooth_notation": notation})


def test_assign_a_tooth_without_deciding(alice: World) -> None:
    api = token_client(alice, "dentist")
    first = api.get(_detail(alice))
    assert first.status_code == 200 and first["ETag"] == '"1"'
    assert first.json()["tooth"] is None and first.json()["version"] == 1
    response = api.patch(_detail(alice), {"tooth": "16", "surfaces": "dom"}, format="json", HTTP_IF_MATCH='"1"')
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["tooth"] == "16" and body["tooth_display"] == "16" and body["surfaces"] == "MOD"
    assert body["status"] == "pending" and body["version"] == 2 and response["ETag"] == '"2"'
    with clinic_scope(alice.clinic.id):
        finding = Finding.objects.get(pk=alice.finding.pk)
        decision = FindingDecision.objects.get(finding=finding)
    assert (finding.tooth, finding.surfaces, finding.version) == ("16", "MOD", 2)
    assert decision.decision == "edit" and decision.before["tooth"] == "" and decision.after["tooth"] == "16"
    event = _events(alice, "finding.edit")[-1]
    assert event.details["changed"] == ["surfaces", "tooth"] and event.details["tooth"] == "16"
    # clearing
    cleared = api.patch(_detail(alice), {"tooth": ""}, format="json").json()
    assert cleared["tooth"] is None and cleared["surfaces"] == "" and cleared["version"] == 3


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"tooth": "19"}, "invalid_tooth"),
        ({"tooth": "3"}, "invalid_tooth"),  # Universal 3 is not accepted: the API speaks FDI
        ({"tooth": "111"}, "validation_error"),
        ({"tooth": "11", "surfaces": "O"}, "invalid_surfaces"),  # an incisor has no occlusal surface
        ({"tooth": "36", "surfaces": "MX"}, "invalid_surfaces"),
        ({}, "nothing_to_change"),
    ],
)
def test_invalid_teeth_are_refused(alice: World, body: dict[str, Any], code: str) -> None:
    response = token_client(alice, "dentist").patch(_detail(alice), body, format="json")
    assert response.status_code == 400 and response.json()["error"]["code"] == code
    with clinic_scope(alice.clinic.id):
        assert Finding.objects.get(pk=alice.finding.pk).version == 1


def test_the_clinic_notation_is_shown_but_fdi_is_stored(alice: World) -> None:
    api = token_client(alice, "dentist")
    for notation, shown in (("universal", "3"), ("palmer", "UR6"), ("fdi", "16")):
        _notation(alice, notation)
        body = api.patch(_detail(alice), {"tooth": "16"}, format="json").json()
        assert body["tooth"] == "16" and body["tooth_display"] == shown
        analysis = api.get(reverse("api:analysis-detail", kwargs={"pk": alice.analysis.pk})).json()
        assert analysis["findings"][0]["tooth_display"] == shown


def test_a_decision_carries_a_tooth_and_can_be_undone(alice: World) -> None:
    api = token_client(alice, "dentist")
    confirmed = api.post(_review(alice), {"decision": "confirm", "tooth": "46", "note": "check"}, format="json")
    assert confirmed.status_code == 200, confirmed.content
    assert confirmed.json()["status"] == "confirmed" and confirmed.json()["tooth"] == "46"
    assert confirmed.json()["note"] == "check"
    undone = api.post(_review(alice), {"decision": "undo"}, format="json", HTTP_IF_MATCH=confirmed["ETag"])
    assert undone.status_code == 200, undone.content
    body = undone.json()
    assert body["status"] == "pending" and body["reviewed_by"] is None and body["tooth"] == "46"
    assert _events(alice, "finding.undo")[-1].details["changed"] == ["status"]
    again = api.post(_review(alice), {"decision": "undo"}, format="json")
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_pending"


def test_an_added_finding_is_not_undone(alice: World) -> None:
    api = token_client(alice, "dentist")
    added = api.post(
        reverse("api:image-finding-add", kwargs={"pk": alice.image.pk}),
        {"condition": "ulcer", "box": [0.5, 0.5, 0.1, 0.1], "tooth": "21"},
        format="json",
    )
    assert added.status_code == 201 and added.json()["tooth"] == "21"
    review = reverse("api:finding-review", kwargs={"pk": added.json()["id"]})
    response = api.post(review, {"decision": "undo"}, format="json")
    assert response.status_code == 409 and response.json()["error"]["code"] == "not_a_suggestion"


def test_a_signed_visit_refuses_edits(alice: World) -> None:
    api = token_client(alice, "dentist")
    assert api.post(_review(alice), {"decision": "confirm"}, format="json").status_code == 200
    assert api.post(reverse("api:visit-report", kwargs={"pk": alice.image.visit_id})).status_code == 201
    for call in (
        lambda: api.patch(_detail(alice), {"tooth": "11"}, format="json"),
        lambda: api.post(_review(alice), {"decision": "undo"}, format="json"),
        lambda: api.put(reverse("api:visit-note", kwargs={"pk": alice.image.visit_id}), {"text": "x"}, format="json"),
    ):
        response = call()
        assert response.status_code == 409 and response.json()["error"]["code"] == "report_signed"


def test_staff_and_api_keys_cannot_edit(alice: World) -> None:
    assert token_client(alice, "staff").patch(_detail(alice), {"tooth": "11"}, format="json").status_code == 403


# --- concurrent reviewers ---------------------------------------------------------------------------------------


def test_two_reviewers_edit_the_same_finding_the_second_gets_a_conflict(alice: World) -> None:
    first, second = token_client(alice, "dentist"), _second_dentist(alice)
    etag_first = first.get(_detail(alice))["ETag"]
    etag_second = second.get(_detail(alice))["ETag"]
    assert etag_first == etag_second == '"1"'
    saved = first.patch(_detail(alice), {"tooth": "16"}, format="json", HTTP_IF_MATCH=etag_first)
    assert saved.status_code == 200
    stale = second.post(
        _review(alice), {"decision": "reject", "reason": "not_present"}, format="json", HTTP_IF_MATCH=etag_second
    )
    assert stale.status_code == 412, stale.content
    error = stale.json()["error"]
    assert error["code"] == "version_conflict"
    assert alice.users["dentist"].email in error["message"] and "tooth" in error["message"]
    assert error["details"]["changed_by"] == alice.users["dentist"].email and error["details"]["changed"] == ["tooth"]
    assert error["details"]["current_version"] == 2 and error["details"]["your_version"] == 1
    # nothing lost: the first reviewer's tooth is there, the second's rejection was not applied
    with clinic_scope(alice.clinic.id):
        finding = Finding.objects.get(pk=alice.finding.pk)
    assert (finding.tooth, finding.status, finding.version) == ("16", "pending", 2)
    # the second reviewer, having seen it, decides on the current version: both changes are kept
    fresh = second.get(_detail(alice))
    retried = second.post(
        _review(alice), {"decision": "reject", "reason": "not_present"}, format="json", HTTP_IF_MATCH=fresh["ETag"]
    )
    assert retried.status_code == 200 and retried.json()["tooth"] == "16" and retried.json()["status"] == "rejected"


def test_a_malformed_if_match_is_refused(alice: World) -> None:
    response = token_client(alice, "dentist").patch(_detail(alice), {"tooth": "11"}, format="json", HTTP_IF_MATCH="v1")
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_if_match"


def test_the_visit_note_is_versioned(alice: World) -> None:
    first, second = token_client(alice, "dentist"), _second_dentist(alice)
    url = reverse("api:visit-note", kwargs={"pk": alice.image.visit_id})
    empty = first.get(url)
    assert empty.status_code == 200 and empty.json()["text"] == "" and empty["ETag"] == '"0"'
    written = first.put(url, {"text": "Recall in 6 months"}, format="json", HTTP_IF_MATCH='"0"')
    assert written.status_code == 200 and written.json()["version"] == 1
    assert written.json()["updated_by"] == alice.users["dentist"].email
    stale = second.put(url, {"text": "Mine"}, format="json", HTTP_IF_MATCH='"0"')
    assert stale.status_code == 412 and alice.users["dentist"].email in stale.json()["error"]["message"]
    with clinic_scope(alice.clinic.id):
        assert VisitNote.objects.get(visit_id=alice.image.visit_id).text == "Recall in 6 months"
    assert _events(alice, "visit.note")[-1].details == {"version": 1, "length": 18}


def test_review_settings_page_changes_the_notation(alice: World) -> None:
    admin = user_client(alice.users["clinic_admin"])
    url = reverse("analysis:review-settings")
    assert b"Universal" in admin.get(url).content
    response = admin.post(url, {"tooth_notation": "universal"})
    assert response.status_code == 302
    with clinic_scope(alice.clinic.id):
        assert AnalysisSettings.objects.get().tooth_notation == "universal"
    assert _events(alice, "analysis.settings.change")[-1].details == {
        "tooth_notation": {"before": "fdi", "after": "universal"}
    }
    assert admin.post(url, {"tooth_notation": "haderup"}).status_code == 400
    assert user_client(alice.users["dentist"]).post(url, {"tooth_notation": "fdi"}).status_code == 403
