from django.apps import AppConfig
from django.core import signals

from core import queue

from .signals import password_replaced


class ClinicsConfig(AppConfig):
    name = "clinics"
    verbose_name = "Clinics, members and audit trail"

    def ready(self) -> None:
        # Imported here: both modules import the models, which exist only once the app registry is ready; tasks is
        # imported for its side effect, registering this app's Celery tasks, which core.queue.task_send finds by
        # name in every process (web, worker, management commands).
        from . import tasks  # noqa: F401
        from .sessions import sessions_end_on_password_replaced

        # Mails whose cost must not show in the answer run after the response in the embedded default.
        signals.request_started.connect(queue.request_started, dispatch_uid="core.queue.request_started")
        signals.request_finished.connect(queue.request_finished, dispatch_uid="core.queue.request_finished")
        password_replaced.connect(sessions_end_on_password_replaced, dispatch_uid="clinics.sessions.password_replaced")
