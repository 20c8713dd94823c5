"""Analysis through the real broker and a real Celery worker process (PostgreSQL + Redis)."""

from __future__ import annotations

import io
import os
import signal
from pathlib import Path

import pytest
from django.urls import reverse

from analysis.models import Analysis, Finding
from analysis.registry import model_register
from config.celery import app
from tests.ml.conftest import random_artifact  # noqa: F401 - fixture

from ..conftest import PASSWORD, png_bytes
from ..workers import start_worker, stop_worker, wait_for

pytestmark = [
    pytest.mark.skipif(not os.environ.get("DATABASE_URL", "").startswith("postgres"), reason="needs PostgreSQL"),
    pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs Redis (set REDIS_URL); CI runs it"),
    pytest.mark.django_db(transaction=True),
]


def _world_and_upload(random_artifact: Path, world: object = None) -> tuple[str, object]:  # noqa: F811
    from rest_framework.test import APIClient

    from ..conftest import build_clinic

    model_register(artifact_dir=random_artifact)
    world = world or build_clinic("worker")
    client = APIClient()
    token = client.post(
        reverse("api:token"), {"email": f"staff@{world.clinic.slug}.test", "password": PASSWORD}, format="json"
    ).json()["token"]
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    f = io.BytesIO(png_bytes((120, 90), (180, 60, 60)))
    f.name = "front.png"
    response = client.post(
        reverse("api:patient-image-list", kwargs={"pk": world.patient.pk}),
        {"file": f, "modality": "photo"},
        format="multipart",
    )
    assert response.status_code == 201, response.content
    return response.json()["analysis"]["id"], client


def test_upload_is_analysed_by_a_real_worker(random_artifact: Path) -> None:  # noqa: F811
    app.control.purge()
    analysis_id, client = _world_and_upload(random_artifact)
    analysis = Analysis.unscoped.get(pk=analysis_id)
    assert analysis.status == "queued"
    from analysis.tasks import run_analysis

    run_analysis.delay(analysis_id, str(analysis.clinic_id))  # the same task delivered a second time
    worker = start_worker("gpu")
    output = worker.log
    try:
        wait_for(
            lambda: Analysis.unscoped.filter(pk=analysis_id, status="done").exists(),
            timeout=120,
            what="the analysis to finish",
            worker=worker,
        )
        # the second delivery may still be on its way when the first has finished: wait for its outcome too
        wait_for(
            lambda: output.text().count("succeeded in") >= 2 or "busy" in output.text(),
            timeout=60,
            what="the second delivery's outcome",
            worker=worker,
        )
    finally:
        log = stop_worker(worker)
    body = client.get(reverse("api:analysis-detail", kwargs={"pk": analysis_id})).json()
    assert body["status"] == "done" and body["model"] == "photo-test@0.0.1", log[-2000:]
    assert body["findings"] and all(len(f["box"]) == 4 for f in body["findings"])
    assert log.count("analysis.run[") >= 2  # both deliveries reached the worker...
    assert "skipped:done" in log or "busy" in log  # ...and the second one found the work done
    analysis.refresh_from_db()
    assert analysis.attempts == 1 and len({f["condition"] for f in body["findings"]}) == len(body["findings"])


def test_worker_killed_mid_task_still_gives_exactly_one_result(random_artifact: Path) -> None:  # noqa: F811
    app.control.purge()
    analysis_id, _ = _world_and_upload(random_artifact)
    timing = {
        "ANALYSIS_DEBUG_SLEEP_SECONDS": "4",
        "CELERY_VISIBILITY_TIMEOUT": "6",
        "ANALYSIS_STALE_AFTER_SECONDS": "8",
    }
    first = start_worker("gpu", **timing)
    try:
        wait_for(
            lambda: Analysis.unscoped.filter(pk=analysis_id, status="running").exists(),
            timeout=120,
            what="the first worker to claim the analysis",
            worker=first,
        )
        os.kill(first.pid, signal.SIGKILL)  # dies holding the claim, before writing any result
        first.wait(timeout=10)
    finally:
        stop_worker(first)
    assert Analysis.unscoped.get(pk=analysis_id).status == "running"
    assert not Finding.unscoped.filter(analysis_id=analysis_id).exists()
    second = start_worker("gpu", **timing)
    try:
        wait_for(
            lambda: Analysis.unscoped.filter(pk=analysis_id, status="done").exists(),
            timeout=180,
            what="the redelivered task to finish on the second worker",
            worker=second,
        )
    finally:
        log = stop_worker(second)
    analysis = Analysis.unscoped.get(pk=analysis_id)
    findings = list(Finding.unscoped.filter(analysis_id=analysis_id))
    assert analysis.attempts >= 2, log[-2000:]
    assert findings and len({f.condition for f in findings}) == len(findings)  # one result set, no duplicates
