"""The bottom layer: what every app needs and that owns no domain (no app imports here).

Plain Python: ``conditions``, ``crypto``, ``errors``. ``key_providers`` reads Django settings."""
