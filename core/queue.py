"""Sending Celery tasks by name: nothing imports an app's ``tasks.py`` to send one of its tasks, so a tasks module
may import the services that send its tasks without an import cycle. Each app keeps the names of its tasks in its
own ``queue.py``; the queue a task goes to comes from its name (``CELERY_TASK_ROUTES``).

A task is looked up in the Celery app's registry and sent with ``delay``, not with ``send_task``: ``send_task``
ignores ``task_always_eager``, so in the embedded default (no broker) its message would be dropped instead of the
task running in-process. Each app's ``AppConfig.ready`` imports its ``tasks.py``, which puts its tasks in that
registry in every process (web, worker, management commands).

``task_send_after_response`` is for work whose cost must not show in the answer (mails to an address that may or
may not have an account): with a broker it is sent like any task, and a worker does it; in the embedded default
(``task_always_eager``, no broker) it runs in the same process once the response has been sent
(``request_finished``, which a WSGI server sends when it closes the response), not inside the request.
"""

from __future__ import annotations

import contextvars
import logging

from celery import current_app

logger = logging.getLogger(__name__)

# Tasks held back until the current request's response is sent; None outside a request.
_after_response: contextvars.ContextVar[list[tuple[str, tuple[object, ...]]] | None] = contextvars.ContextVar(
    "tasks_after_response", default=None
)


def task_send(name: str, *args: object) -> None:
    """Send the task ``name`` with ``args`` (ids and plain values only), or run it now under ``task_always_eager``.
    Raises what the broker raises when it cannot take the message."""
    current_app.tasks[name].delay(*args)


def task_send_after_response(name: str, *args: object) -> None:
    """Send the task ``name`` to a worker; without a broker, run it in-process after the current response is sent
    (at once when no request is being answered: a management command, a worker)."""
    held = _after_response.get()
    if current_app.conf.task_always_eager and held is not None:
        held.append((name, args))
        return
    task_send(name, *args)


def request_started(**kwargs: object) -> None:
    """Receiver of ``django.core.signals.request_started``."""
    _after_response.set([])


def request_finished(**kwargs: object) -> None:
    """Receiver of ``django.core.signals.request_finished``: runs the held tasks, each on its own (one failing
    is logged and does not stop the others)."""
    held = _after_response.get()
    _after_response.set(None)
    for name, args in held or []:
        try:
            task_send(name, *args)
        except Exception:  # noqa: BLE001 - the response is gone: nobody to tell but the log
            logger.exception("task %s run after the response failed", name)
