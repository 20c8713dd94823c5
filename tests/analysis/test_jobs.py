"""Analysis jobs: queue after commit, claim by compare-and-swap, exactly one result; reviews."""

from __future__ import annotations

import hashlib
import io
from datetime import timedelta
from pathlib import Path

import pytest
from django.urls import reverse
from django.utils import timezone

from analysis.models import Analysis, Finding, FindingDecision
from analysis.registry import model_register
from analysis.services import Claimed, analysis_claim, analysis_execute, analysis_finish
from analysis.tasks import run_analysis
from clinics.models import AuditEvent
from clinics.tenancy import clinic_scope
from config.celery import app
from tests.ml.conftest import random_artifact  # noqa: F401 - fixture

from ..conftest import World, png_bytes, tasks_on_commit, token_client


@pytest.fixture
def photo_model(random_artifact: Path, db: object):  # noqa: F811, ANN201
    return model_register(artifact_dir=random_artifact)


def _upload(world: World, role: str = "staff", color=(200, 30, 30)):  # noqa: ANN001, ANN202
    f = io.BytesIO(png_bytes((96, 72), color))
    f.name = "front.png"
    return token_client(world, role).post(
        reverse("api:patient-image-list", kwargs={"pk": world.patient.pk}),
        {"file": f, "modality": "photo"},
        format="multipart",
    )


def test_upload_queues_after_commit_and_the_embedded_default_finishes_it(
    alice: World,
    photo_model,
    eager,
    django_capture_on_commit_callbacks,  # noqa: ANN001
) -> None:
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = _upload(alice)
    queued = tasks_on_commit(callbacks)  # the analysis run, and the preview and thumbnail (patients.derive_image)
    assert response.status_code == 201 and len(queued) == 2
    assert sum(getattr(c.func, "__name__", "") == "_derive_later" for c in queued) == 1
    analysis_id = response.json()["analysis"]["id"]
    body = token_client(alice, "dentist").get(reverse("api:analysis-detail", kwargs={"pk": analysis_id})).json()
    assert body["status"] == "done" and body["model"] == "photo-test@0.0.1"
    assert set(body["scores"]) == {"caries", "gingivitis", "calculus", "ulcer"}
    assert body["findings"], "the random test model (bias +2) should suggest something"
    for f in body["findings"]:
        assert len(f["box"]) == 4 and f["status"] == "pending" and f["source"] == "model"
    assert AuditEvent.unscoped.filter(action="analysis.completed", object_id=analysis_id).exists()
    # The result names its input: the SHA-256 of the stored (sanitised) image, what the file endpoint serves.
    original = token_client(alice, "dentist").get(reverse("api:image-file", kwargs={"pk": response.json()["id"]}))
    served = b"".join(original.streaming_content) if original.streaming else original.content
    assert body["input_sha256"] == response.json()["sha256"] == hashlib.sha256(served).hexdigest()


def test_one_analysis_per_image_and_model(alice: World, photo_model) -> None:  # noqa: ANN001
    from analysis.services import analysis_request

    with clinic_scope(alice.clinic.id):
        first = analysis_request(image=alice.image)
        again = analysis_request(image=alice.image)
        assert (
            first.pk == again.pk and Analysis.objects.filter(image=alice.image, model_version=photo_model).count() == 1
        )


def test_duplicated_message_gives_one_result(alice: World, photo_model, eager) -> None:  # noqa: ANN001
    from analysis.services import analysis_request

    with clinic_scope(alice.clinic.id):
        analysis = analysis_request(image=alice.image)
    args = (str(analysis.pk), str(alice.clinic.id))
    assert run_analysis.apply(args=args).get().startswith("done:1/1")
    with clinic_scope(alice.clinic.id):
        count = Finding.objects.filter(analysis=analysis).count()
    assert run_analysis.apply(args=args).get() == "skipped:done"
    with clinic_scope(alice.clinic.id):
        assert Finding.objects.filter(analysis=analysis).count() == count
        assert Analysis.objects.get(pk=analysis.pk).attempts == 1


def test_a_stale_claim_is_taken_over_and_the_old_worker_cannot_write(alice: World, photo_model) -> None:  # noqa: ANN001
    from analysis.services import analysis_request

    with clinic_scope(alice.clinic.id):
        analysis = analysis_request(image=alice.image)
        dead_token = analysis_claim(analysis.pk)  # a worker that was then killed
        assert dead_token and analysis_claim(analysis.pk) is None  # a live claim cannot be taken
        Analysis.objects.filter(pk=analysis.pk).update(claimed_at=timezone.now() - timedelta(hours=1))
        assert analysis_execute(analysis_id=analysis.pk) == "done:1/1"
        n = Finding.objects.filter(analysis=analysis).count()
        stale = Claimed(Analysis.objects.get(pk=analysis.pk), dead_token)
        fake = {
            "scores": {"caries": 0.9},
            "findings": [{"condition": "caries", "probability": 0.9, "box": [0, 0, 1, 1]}],
        }
        assert analysis_finish(stale, fake) is False
        assert Finding.objects.filter(analysis=analysis).count() == n
        assert Analysis.objects.get(pk=analysis.pk).attempts == 2


def test_images_of_a_visit_are_batched(alice: World, photo_model) -> None:  # noqa: ANN001
    others = [_upload(alice, color=(10 * i, 80, 80)).json()["id"] for i in range(3)]  # one visit: today's
    with clinic_scope(alice.clinic.id):
        analyses = list(Analysis.objects.filter(image_id__in=others))
        assert len(analyses) == 3 and {a.status for a in analyses} == {"queued"}
        assert analysis_execute(analysis_id=analyses[0].pk) == "done:3/3"  # one claim took the whole visit
        assert set(Analysis.objects.filter(image_id__in=others).values_list("status", flat=True)) == {"done"}
        assert Finding.objects.filter(image_id__in=others).values("image_id").distinct().count() == 3


def test_only_dentists_review_with_reasons_and_every_decision_is_recorded(alice: World) -> None:
    url = reverse("api:finding-review", kwargs={"pk": alice.finding.pk})
    assert token_client(alice, "staff").post(url, {"decision": "confirm"}, format="json").status_code == 403
    assert token_client(alice, "clinic_admin").post(url, {"decision": "confirm"}, format="json").status_code == 403
    dentist = token_client(alice, "dentist")
    missing = dentist.post(url, {"decision": "reject"}, format="json")
    assert missing.status_code == 400 and missing.json()["error"]["code"] == "reason_required"
    rejected = dentist.post(url, {"decision": "reject", "reason": "wrong_location"}, format="json").json()
    assert rejected["status"] == "rejected" and rejected["reason"] == "wrong_location"
    assert rejected["reviewed_by"] == "dentist@alice.test"
    confirmed = dentist.post(url, {"decision": "confirm"}, format="json").json()
    assert confirmed["status"] == "confirmed" and confirmed["reason"] == ""
    with clinic_scope(alice.clinic.id):
        decisions = list(FindingDecision.objects.filter(finding=alice.finding).values("decision", "before", "after"))
    assert [d["decision"] for d in decisions] == ["reject", "confirm"]
    assert decisions[1]["before"]["status"] == "rejected" and decisions[1]["after"]["status"] == "confirmed"
    assert AuditEvent.unscoped.filter(action="finding.reject", object_id=str(alice.finding.pk)).exists()


def test_analysis_shape_matches_the_api_contract(alice: World) -> None:
    body = token_client(alice, "staff").get(reverse("api:analysis-detail", kwargs={"pk": alice.analysis.pk})).json()
    assert {"id", "status", "model", "findings"} <= set(body)
    finding = body["findings"][0]
    assert {"id", "condition", "probability", "box", "status", "reviewed_by", "reason"} <= set(finding)
    listing = token_client(alice, "staff").get(reverse("api:analysis-list")).json()
    assert [a["id"] for a in listing["results"]] == [str(alice.analysis.pk)]
    meta = token_client(alice, "staff").get(reverse("api:image-detail", kwargs={"pk": alice.image.pk})).json()
    # not_assessable: only set when the image gate refused the image
    assert meta["analysis"] == {"id": str(alice.analysis.pk), "status": "done", "not_assessable": None}


def test_clinic_thresholds_decide_what_is_shown(alice: World) -> None:
    from analysis.models import ConditionThreshold

    url = reverse("api:analysis-detail", kwargs={"pk": alice.analysis.pk})
    assert len(token_client(alice, "staff").get(url).json()["findings"]) == 1  # 0.91 >= model card's 0.3
    with clinic_scope(alice.clinic.id):
        ConditionThreshold.objects.create(modality="photo", condition="caries", threshold=0.95)
    assert token_client(alice, "staff").get(url).json()["findings"] == []
    assert len(token_client(alice, "staff").get(url, {"all": "true"}).json()["findings"]) == 1


def test_transient_errors_retry_then_fail_with_a_reason(alice: World, photo_model, eager, monkeypatch) -> None:  # noqa: ANN001
    from django.db import OperationalError

    import analysis.services as services
    from analysis.services import analysis_request

    calls = []

    def database_down(**kwargs: object) -> bytes:
        calls.append(1)
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(services, "image_read", database_down)
    with clinic_scope(alice.clinic.id):
        analysis = analysis_request(image=alice.image)
    # Eager apply() re-applies the task on each retry (countdowns are not waited for in-process).
    app.conf.task_eager_propagates = False  # restored by the eager fixture
    result = run_analysis.apply(args=(str(analysis.pk), str(alice.clinic.id)), throw=False)
    assert result.get(propagate=False) == "failed"
    with clinic_scope(alice.clinic.id):
        analysis.refresh_from_db()
        assert analysis.status == "failed" and "gave up after 4 retries" in analysis.failure_reason
        assert not Finding.objects.filter(analysis=analysis).exists()
    assert len(calls) == 5  # the first try and four retries


def test_a_permanent_error_fails_at_once_without_retries(alice: World, photo_model, eager, monkeypatch) -> None:  # noqa: ANN001
    import analysis.services as services
    from analysis.services import analysis_request
    from core.crypto import IntegrityFailure

    calls = []

    def tampered(**kwargs: object) -> bytes:
        calls.append(1)
        raise IntegrityFailure("authentication tag mismatch")

    monkeypatch.setattr(services, "image_read", tampered)
    with clinic_scope(alice.clinic.id):
        analysis = analysis_request(image=alice.image)
    assert run_analysis.apply(args=(str(analysis.pk), str(alice.clinic.id))).get() == "failed"
    with clinic_scope(alice.clinic.id):
        analysis.refresh_from_db()
    assert analysis.status == "failed" and "IntegrityFailure" in analysis.failure_reason and len(calls) == 1


def test_a_failed_analysis_can_be_run_again(
    alice: World,
    photo_model,  # noqa: ANN001
    eager,  # noqa: ANN001
    django_capture_on_commit_callbacks,  # noqa: ANN001
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        uploaded = _upload(alice)
    analysis_id = uploaded.json()["analysis"]["id"]
    url = reverse("api:analysis-retry", kwargs={"pk": analysis_id})
    staff = token_client(alice, "staff")
    not_failed = staff.post(url)
    assert not_failed.status_code == 409 and not_failed.json()["error"]["code"] == "analysis_not_failed"
    with clinic_scope(alice.clinic.id):
        Analysis.objects.filter(pk=analysis_id).update(status="failed", failure_reason="OSError: model file missing")
        Finding.objects.filter(analysis_id=analysis_id).delete()
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        again = staff.post(url)
    assert again.status_code == 200 and again.json()["status"] == "queued" and len(tasks_on_commit(callbacks)) == 1
    body = token_client(alice, "dentist").get(reverse("api:analysis-detail", kwargs={"pk": analysis_id})).json()
    assert body["status"] == "done" and body["findings"]  # the message ran it (eager here)
    event = AuditEvent.unscoped.filter(action="analysis.retry", object_id=analysis_id).get()
    assert event.details["model"] == "photo-test@0.0.1"
    assert token_client(alice, "staff").post(url).status_code == 409  # done now


def test_a_worker_batches_queued_analyses_of_other_visits_of_its_clinic_only(
    alice: World,
    bob: World,
    photo_model,  # noqa: ANN001
    settings,  # noqa: ANN001
) -> None:
    """Dynamic batching: ten one-photo visits run as one model batch, like one ten-photo visit; another clinic's
    queued analysis is never taken (its keys and rows are not the worker's), and the batch size holds."""
    settings.ANALYSIS_BATCH_SIZE = 4
    settings.ANALYSIS_BATCH_WAIT_MS = 0
    staff = token_client(alice, "staff")
    image_ids = []
    for i in range(5):
        patient = staff.post(
            reverse("api:patient-list"),
            {"external_id": f"batch-{i}", "given_name": "B", "family_name": f"P{i}", "date_of_birth": "1990-01-01"},
            format="json",
        )
        assert patient.status_code == 201, patient.content
        f = io.BytesIO(png_bytes((96, 72), (20 * i, 90, 90)))
        f.name = "front.png"
        upload = staff.post(
            reverse("api:patient-image-list", kwargs={"pk": patient.json()["id"]}),
            {"file": f, "modality": "photo"},
            format="multipart",
        )
        assert upload.status_code == 201, upload.content
        image_ids.append(upload.json()["id"])
    other_clinic = _upload(bob).json()["id"]
    with clinic_scope(alice.clinic.id):
        analyses = list(Analysis.objects.filter(image_id__in=image_ids).order_by("created_at"))
        assert len({a.image.visit_id for a in analyses}) == 5 and {a.status for a in analyses} == {"queued"}
        assert analysis_execute(analysis_id=analyses[2].pk) == "done:4/4"  # four visits in one batch (the size)
        statuses = dict(Analysis.objects.filter(image_id__in=image_ids).values_list("image_id", "status"))
        assert sorted(statuses.values()) == ["done", "done", "done", "done", "queued"]
        assert statuses[analyses[2].image_id] == "done"
        assert statuses[analyses[4].image_id] == "queued"  # oldest first after the claimed one
        assert analysis_execute(analysis_id=analyses[4].pk) == "done:1/1"
    with clinic_scope(bob.clinic.id):
        assert Analysis.objects.get(image_id=other_clinic).status == "queued"


def test_a_worker_with_a_part_full_batch_waits_once_for_analyses_being_queued(
    alice: World,
    photo_model,  # noqa: ANN001
    settings,  # noqa: ANN001
    monkeypatch,  # noqa: ANN001
) -> None:
    """The short wait of dynamic batching: an analysis queued while the worker waits joins its batch."""
    import analysis.services as services

    settings.ANALYSIS_BATCH_WAIT_MS = 25
    first, second = _upload(alice).json()["id"], _upload(alice, color=(5, 200, 5)).json()["id"]
    with clinic_scope(alice.clinic.id):
        Analysis.objects.filter(image_id=second).update(status="failed")  # not queued yet
    slept = []

    def sleep_and_queue(seconds: float) -> None:  # the second analysis is queued while the worker waits
        slept.append(seconds)
        Analysis.objects.filter(image_id=second).update(status="queued")

    monkeypatch.setattr(services.time, "sleep", sleep_and_queue)
    with clinic_scope(alice.clinic.id):
        analysis = Analysis.objects.get(image_id=first)
        assert analysis_execute(analysis_id=analysis.pk) == "done:2/2"
    assert slept == [0.025]


def test_weights_replaced_on_disk_since_registration_are_refused(alice: World, photo_model) -> None:  # noqa: ANN001
    """An artefact folder overwritten in place (its model.json and weights agree with each other) is not the
    registered version: the analysis fails with the reason instead of crediting findings to that version."""
    from analysis.models import ModelVersion
    from analysis.services import analysis_request

    ModelVersion.objects.filter(pk=photo_model.pk).update(weights_sha256="0" * 64)  # as registered before
    with clinic_scope(alice.clinic.id):
        analysis = analysis_request(image=alice.image)
        assert analysis_execute(analysis_id=analysis.pk) == "failed"
        failed = Analysis.objects.get(pk=analysis.pk)
        assert failed.status == "failed" and "not the ones registered" in failed.failure_reason
        assert not Finding.objects.filter(analysis=failed).exists()
