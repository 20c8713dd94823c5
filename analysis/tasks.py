from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings
from django.db.models import F
from django.utils import timezone

from clinics import context
from clinics.models import User
from clinics.services import ServiceError
from clinics.tenancy import clinic_scope

from .adaptation import clinic_model_train
from .models import WebhookDelivery
from .queue import ADAPT_MODEL, DELIVER_WEBHOOK, REQUEUE_STALE, RUN_ANALYSIS
from .services import TRANSIENT_ERRORS, analysis_execute, analysis_fail, analysis_requeue_stale
from .webhooks import SEND_ERRORS, error_category, send, status_error

logger = logging.getLogger(__name__)

MAX_RETRIES = 4
WEBHOOK_MAX_ATTEMPTS = 6


@shared_task(
    name=RUN_ANALYSIS,  # routed to the "gpu" queue (CELERY_TASK_ROUTES)
    bind=True,
    acks_late=True,
    soft_time_limit=120,
    time_limit=150,
    max_retries=MAX_RETRIES,
)
def run_analysis(self, analysis_id: str, clinic_id: str) -> str:  # noqa: ANN001
    """Run one analysis inside its clinic's scope. Arguments are ids only.

    Transient errors retry with exponential backoff; after the last retry the analysis is marked
    failed with the reason. A claim held by another live worker is retried later (it will be done
    or stale by then), so a duplicated or redelivered message never produces a second result."""
    context.actor_var.set(context.Actor(system="analysis.run"))
    with clinic_scope(clinic_id):
        try:
            outcome = analysis_execute(analysis_id=analysis_id)
        except TRANSIENT_ERRORS as exc:
            if self.request.retries >= MAX_RETRIES:
                analysis_fail(analysis_id, f"gave up after {MAX_RETRIES} retries: {type(exc).__name__}")
                return "failed"
            raise self.retry(exc=exc, countdown=min(5 * 2**self.request.retries, 120)) from exc
        if outcome == "busy":
            raise self.retry(countdown=settings.ANALYSIS_STALE_AFTER_SECONDS, max_retries=MAX_RETRIES + 10)
        logger.info("analysis %s: %s", analysis_id, outcome)
        return outcome


@shared_task(name=REQUEUE_STALE, soft_time_limit=60, time_limit=90)
def requeue_stale_analyses() -> int:
    """Periodic (``CELERY_BEAT_SCHEDULE``): send again the messages of analyses whose message was lost,
    e.g. when the broker restarted without persistence. Duplicates are harmless (idempotent claim)."""
    context.actor_var.set(context.Actor(system="analysis.requeue_stale"))
    return analysis_requeue_stale()


@shared_task(
    name=DELIVER_WEBHOOK,
    bind=True,
    acks_late=True,
    soft_time_limit=30,
    time_limit=40,
    max_retries=WEBHOOK_MAX_ATTEMPTS - 1,
)
def deliver_webhook(self, delivery_id: str, clinic_id: str) -> str:  # noqa: ANN001
    """POST one delivery; any non-2xx answer (a redirect included: never followed) or failed attempt retries with
    exponential backoff. Nothing is sent to a revoked endpoint: its waiting deliveries end as ``cancelled``."""
    with clinic_scope(clinic_id):
        delivery = WebhookDelivery.objects.select_related("endpoint").get(pk=delivery_id)
        if delivery.status in ("delivered", "cancelled"):
            return f"already {delivery.status}"
        if not delivery.endpoint.is_active:
            WebhookDelivery.objects.filter(pk=delivery.pk, status="pending").update(status="cancelled")
            return "cancelled"
        started = timezone.now()
        try:
            status = send(delivery)
        except SEND_ERRORS as exc:
            # Every failed attempt is recorded and retried: network and TLS errors, malformed answers, a refused
            # URL or address, an unusable secret. The log keeps a short category, never the exception's text.
            status, error = None, error_category(exc)
            logger.info("webhook delivery %s: attempt failed (%s)", delivery_id, error)
        else:
            error = status_error(status)  # "" for 2xx; a 3xx is "redirect_refused" (never followed)
        entry = {"at": started.isoformat(), "status": status, "error": error}
        ok = status is not None and 200 <= status < 300
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            attempts=F("attempts") + 1,
            attempt_log=delivery.attempt_log + [entry],
            status="delivered" if ok else ("failed" if self.request.retries >= WEBHOOK_MAX_ATTEMPTS - 1 else "pending"),
            delivered_at=timezone.now() if ok else None,
        )
        if ok:
            return "delivered"
        if self.request.retries >= WEBHOOK_MAX_ATTEMPTS - 1:
            return "failed"
        raise self.retry(countdown=settings.WEBHOOK_RETRY_BASE_SECONDS * 2**self.request.retries)


@shared_task(name=ADAPT_MODEL, soft_time_limit=600, time_limit=660)
def adapt_model(clinic_id: str, user_id: str, modality: str) -> str:
    """Train (and evaluate) a candidate clinic model; the admin activates it from the clinic model page."""
    user = User.objects.filter(pk=user_id).first()
    context.actor_var.set(context.Actor(user=user) if user else context.Actor(system="adapt_model"))
    with clinic_scope(clinic_id):
        try:
            model = clinic_model_train(modality=modality, actor=user)
        except ServiceError as exc:
            logger.info("clinic %s: no clinic model trained: %s", clinic_id, exc.code)
            return exc.code
    return str(model.pk)
