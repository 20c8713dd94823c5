"""Lost task messages: a broker outage at upload time is not an error, and the sweep sends again the
messages of analyses left queued (or running under a stale claim)."""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path

import pytest
from django.urls import reverse
from django.utils import timezone

from analysis.models import Analysis
from analysis.registry import model_register
from analysis.services import analysis_claim, analysis_request, analysis_requeue_stale
from analysis.tasks import run_analysis
from clinics.tenancy import clinic_scope
from tests.ml.conftest import random_artifact  # noqa: F401 - fixture

from ..conftest import World, png_bytes, token_client


@pytest.fixture
def photo_model(random_artifact: Path, db: object):  # noqa: F811, ANN201
    return model_register(artifact_dir=random_artifact)


def test_upload_is_accepted_while_the_broker_is_down(
    alice: World,
    photo_model,  # noqa: ANN001
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks,  # noqa: ANN001
) -> None:
    def broker_down(*args: object, **kwargs: object) -> None:
        raise ConnectionRefusedError("broker down")

    monkeypatch.setattr(run_analysis, "delay", broker_down)
    f = io.BytesIO(png_bytes((96, 72)))
    f.name = "front.png"
    with django_capture_on_commit_callbacks(execute=True):
        response = token_client(alice, "staff").post(
            reverse("api:patient-image-list", kwargs={"pk": alice.patient.pk}),
            {"file": f, "modality": "photo"},
            format="multipart",
        )
    assert response.status_code == 201, response.content  # stored and committed: not an error
    assert Analysis.unscoped.get(pk=response.json()["analysis"]["id"]).status == "queued"


def test_the_sweep_resends_lost_messages_once_per_grace_period(alice: World, photo_model, eager) -> None:  # noqa: ANN001, F811
    with clinic_scope(alice.clinic.id):
        lost = analysis_request(image=alice.image)  # its message never reached a worker
    old = timezone.now() - timedelta(minutes=30)
    Analysis.unscoped.filter(pk=lost.pk).update(created_at=old)
    assert analysis_requeue_stale(older_than_seconds=60) == 1  # eager: runs right away
    assert Analysis.unscoped.get(pk=lost.pk).status == "done"
    assert analysis_requeue_stale(older_than_seconds=60) == 0


def test_the_sweep_leaves_recent_and_live_work_alone(alice: World, photo_model, monkeypatch) -> None:  # noqa: ANN001
    sent: list[tuple] = []
    monkeypatch.setattr(run_analysis, "delay", lambda *args: sent.append(args))
    with clinic_scope(alice.clinic.id):
        fresh = analysis_request(image=alice.image)
    assert analysis_requeue_stale(older_than_seconds=60) == 0  # queued a moment ago
    with clinic_scope(alice.clinic.id):
        assert analysis_claim(fresh.pk) is not None  # a live worker holds it
    Analysis.unscoped.filter(pk=fresh.pk).update(created_at=timezone.now() - timedelta(hours=1))
    assert analysis_requeue_stale(older_than_seconds=60) == 0
    Analysis.unscoped.filter(pk=fresh.pk).update(claimed_at=timezone.now() - timedelta(hours=1))  # worker died
    assert analysis_requeue_stale(older_than_seconds=60) == 1
    assert sent == [(str(fresh.pk), str(alice.clinic.id))]
