"""The Celery application.

Queues: ``gpu`` (model inference, consumed by GPU workers) and ``default`` (everything else).
Without ``REDIS_URL`` the settings make every task run in-process (``task_always_eager``), so the
embedded default needs no broker; the task code is the same in both cases.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

app = Celery("dentalscan")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
