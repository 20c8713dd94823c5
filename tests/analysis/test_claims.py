"""Claims of analysis jobs: an analysis that every worker taking it failed to finish ends as failed (its visit can
then be signed or retried), giving up never throws away a live claim or a finished result, and one result that
cannot be recorded fails alone."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.utils import timezone

from analysis.models import Analysis
from analysis.services import Claimed, analysis_claim, analysis_fail, analysis_finish
from clinics.models import AuditEvent
from clinics.tenancy import clinic_scope
from patients.services import image_ingest

from ..conftest import World, png_bytes


def _queued(world: World, **fields: object) -> Analysis:
    """An analysis of a new image of the world's patient (one analysis per image and model)."""
    with clinic_scope(world.clinic.id):
        image = image_ingest(
            patient=world.patient, stream=io.BytesIO(png_bytes()), filename="x.png", size=None, modality="photo"
        )
        return Analysis.objects.create(
            image=image, model_version=world.analysis.model_version, input_sha256=image.sha256, **fields
        )


def test_an_analysis_no_worker_finished_after_the_last_attempt_is_failed_not_claimed(alice: World, settings) -> None:  # noqa: ANN001
    settings.ANALYSIS_MAX_ATTEMPTS = 3
    stale = timezone.now() - timedelta(seconds=settings.ANALYSIS_STALE_AFTER_SECONDS + 1)
    worn = _queued(alice, status="running", attempts=3, claimed_at=stale)
    fresh = _queued(alice, status="running", attempts=2, claimed_at=stale)
    with clinic_scope(alice.clinic.id):
        assert analysis_claim(worn.pk) is None
        worn.refresh_from_db()
        assert worn.status == "failed" and "gave up" in worn.failure_reason
        assert AuditEvent.unscoped.filter(action="analysis.failed", object_id=str(worn.pk)).exists()
        assert analysis_claim(fresh.pk) is not None  # under the limit: taken over as before


def test_giving_up_never_fails_a_live_claim_or_a_finished_result(alice: World) -> None:
    with clinic_scope(alice.clinic.id):
        live = _queued(alice)
        assert analysis_claim(live.pk) is not None
        assert not analysis_fail(live.pk, "gave up after 4 retries")  # another worker holds it now
        refused = _queued(alice, status="not_assessable", not_assessable_code="blurred")
        assert not analysis_fail(refused.pk, "gave up after 4 retries")
        assert Analysis.objects.get(pk=live.pk).status == "running"
        assert Analysis.objects.get(pk=refused.pk).status == "not_assessable"
        waiting = _queued(alice)
        assert analysis_fail(waiting.pk, "gave up after 4 retries")


def test_a_result_that_cannot_be_recorded_fails_that_analysis_only(
    alice: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from analysis import services

    with clinic_scope(alice.clinic.id):
        bad, good = _queued(alice), _queued(alice)
        claims = [Claimed(Analysis.objects.get(pk=a.pk), analysis_claim(a.pk)) for a in (bad, good)]
    real = services.analysis_finish

    def finish(claimed: Claimed, result: dict) -> bool:
        if claimed.analysis.pk == bad.pk:
            raise ValueError("value out of range for the column")
        return real(claimed, result)

    monkeypatch.setattr(services, "analysis_finish", finish)
    monkeypatch.setattr(services, "_claim_batch", lambda first, token: claims)
    monkeypatch.setattr(services, "analysis_claim", lambda pk: claims[0].token)
    monkeypatch.setattr(services, "predictor", lambda path, **kwargs: _Model())
    monkeypatch.setattr(services, "_load_batch", lambda claimed, model: [None] * len(claimed))
    monkeypatch.setattr(services, "clinic_models_in_use", lambda modality: False)
    with clinic_scope(alice.clinic.id):
        outcome = services.analysis_execute(analysis_id=bad.pk)
        assert outcome == "done:1/2"
        assert Analysis.objects.get(pk=bad.pk).status == "failed"
        assert Analysis.objects.get(pk=good.pk).status == "done"
    assert analysis_finish is real


class _Model:
    def predict(self, pixels: list, **kwargs: object) -> list[dict]:
        return [{"scores": {}, "findings": []} for _ in pixels]


def test_the_completed_webhook_commits_with_the_result_and_a_broker_error_loses_nothing(
    alice: World, monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks
) -> None:  # noqa: ANN001
    """The delivery row is written in the transaction that records the result; the message to send it leaves after
    the commit, and a broker that refuses it leaves the delivery pending (visible to the admin), not an error."""
    from analysis.models import WebhookDelivery
    from analysis.webhooks import webhook_register

    def broker_down(*args: object) -> None:
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr("analysis.webhooks.task_send", broker_down)
    with clinic_scope(alice.clinic.id):
        webhook_register(url="https://pms.example/hook", events=["analysis.completed"])
        queued = _queued(alice)
        claimed = Claimed(Analysis.objects.get(pk=queued.pk), analysis_claim(queued.pk))
        with django_capture_on_commit_callbacks(execute=True):
            assert analysis_finish(claimed, {"scores": {}, "findings": []})
        assert Analysis.objects.get(pk=queued.pk).status == "done"
        [delivery] = WebhookDelivery.objects.filter(payload__data__analysis_id=str(queued.pk))
        assert delivery.status == "pending" and delivery.attempts == 0


def test_an_upload_whose_analysis_request_fails_leaves_no_blob(
    alice: World, monkeypatch: pytest.MonkeyPatch, _image_storage
) -> None:  # noqa: ANN001
    """The image's row rolls back with the failed request: the blobs intake wrote for it are removed, not left
    unreadable and uncounted in the storage."""
    from analysis import uploads
    from patients.models import Image

    def refused(**kwargs: object) -> None:
        raise RuntimeError("the analysis could not be requested")

    monkeypatch.setattr(uploads, "analysis_request", refused)
    before = {p for p in _image_storage.rglob("*") if p.is_file()}
    images = Image.unscoped.count()
    with clinic_scope(alice.clinic.id), pytest.raises(RuntimeError):
        uploads.image_upload(
            patient=alice.patient, stream=io.BytesIO(png_bytes()), filename="x.png", size=None, modality="photo"
        )
    assert Image.unscoped.count() == images
    assert {p for p in _image_storage.rglob("*") if p.is_file()} == before
