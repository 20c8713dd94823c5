from django.apps import AppConfig


class DemoConfig(AppConfig):
    """``manage.py seed_demo``: demo clinics, people, API keys and sample visits. The top app layer: it uses
    every app below it and none uses it (demo data only; the command refuses production settings)."""

    name = "demo"
    verbose_name = "Demo data"
