"""Sending Celery tasks by name: nothing imports an app's ``tasks.py`` to send one of its tasks, so a tasks module
may import the services that send its tasks without an import cycle. Each app keeps the names of its tasks in its
own ``queue.py``; the queue a task goes to comes from its name (``CELERY_TASK_ROUTES``).

A task is looked up in the Celery app's registry and sent with ``delay``, not with ``send_task``: ``send_task``
ignores ``task_always_eager``, so in the embedded default (no broker) its message would be dropped instead of the
task running in-process. Each app's ``AppConfig.ready`` imports its ``tasks.py``, which puts its tasks in that
registry in every process (web, worker, management commands).
"""

from __future__ import annotations

from celery import current_app


def task_send(name: str, *args: object) -> None:
    """Send the task ``name`` with ``args`` (ids and plain values only), or run it now under ``task_always_eager``.
    Raises what the broker raises when it cannot take the message."""
    current_app.tasks[name].delay(*args)
