"""Sending this app's Celery tasks: by name, from this one module (ids only in a message).

Nothing imports ``tasks.py`` to send a task, so the tasks module may import the services that send them
without a cycle. The queue of each task comes from its name (``CELERY_TASK_ROUTES``: ``analysis.*`` on
``gpu``, ``webhooks.*`` on ``default``).

A task is looked up in the Celery app's registry and sent with ``delay``, not with ``send_task``:
``send_task`` ignores ``task_always_eager``, so in the embedded default (no broker) its message would be
dropped instead of the task running in-process. ``AnalysisConfig.ready`` imports ``tasks.py``, which puts
the tasks in that registry in every process (web, worker, management commands).
"""

from __future__ import annotations

from celery import current_app

RUN_ANALYSIS = "analysis.run"
REQUEUE_STALE = "analysis.requeue_stale"  # also named by CELERY_BEAT_SCHEDULE
DELIVER_WEBHOOK = "webhooks.deliver"


def task_send(name: str, *args: str) -> None:
    """Send the task ``name`` with ``args`` (ids only), or run it now under ``task_always_eager``.
    Raises what the broker raises when it cannot take the message."""
    current_app.tasks[name].delay(*args)
