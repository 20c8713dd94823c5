import os
import sys

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")
application = get_wsgi_application()


def _warm_in_process_analysis() -> None:
    """Embedded default (no broker): analyses run in this web process, so its models are loaded and warmed before
    it serves the first request (``manage.py runserver`` loads this module before it listens)."""
    from django.conf import settings
    from django.db import connection

    if not settings.CELERY_TASK_ALWAYS_EAGER or not settings.ANALYSIS_WARMUP:
        return
    from analysis.warmup import describe, warm_models  # needs the apps loaded: after get_wsgi_application

    print("Loading the analysis models…", file=sys.stderr, flush=True)
    ready = describe(warm_models())
    connection.close()
    print(f"Models ready ({ready}). DentalScan is ready.", file=sys.stderr, flush=True)


_warm_in_process_analysis()


def _start_up() -> None:
    from config.process import one_model_thread_when_workers_analyse, tune_gc

    one_model_thread_when_workers_analyse()
    tune_gc()


_start_up()
