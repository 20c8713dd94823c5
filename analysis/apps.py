from django.apps import AppConfig


class AnalysisConfig(AppConfig):
    name = "analysis"
    verbose_name = "Analysis: model registry, jobs, findings and reviews"

    def ready(self) -> None:
        # Imported once the models are loaded (tasks.py imports them), as Django requires: this registers the
        # tasks with the Celery app in every process, so ``queue.task_send`` finds them by name (and runs them
        # in-process under task_always_eager) without any caller importing tasks.py.
        from . import tasks  # noqa: F401
