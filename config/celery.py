"""The Celery application and its queues.

Queues: ``gpu`` (model inference, consumed by GPU workers: ``celery -A config worker -Q gpu``) and
``default`` (everything else). Without ``REDIS_URL`` the settings make every task run in-process
(``task_always_eager``), so the embedded default needs no broker; the task code is the same.
Task arguments are ids only: never patient data in a broker message.
"""

import enum
import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")


class Queue(enum.StrEnum):
    DEFAULT = "default"
    GPU = "gpu"


app = Celery("dentalscan")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def _runs_analyses() -> bool:
    """This worker consumes the ``gpu`` queue (``-Q``), where the analyses go."""
    return Queue.GPU in app.amqp.queues.consume_from


@signals.worker_process_init.connect
def _warm_pool_process(**kwargs: object) -> None:
    """Each prefork pool process loads and warms its models as it starts (analysis.warmup)."""
    from django.conf import settings

    if settings.ANALYSIS_WARMUP and _runs_analyses():
        from analysis.warmup import warm_models_in_background  # not at the top: this module loads before the apps

        warm_models_in_background()


@signals.worker_ready.connect
def _warm_solo_worker(sender: object = None, **kwargs: object) -> None:
    """A worker without a process pool (``--pool solo`` or ``threads``) runs its tasks in this process."""
    from django.conf import settings

    pool = getattr(getattr(getattr(sender, "controller", None), "pool_cls", None), "__module__", "")
    if settings.ANALYSIS_WARMUP and _runs_analyses() and not str(pool).endswith("prefork"):
        from analysis.warmup import warm_models_in_background  # not at the top: this module loads before the apps

        warm_models_in_background()
