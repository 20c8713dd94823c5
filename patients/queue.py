"""The names of the tasks this app sends, with ``core.queue`` (ids only in a message). ``patients.*`` tasks go to
the ``default`` queue (``CELERY_TASK_ROUTES``): image housekeeping, not model work."""

from __future__ import annotations

DERIVE_IMAGE = "patients.derive_image"  # an upload's preview and thumbnail, made after it was answered

__all__ = ["DERIVE_IMAGE"]
