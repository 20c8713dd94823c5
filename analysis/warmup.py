"""Load and warm the active models once per process, when the process that runs analyses starts.

A model loaded inside the first request made the first analysis after a start take 20 s (loading the weights,
exporting the ONNX copy, the first inference's allocations) against 0.2 s afterwards. The process that runs
analyses warms them as it starts instead: a Celery worker (``config.celery``: in each pool process, in a
background thread, so the pool's start-up limit is never hit; the first task waits on the registry's load lock)
and, on the embedded default where analyses run in the web process (no broker), the web process before it
serves (``config.wsgi``).
"""

from __future__ import annotations

import logging
import threading
import time

from django.db import DatabaseError, close_old_connections, connection
from PIL import Image as PILImage

from .models import ModelModality
from .registry import ModelNotAvailable, artifact_path, model_version_active, predictor

logger = logging.getLogger(__name__)


def warm_models() -> dict[str, tuple[str, float]]:
    """Load each modality's active model and run it once on a blank image; ``{modality: (model id, seconds)}``.
    A modality without a usable model is left out (logged), never an error: the process still starts."""
    ready: dict[str, tuple[str, float]] = {}
    for modality in ModelModality.values:
        started = time.perf_counter()
        try:
            model = predictor(artifact_path(model_version_active(modality)))
            size = int(getattr(model, "input_size", 224))
            blank = PILImage.new("L" if modality == ModelModality.XRAY else "RGB", (size, size), 128)
            model.predict([blank], explain=True, min_probability=0.05)
        except (ModelNotAvailable, DatabaseError) as exc:
            logger.warning("no %s model to warm: %s", modality, exc)
            continue
        except Exception:  # noqa: BLE001 - a model that fails here fails its analyses, with their own reason
            logger.exception("warming the %s model failed", modality)
            continue
        ready[modality] = (model.model_id, time.perf_counter() - started)
    return ready


def describe(ready: dict[str, tuple[str, float]]) -> str:
    if not ready:
        return "no model could be loaded: analyses will say why they failed"
    return ", ".join(f"{modality} {model_id} in {seconds:.1f} s" for modality, (model_id, seconds) in ready.items())


def warm_models_in_background() -> threading.Thread:
    """For a worker process: warm in a daemon thread, with its own database connection, closed afterwards."""

    def run() -> None:
        close_old_connections()
        try:
            logger.info("models ready: %s", describe(warm_models()))
        finally:
            connection.close()

    thread = threading.Thread(target=run, name="warm-models", daemon=True)
    thread.start()
    return thread
