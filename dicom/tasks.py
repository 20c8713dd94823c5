from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings

from clinics import context
from clinics.tenancy import clinic_scope

from .models import DicomNode, DicomSend, SendStatus
from .queue import SEND
from .sender import SendFailed, c_store, send_object
from .services import send_record_attempt

logger = logging.getLogger(__name__)


@shared_task(name=SEND, bind=True, acks_late=True, soft_time_limit=120, time_limit=150, max_retries=None)
def send_to_pacs(self, send_id: str, clinic_id: str, reason: str = "") -> str:  # noqa: ANN001
    """Store one report version's SR (or secondary captures) on the clinic's PACS. Ids only in the message.

    Idempotent: a send already ``sent`` is not sent again, and every attempt sends the same object (its UIDs were
    fixed when it was queued). A failed attempt (PACS down, association rejected, failure status) is logged and
    retried with exponential back-off up to ``DICOM_SEND_MAX_ATTEMPTS``; then the send is ``failed`` and the clinic
    admin sees it, with a resend action."""
    context.actor_var.set(context.Actor(system="dicom.send"))
    with clinic_scope(clinic_id):
        send = DicomSend.objects.select_related("report__visit__patient").filter(pk=send_id).first()
        if send is None or send.status == SendStatus.SENT:
            return "already sent" if send else "gone"
        if send.status == SendStatus.FAILED and reason != "resend":
            return "failed"
        node = DicomNode.objects.first()
        final = self.request.retries + 1 >= settings.DICOM_SEND_MAX_ATTEMPTS
        try:
            datasets = send_object(send)
        except Exception as exc:  # noqa: BLE001 - cannot be built: retrying changes nothing; the admin sees it
            logger.exception("dicom send %s: could not build the object", send_id)
            send_record_attempt(send=send, ok=False, detail=f"build_failed:{type(exc).__name__}", final=True)
            return "failed"
        try:
            if node is None or not node.has_destination:
                raise SendFailed("no_destination")
            c_store(node, datasets)
        except (SendFailed, OSError, TimeoutError) as exc:
            detail = str(exc) if isinstance(exc, SendFailed) else type(exc).__name__
            send_record_attempt(send=send, ok=False, detail=detail, final=final)
            logger.info("dicom send %s: attempt failed (%s)", send_id, detail)
            if final:
                return "failed"
            countdown = min(settings.DICOM_SEND_RETRY_BASE_SECONDS * 2**self.request.retries, 3600)
            raise self.retry(countdown=countdown, max_retries=settings.DICOM_SEND_MAX_ATTEMPTS - 1) from exc
        send_record_attempt(send=send, ok=True, detail="stored", final=True)
        return "sent"
