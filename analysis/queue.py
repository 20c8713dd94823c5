"""The names of this app's Celery tasks, sent with ``core.queue.task_send`` (ids only in a message).

``analysis.*`` tasks go to the ``gpu`` queue and ``webhooks.*`` to ``default`` (``CELERY_TASK_ROUTES``).
"""

from __future__ import annotations

from core.queue import task_send

RUN_ANALYSIS = "analysis.run"
REQUEUE_STALE = "analysis.requeue_stale"  # also named by CELERY_BEAT_SCHEDULE
DELIVER_WEBHOOK = "webhooks.deliver"
ADAPT_MODEL = "analysis.adapt_model"  # a clinic's own model, trained where the base model is loaded

__all__ = ["ADAPT_MODEL", "DELIVER_WEBHOOK", "REQUEUE_STALE", "RUN_ANALYSIS", "task_send"]
