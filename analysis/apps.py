from django.apps import AppConfig

from patients.exports import clinical_record_register


class AnalysisConfig(AppConfig):
    name = "analysis"
    verbose_name = "Analysis: model registry, jobs, findings and reviews"

    def ready(self) -> None:
        # Imported here, not at the top: both import models, which exist only once the apps are loaded.
        # ``tasks`` registers this app's Celery tasks in every process (web, worker, commands), so that
        # ``queue.task_send`` finds them by name (and runs them in-process under task_always_eager) without
        # anything importing tasks.py to send one.
        from . import tasks  # noqa: F401
        from .exports import patient_clinical_record

        # A patient's export (patients.services.patient_export) gets this app's part; patients imports nothing
        # of this app.
        clinical_record_register(patient_clinical_record)
