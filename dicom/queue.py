"""The names of this app's Celery tasks, sent with ``core.queue.task_send`` (ids only in a message)."""

from __future__ import annotations

from core.queue import task_send

SEND = "dicom.send"  # routed to the "default" queue (CELERY_TASK_ROUTES)

__all__ = ["SEND", "task_send"]
