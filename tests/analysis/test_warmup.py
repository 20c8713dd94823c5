"""Models are loaded and warmed when the process that runs analyses starts, not inside the first request."""

from __future__ import annotations

import os
import time

import pytest

from analysis.registry import _load, model_register, shipped_artifacts
from analysis.warmup import describe, warm_models

from ..conftest import requires_postgres
from ..workers import start_worker, stop_worker


@pytest.mark.django_db
def test_warm_models_loads_each_active_model_once() -> None:
    for modality in ("photo", "xray"):
        model_register(artifact_dir=shipped_artifacts(modality)[-1])
    _load.cache_clear()
    try:
        ready = warm_models()
        assert set(ready) == {"photo", "xray"}
        assert ready["photo"][0].startswith("photo-") and ready["xray"][0].startswith("xray-")
        assert _load.cache_info().currsize == 2  # loaded, and kept for the process
        warm_models()  # again: both come from the process's cache (no second load)
        assert _load.cache_info().hits >= 2 and _load.cache_info().currsize == 2
        assert "photo photo-" in describe(ready) and "xray xray-" in describe(ready)
    finally:
        _load.cache_clear()


@pytest.mark.django_db
def test_no_model_is_not_an_error() -> None:
    from analysis.models import ModelVersion

    ModelVersion.objects.update(is_active=False)
    assert describe({}).startswith("no model could be loaded")


@requires_postgres
@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs Redis (set REDIS_URL); CI runs it")
@pytest.mark.django_db(transaction=True)
def test_a_gpu_worker_warms_its_models_as_it_starts() -> None:
    model_register(artifact_dir=shipped_artifacts("photo")[-1])
    worker = start_worker("gpu")  # its output is read while it runs: worker.log
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and "models ready: photo photo-" not in worker.log.text():
            assert worker.poll() is None, worker.log.text()[-3000:]
            time.sleep(0.3)
        assert "models ready: photo photo-" in worker.log.text(), worker.log.text()[-3000:]
    finally:
        stop_worker(worker)
