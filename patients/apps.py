from django.apps import AppConfig
from django.core import checks

from core.key_providers import key_provider, reset_key_provider


class PatientsConfig(AppConfig):
    name = "patients"

    def ready(self) -> None:
        checks.register(check_key_provider, checks.Tags.security)
        # Imported here: these modules import models, which exist only once the app registry is ready.
        from clinics.access import route_guard_register
        from clinics.views_base import page_context_register

        from . import pages, tasks  # noqa: F401 - tasks: registers this app's Celery tasks (core.queue finds them)
        from .restricted import restricted_route_guard

        # clinics closes restricted records' routes and shows patient figures through these hooks.
        route_guard_register(restricted_route_guard)
        page_context_register("clinics:home", pages.home_context)
        page_context_register("clinics:audit", pages.audit_context)


def check_key_provider(app_configs: object = None, **kwargs: object) -> list[checks.CheckMessage]:
    """Fail start-up checks when the master keys cannot be loaded, not at the first upload."""
    from django.core.exceptions import ImproperlyConfigured

    reset_key_provider()
    try:
        key_provider().current_key_id()
    except ImproperlyConfigured as exc:
        return [checks.Error(str(exc), id="patients.E001", hint="Set MASTER_KEYS and MASTER_KEY_ID.")]
    return []
