"""Settings for the processes that the fault tests start (web server, workers): the test settings plus
the knobs the scenarios turn through environment variables.

- ``ANALYSIS_REQUEUE_AFTER_SECONDS`` / ``ANALYSIS_REQUEUE_EVERY_SECONDS``: the lost-message sweep
  (``analysis.requeue_stale``), run by the beat embedded in a worker started with ``-B``.
- ``FAULT_STORAGE_SWITCH``: path of a file; while it exists, image blob writes fail half-way
  (``tests.faults.flaky_storage``).
"""

import os

from config.settings.test import *  # noqa: F403
from config.settings.test import STORAGES

ANALYSIS_REQUEUE_AFTER_SECONDS = float(os.environ.get("ANALYSIS_REQUEUE_AFTER_SECONDS", "300"))
CELERY_BEAT_SCHEDULE = {
    "analysis-requeue-stale": {
        "task": "analysis.requeue_stale",
        "schedule": float(os.environ.get("ANALYSIS_REQUEUE_EVERY_SECONDS", "60")),
    }
}

if os.environ.get("FAULT_STORAGE_SWITCH"):
    STORAGES = {
        **STORAGES,
        "images": {**STORAGES["images"], "BACKEND": "tests.faults.flaky_storage.FlakyStorage"},
    }
