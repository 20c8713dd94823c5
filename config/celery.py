"""The Celery application and its queues.

Queues: ``gpu`` (model inference, consumed by GPU workers: ``celery -A config worker -Q gpu``) and
``default`` (everything else). Without ``REDIS_URL`` the settings make every task run in-process
(``task_always_eager``), so the embedded default needs no broker; the task code is the same.
Task arguments are ids only: never patient data in a broker message.
"""

import enum
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")


class Queue(enum.StrEnum):
    DEFAULT = "default"
    GPU = "gpu"


app = Celery("dentalscan")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
