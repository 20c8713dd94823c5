"""The review screen, the thresholds page and the agreement page (HTML views)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.urls import reverse

from analysis.models import ConditionThreshold, Finding, ModelVersion, Report
from analysis.reports import amendment_open
from analysis.views_review import FINDING_PLACEHOLDER
from clinics.models import AuditEvent
from clinics.tenancy import clinic_scope

from ..conftest import World, fixture_model_version, user_client


def _review(world: World, role: str) -> Any:
    return user_client(world.users[role]).get(reverse("analysis:review", kwargs={"pk": world.image.visit_id}))


def _blob(response: Any) -> dict[str, Any]:
    match = re.search(rb'<script id="review-data" type="application/json">(.*?)</script>', response.content, re.S)
    assert match, "the review page embeds its data as a JSON script element"
    return json.loads(match.group(1))


def _finding(data: dict[str, Any], finding_id: object) -> dict[str, Any]:
    return next(f for image in data["images"] for f in image["findings"] if f["id"] == str(finding_id))


def test_dentist_sees_controls_and_the_findings(alice: World) -> None:
    response = _review(alice, "dentist")
    assert response.status_code == 200
    data = _blob(response)
    assert data["can_review"] is True and data["can_sign"] is True
    assert data["visit"]["id"] == str(alice.image.visit_id)
    assert data["locked"] is False and data["report"] is None
    image = data["images"][0]
    assert image["id"] == str(alice.image.pk) and image["modality"] == "photo"
    assert image["preview_url"].endswith("?variant=preview")
    assert image["analyses"][0]["status"] == "done"
    finding = _finding(data, alice.finding.pk)
    assert finding["condition"] == "caries" and finding["probability"] == 0.91
    assert finding["box"] == [0.1, 0.2, 0.3, 0.25]
    assert finding["status"] == "pending" and finding["source"] == "model"
    assert data["thresholds"]["photo"]["caries"] == 0.3
    assert data["conditions"]["photo"] == ["caries", "gingivitis", "calculus", "ulcer"]
    assert ["not_present", "Not present"] in data["reject_reasons"]
    assert data["urls"]["report"] == reverse("api:visit-report", kwargs={"pk": alice.image.visit_id})
    assert data["urls"]["analyses"].startswith(reverse("api:analysis-list") + f"?visit={alice.image.visit_id}")
    html = response.content.decode()
    assert 'data-action="confirm"' in html and ">Confirm</button>" in html
    assert 'id="sign-button"' in html
    assert "Alicesonmarker" in html and "alice-0001" in html
    assert "js/review.js" in html and "<script>" not in html  # no inline script (CSP)


def test_clinic_threshold_hides_low_suggestions_from_the_blob(alice: World) -> None:
    with clinic_scope(alice.clinic.id):
        low = Finding.objects.create(
            analysis=alice.analysis, image=alice.image, condition="ulcer", probability=0.2, box=[0.5, 0.5, 0.1, 0.1]
        )
    data = _blob(_review(alice, "dentist"))
    ids = {f["id"] for image in data["images"] for f in image["findings"]}
    assert str(alice.finding.pk) in ids and str(low.pk) not in ids


def test_staff_sees_the_page_read_only(alice: World) -> None:
    response = _review(alice, "staff")
    assert response.status_code == 200
    data = _blob(response)
    assert data["can_review"] is False and data["can_add"] is False and data["can_sign"] is False
    assert data["can_retry"] is True  # staff upload, so they may run a failed analysis again
    assert data["images"][0]["analyses"][0]["retry_url"].endswith(f"/analyses/{alice.analysis.pk}/retry/")
    assert _finding(data, alice.finding.pk)["box"] == [0.1, 0.2, 0.3, 0.25]
    html = response.content.decode()
    assert ">Confirm</button>" not in html and 'data-action="confirm"' not in html
    assert 'id="sign-button"' not in html and "finding-actions-template" not in html


def test_another_clinics_user_gets_404(alice: World, bob: World) -> None:
    response = user_client(bob.users["dentist"]).get(reverse("analysis:review", kwargs={"pk": alice.image.visit_id}))
    assert response.status_code == 404
    assert b"Alicesonmarker" not in response.content and str(alice.finding.pk).encode() not in response.content


def test_review_page_is_not_cached(alice: World) -> None:
    assert _review(alice, "dentist")["Cache-Control"] == "no-store"


def test_shortcuts_are_listed(alice: World) -> None:
    html = _review(alice, "dentist").content.decode()
    assert "Keyboard shortcuts" in html
    for key in ("j", "k", "o", "c", "r", "a"):
        assert f"<kbd>{key}</kbd>" in html


def _sign(world: World) -> None:
    client = user_client(world.users["dentist"])
    review = reverse("api:finding-review", kwargs={"pk": world.finding.pk})
    assert client.post(review, {"decision": "confirm"}, content_type="application/json").status_code == 200
    response = client.post(reverse("api:visit-report", kwargs={"pk": world.image.visit_id}))
    assert response.status_code == 201, response.content


def test_signed_visit_is_locked(alice: World) -> None:
    _sign(alice)
    response = _review(alice, "dentist")
    data = _blob(response)
    assert data["locked"] is True and data["amendment_open"] is False
    assert data["report"]["version"] == 1 and data["report"]["signed_by"] == alice.users["dentist"].email
    assert _finding(data, alice.finding.pk)["status"] == "confirmed"
    assert _finding(data, alice.finding.pk)["reviewed_by"] == alice.users["dentist"].email
    html = response.content.decode()
    assert "Signed" in html and reverse("analysis:report", kwargs={"pk": alice.image.visit_id}) in html
    assert re.search(r'id="sign-button"[^>]*disabled', html)
    assert 'id="amend-form"' in html and not re.search(r'id="amend-form"[^>]*hidden', html)


def test_open_amendment_unlocks(alice: World) -> None:
    _sign(alice)
    with clinic_scope(alice.clinic.id):
        # through the service: it clears ``Visit.locked``, the one record of the lock (a bare row does not)
        amendment_open(visit=alice.image.visit, actor=alice.users["dentist"], reason="typo")
        assert Report.objects.count() == 1
    data = _blob(_review(alice, "dentist"))
    assert data["locked"] is False and data["amendment_open"] is True and data["report"]["version"] == 1


def test_a_signed_visit_shows_what_was_signed_when_thresholds_move_later(alice: World) -> None:
    with clinic_scope(alice.clinic.id):
        low = Finding.objects.create(
            analysis=alice.analysis, image=alice.image, condition="ulcer", probability=0.2, box=[0.5, 0.5, 0.1, 0.1]
        )
    _sign(alice)  # the 0.2 ulcer suggestion was below the threshold: not shown, not part of the report
    with clinic_scope(alice.clinic.id):
        ConditionThreshold.objects.create(modality="photo", condition="ulcer", threshold=0.1)
    data = _blob(_review(alice, "dentist"))
    ids = {f["id"] for image in data["images"] for f in image["findings"]}
    assert data["locked"] is True and ids == {str(alice.finding.pk)}
    # once an amendment re-opens the visit, today's threshold applies and the suggestion needs a decision
    amend = user_client(alice.users["dentist"]).post(
        reverse("api:visit-amendment", kwargs={"pk": alice.image.visit_id}),
        {"reason": "second look"},
        content_type="application/json",
    )
    assert amend.status_code == 201
    reopened = _blob(_review(alice, "dentist"))
    assert str(low.pk) in {f["id"] for image in reopened["images"] for f in image["findings"]}


def test_worklist_lists_visits_waiting_for_a_decision_or_a_signature(alice: World, bob: World) -> None:
    from patients.models import Patient

    url = reverse("analysis:worklist")
    dentist = user_client(alice.users["dentist"])
    assert url in dentist.get(reverse("clinics:home")).content.decode()  # in the top bar
    page = dentist.get(url)
    assert page.status_code == 200 and page["Cache-Control"] == "no-store"
    html = page.content.decode()
    assert f'data-visit="{alice.image.visit_id}"' in html and "1 suggestion to decide" in html
    assert alice.patient_name in html and str(bob.image.visit_id) not in html and "Bobson" not in html
    listed = AuditEvent.unscoped.filter(action="visit.list", clinic=alice.clinic).get()
    assert listed.details == {"ids": [str(alice.image.visit_id)], "worklist": True}
    # restricted records stay off the staff's list, as everywhere else
    Patient.unscoped.filter(pk=alice.patient.pk).update(restricted=True)
    assert str(alice.image.visit_id) not in user_client(alice.users["staff"]).get(url).content.decode()
    assert str(alice.image.visit_id) in dentist.get(url).content.decode()
    Patient.unscoped.filter(pk=alice.patient.pk).update(restricted=False)
    # signed: off the list; an amendment puts it back
    _sign(alice)
    assert "Nothing to review" in dentist.get(url).content.decode()
    dentist.post(
        reverse("api:visit-amendment", kwargs={"pk": alice.image.visit_id}),
        {"reason": "second look"},
        content_type="application/json",
    )
    again = dentist.get(url).content.decode()
    assert f'data-visit="{alice.image.visit_id}"' in again and "amendment open" in again and "ready to sign" in again


def test_worklist_counts_the_suggestions_the_review_page_shows(alice: World) -> None:
    """The worklist counts pending suggestions from bare values, not from the findings the review page builds:
    both must agree on thresholds (the model card's and the clinic's), decided and clinician findings, and the
    clinic's choice to hide suggestions from unfamiliar images."""
    from analysis.models import Analysis, AnalysisSettings, FindingSource, FindingStatus
    from analysis.selectors import visit_findings

    dentist = user_client(alice.users["dentist"])

    def listed() -> int:
        html = dentist.get(reverse("analysis:worklist")).content.decode()
        found = re.search(r"<strong>(\d+) suggestions? to decide</strong>", html)
        return int(found.group(1)) if found else 0

    def reviewed() -> int:
        with clinic_scope(alice.clinic.id):
            return sum(f.status == FindingStatus.PENDING for f in visit_findings(alice.image.visit)[alice.image])

    box = [0.1, 0.1, 0.2, 0.2]
    with clinic_scope(alice.clinic.id):
        for condition, probability in [("caries", 0.05), ("caries", 0.6), ("gingivitis", 0.7), ("ulcer", 0.35)]:
            Finding.objects.create(
                analysis=alice.analysis, image=alice.image, condition=condition, probability=probability, box=box
            )
        Finding.objects.create(
            analysis=alice.analysis,
            image=alice.image,
            condition="calculus",
            probability=0.9,
            box=box,
            status=FindingStatus.REJECTED,
            reason="not_present",
        )
        Finding.objects.create(image=alice.image, source=FindingSource.CLINICIAN, condition="ulcer", box=box)
    counts = [(listed(), reviewed())]
    with clinic_scope(alice.clinic.id):
        ConditionThreshold.objects.create(modality="photo", condition="caries", threshold=0.65)
    counts.append((listed(), reviewed()))
    with clinic_scope(alice.clinic.id):
        Analysis.objects.filter(pk=alice.analysis.pk).update(unfamiliar=True)
        AnalysisSettings.objects.create(unfamiliar_findings="hide")
    counts.append((listed(), reviewed()))
    assert all(worklist == review for worklist, review in counts), counts
    # each step changed what is shown, so the comparison covered each rule
    assert counts[0][0] > counts[1][0] > counts[2][0] > 0, counts


def test_unsigned_visit_has_no_printable_link(alice: World) -> None:
    html = _review(alice, "dentist").content.decode()
    assert 'id="printable-link"' not in html and "Not signed" in html


# ---------------------------------------------------------------- thresholds


@pytest.fixture
def active_model(alice: World) -> ModelVersion:
    model = fixture_model_version()
    model.is_active = True
    model.save(update_fields=["is_active"])
    return model


def test_thresholds_page_lists_defaults(alice: World, active_model: ModelVersion) -> None:
    response = user_client(alice.users["clinic_admin"]).get(reverse("analysis:thresholds"))
    assert response.status_code == 200
    rows = {r["condition"]: r for r in response.context["rows"]}
    assert rows["caries"]["default"] == 0.3 and rows["caries"]["current"] == 0.3 and not rows["caries"]["custom"]
    assert b'name="threshold"' in response.content


def test_admin_sets_and_resets_a_threshold(alice: World, active_model: ModelVersion) -> None:
    client = user_client(alice.users["clinic_admin"])
    url = reverse("analysis:thresholds")
    response = client.post(url, {"modality": "photo", "condition": "caries", "threshold": "0.95", "action": "set"})
    assert response.status_code == 302
    with clinic_scope(alice.clinic.id):
        row = ConditionThreshold.objects.get(modality="photo", condition="caries")
        assert row.threshold == 0.95
    event = AuditEvent.unscoped.filter(clinic_id=alice.clinic.id, action="thresholds.update").get()
    assert event.details["condition"] == "caries" and event.details["threshold"] == 0.95
    assert event.details["previous"] is None and event.details["default"] == 0.3
    page = client.get(url)
    assert {r["condition"]: r for r in page.context["rows"]}["caries"]["current"] == 0.95
    # The review page now hides the 0.91 suggestion (below the clinic's operating point).
    data = _blob(_review(alice, "dentist"))
    assert data["thresholds"]["photo"]["caries"] == 0.95
    assert not any(f["id"] == str(alice.finding.pk) for image in data["images"] for f in image["findings"])

    response = client.post(url, {"modality": "photo", "condition": "caries", "action": "reset"})
    assert response.status_code == 302
    with clinic_scope(alice.clinic.id):
        assert not ConditionThreshold.objects.filter(condition="caries").exists()
    assert AuditEvent.unscoped.filter(clinic_id=alice.clinic.id, action="thresholds.update").count() == 2


@pytest.mark.parametrize("value", ["0", "1", "1.5", "-0.2", "abc", "", "nan"])
def test_invalid_threshold_is_refused(alice: World, active_model: ModelVersion, value: str) -> None:
    client = user_client(alice.users["clinic_admin"])
    response = client.post(
        reverse("analysis:thresholds"), {"modality": "photo", "condition": "caries", "threshold": value}
    )
    assert response.status_code == 400
    assert b"must be a number between 0 and 1" in response.content
    with clinic_scope(alice.clinic.id):
        assert not ConditionThreshold.objects.exists()
    assert not AuditEvent.unscoped.filter(action="thresholds.update").exists()


def test_unknown_condition_is_refused(alice: World, active_model: ModelVersion) -> None:
    client = user_client(alice.users["clinic_admin"])
    response = client.post(
        reverse("analysis:thresholds"), {"modality": "photo", "condition": "cavity", "threshold": "0.4"}
    )
    assert response.status_code == 400 and b"Choose a condition" in response.content


@pytest.mark.parametrize("role", ["dentist", "staff"])
def test_non_admin_cannot_set_thresholds(alice: World, active_model: ModelVersion, role: str) -> None:
    client = user_client(alice.users[role])
    response = client.post(
        reverse("analysis:thresholds"), {"modality": "photo", "condition": "caries", "threshold": "0.9"}
    )
    assert response.status_code == 403
    assert client.get(reverse("analysis:thresholds")).status_code == 403
    with clinic_scope(alice.clinic.id):
        assert not ConditionThreshold.objects.exists()


def test_thresholds_page_without_an_active_model(alice: World, monkeypatch) -> None:  # noqa: ANN001
    import analysis.registry

    monkeypatch.setattr(analysis.registry, "shipped_artifacts", lambda modality: [])  # an install with no model
    response = user_client(alice.users["clinic_admin"]).get(reverse("analysis:thresholds"))
    assert response.status_code == 200 and b"No model is active yet" in response.content


def test_thresholds_page_lists_the_shipped_photo_model(alice: World) -> None:
    from analysis.registry import shipped_artifacts

    if not shipped_artifacts("photo"):
        pytest.skip("no shipped photo model")
    page = user_client(alice.users["clinic_admin"]).get(reverse("analysis:thresholds")).content.decode()
    assert "photo-effnetlite0" in page and "caries" in page


# ---------------------------------------------------------------- agreement


def test_agreement_page_shows_figures(alice: World) -> None:
    dentist = alice.users["dentist"]
    with clinic_scope(alice.clinic.id):
        for status, reason in [("confirmed", ""), ("confirmed", ""), ("rejected", "not_present")]:
            Finding.objects.create(
                analysis=alice.analysis,
                image=alice.image,
                condition="caries",
                probability=0.8,
                box=[0.1, 0.1, 0.1, 0.1],
                status=status,
                reason=reason,
                reviewed_by=dentist,
            )
        Finding.objects.create(
            image=alice.image,
            source="clinician",
            condition="ulcer",
            box=[0.4, 0.4, 0.1, 0.1],
            status="confirmed",
            reviewed_by=dentist,
        )
    response = user_client(alice.users["clinic_admin"]).get(reverse("analysis:agreement"))
    assert response.status_code == 200
    rows = {r["condition"]: r for r in response.context["rows"]}
    caries = rows["caries"]
    assert (caries["confirmed"], caries["rejected"], caries["pending"]) == (2, 1, 1)
    assert caries["ppv_percent"] == 66.7
    assert rows["ulcer"]["added_by_clinicians"] == 1
    html = response.content.decode()
    assert "66.7%" in html and "Not present: 1" in html and "photo-fixture@0.0.0" in html
    assert "PPV in practice" in html


def test_agreement_empty_state_and_access(alice: World) -> None:
    with clinic_scope(alice.clinic.id):
        Finding.objects.all().delete()
    response = user_client(alice.users["clinic_admin"]).get(reverse("analysis:agreement"))
    assert response.status_code == 200 and b"No findings yet" in response.content
    assert user_client(alice.users["dentist"]).get(reverse("analysis:agreement")).status_code == 403


def test_the_review_page_carries_teeth_notes_and_versions(alice: World) -> None:
    from analysis.models import AnalysisSettings

    with clinic_scope(alice.clinic.id):
        AnalysisSettings.objects.create(tooth_notation="universal")
        Finding.objects.filter(pk=alice.finding.pk).update(tooth="16", note="distal", version=4)
    response = _review(alice, "dentist")
    data = _blob(response)
    finding = _finding(data, alice.finding.pk)
    assert finding["tooth"] == "16" and finding["note"] == "distal" and finding["version"] == 4
    assert data["tooth_notation"] == "universal" and data["teeth"]["16"]["label"] == "3"
    assert data["teeth"]["85"] == {
        "label": "T",
        "name": "primary lower right second molar",
        "grid": "E┐",
        "primary": True,
    }
    assert data["chart_rows"]["permanent"][0][0] == "18" and len(data["teeth"]) == 52
    assert data["visit_note"] == {"text": "", "version": 0, "updated_by": None}
    assert data["urls"]["finding_detail"] == reverse("api:finding-detail", kwargs={"pk": FINDING_PLACEHOLDER})
    html = response.content.decode()
    assert 'id="visit-note-form"' in html and 'name="version" id="visit-note-version" value="0"' in html
    assert reverse("analysis:chart", kwargs={"pk": alice.image.visit_id}) in html
    assert 'data-action="undo"' in html and "<kbd>t</kbd>" in html and "<kbd>u</kbd>" in html
    assert "Tooth numbers in Universal (ADA)." in html


def test_after_signing_the_visit_note_is_read_only(alice: World) -> None:
    _sign(alice)
    html = _review(alice, "dentist").content.decode()
    assert re.search(r'<textarea id="visit-note-text"[^>]*readonly', html)
    assert re.search(r'id="visit-note-save" disabled', html)
    assert re.search(r'id="sign-button"[^>]*disabled>Signed</button>', html)
