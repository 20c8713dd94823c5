from __future__ import annotations

from celery import shared_task

from clinics import context
from clinics.services import ServiceError
from clinics.tenancy import clinic_scope

from .models import Image
from .queue import DERIVE_IMAGE
from .selectors import image_get
from .services import image_derive


@shared_task(name=DERIVE_IMAGE, acks_late=True, soft_time_limit=60, time_limit=90)
def derive_image(image_id: str, clinic_id: str) -> str:
    """Make an upload's preview and thumbnail (ids only in the message). Idempotent: a redelivered message, or one
    that comes after a read already made them, does nothing; an image erased meanwhile is skipped; a damaged
    original is audited (``image.integrity_failed``) and left as it is. Any other failure only costs the worker's
    time: the first read of a missing variant makes it (``patients.services.image_read``)."""
    context.actor_var.set(context.Actor(system=DERIVE_IMAGE))
    with clinic_scope(clinic_id):
        try:
            image = image_get(image_id)
        except Image.DoesNotExist:
            return "gone"
        try:
            return "made" if image_derive(image=image) else "nothing to do"
        except ServiceError as exc:  # a damaged original: audited by image_derive; a read will say so too
            return exc.code
