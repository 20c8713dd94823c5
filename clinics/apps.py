from django.apps import AppConfig

from .signals import password_replaced


class ClinicsConfig(AppConfig):
    name = "clinics"
    verbose_name = "Clinics, members and audit trail"

    def ready(self) -> None:
        # Imported here: clinics.sessions imports the models, which exist only once the app registry is ready.
        from .sessions import sessions_end_on_password_replaced

        password_replaced.connect(sessions_end_on_password_replaced, dispatch_uid="clinics.sessions.password_replaced")
