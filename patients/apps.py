from django.apps import AppConfig
from django.core import checks


class PatientsConfig(AppConfig):
    name = "patients"

    def ready(self) -> None:
        checks.register(check_key_provider, checks.Tags.security)


def check_key_provider(app_configs: object = None, **kwargs: object) -> list[checks.CheckMessage]:
    """Fail start-up checks when the master keys cannot be loaded, not at the first upload."""
    from django.core.exceptions import ImproperlyConfigured

    from core.key_providers import key_provider, reset_key_provider

    reset_key_provider()
    try:
        key_provider().current_key_id()
    except ImproperlyConfigured as exc:
        return [checks.Error(str(exc), id="patients.E001", hint="Set MASTER_KEYS and MASTER_KEY_ID.")]
    return []
