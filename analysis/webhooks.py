"""Outgoing webhooks: per-clinic endpoints, HMAC-SHA256 signatures with a timestamp, retries with
backoff, and every delivery attempt logged.

Signature header: ``X-DentalScan-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``.
Receivers should recompute it and reject timestamps older than five minutes.

Clinic admins register endpoints (``webhook_register``: the URL is checked, the signing secret is made
here and returned once), send a test event to one of them (``webhook_send_test``) and revoke them
(``webhook_revoke``); each of these is audited in the same transaction, with ids only and never the
secret. The secret is kept encrypted with the clinic's data key (``secret_seal``/``webhook_secret``).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import secrets
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from clinics import audit
from clinics.services import ServiceError
from clinics.tenancy import require_clinic_id
from core import crypto
from patients.keys import clinic_key

from .models import WebhookDelivery, WebhookEndpoint
from .queue import DELIVER_WEBHOOK, task_send

# The events the platform emits (``webhook_emit`` refuses any other), i.e. what an endpoint may subscribe to.
WEBHOOK_EVENTS: tuple[str, ...] = ("analysis.completed", "report.signed")
# Sent only to one endpoint on an admin's request, whatever it subscribed to.
TEST_EVENT = "webhook.test"
SECRET_PREFIX = "whsec_"
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
URL_MAX_LENGTH = 500


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


# --- The signing secret, encrypted at rest -------------------------------------------------------


def _secret_aad(endpoint_id: object, clinic_id: object) -> bytes:
    return f"webhook-secret:{endpoint_id}:{clinic_id}".encode()


def secret_seal(*, endpoint_id: uuid.UUID, clinic_id: object, secret: str) -> bytes:
    """The secret encrypted with the data key of the clinic in scope, bound to the endpoint and clinic."""
    return crypto.encrypt(clinic_key(), secret.encode(), _secret_aad(endpoint_id, clinic_id))


def webhook_secret(endpoint: WebhookEndpoint) -> str:
    """The endpoint's signing secret, for signing only (never shown again after registration). Needs the
    endpoint's clinic in scope; raises ``crypto.IntegrityFailure`` for a ciphertext moved to another row.
    Rows written straight through the ORM with a plaintext ``secret`` (older code, tests) still sign with it."""
    if endpoint.secret_encrypted:
        blob = bytes(endpoint.secret_encrypted)
        return crypto.decrypt(clinic_key(), blob, _secret_aad(endpoint.pk, endpoint.clinic_id)).decode()
    return endpoint.secret


# --- Validation ----------------------------------------------------------------------------------


def _local_http_allowed() -> bool:
    """Plain http (and internal addresses) only where the installation is not production: in DEBUG, and under
    the local and test settings (``DEMO_DATA_ALLOWED``, False in production)."""
    return bool(settings.DEBUG or getattr(settings, "DEMO_DATA_ALLOWED", False))


def _is_internal(host: str) -> bool:
    if host in LOCAL_HOSTS or host.endswith((".localhost", ".local", ".internal")):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False  # a host name is judged by its form: one that resolves to an internal address passes
    return not address.is_global


def webhook_url_validate(url: str) -> str:
    """The URL an endpoint may have: https to a public host; http only to localhost/127.0.0.1/[::1] outside
    production. Never credentials in it (they would be shown in lists and stored in clear)."""
    url = (url or "").strip()
    if not url:
        raise ServiceError("invalid_url", "A webhook needs a URL.")
    if len(url) > URL_MAX_LENGTH:
        raise ServiceError("invalid_url", f"A webhook URL has at most {URL_MAX_LENGTH} characters.")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise ServiceError("invalid_url", "A webhook URL must start with https:// (other schemes are refused).")
    try:
        URLValidator(schemes=["https", "http"])(url)
    except ValidationError as exc:
        raise ServiceError("invalid_url", "This is not a valid URL.") from exc
    if parts.username is not None or parts.password is not None:
        raise ServiceError(
            "invalid_url", "Put no credentials in a webhook URL: receivers verify the signature header instead."
        )
    host = (parts.hostname or "").lower()
    local_allowed = _local_http_allowed()
    if scheme == "http" and not (local_allowed and host in LOCAL_HOSTS):
        raise ServiceError(
            "invalid_url",
            "A webhook URL must use https://; plain http:// is accepted only for localhost or 127.0.0.1 "
            "in development.",
        )
    if not local_allowed and _is_internal(host):
        raise ServiceError("invalid_url", "A webhook URL must point to a public host, not an internal address.")
    return url


def _events_validate(events: list[str] | None) -> list[str]:
    chosen = sorted(set(events or []))
    unknown = [e for e in chosen if e not in WEBHOOK_EVENTS]
    if unknown:
        raise ServiceError(
            "invalid_event",
            f"Unknown event(s): {', '.join(unknown)}. Events: {', '.join(WEBHOOK_EVENTS)} (none: every event).",
        )
    return chosen


# --- Reads ---------------------------------------------------------------------------------------


def webhook_list() -> QuerySet[WebhookEndpoint]:
    """The clinic's endpoints, active first, newest first."""
    return WebhookEndpoint.objects.order_by("-is_active", "-created_at", "id")


def webhook_get(pk: object) -> WebhookEndpoint:
    """One endpoint of the clinic in scope; another clinic's raises ``DoesNotExist`` like a missing one."""
    return WebhookEndpoint.objects.get(pk=pk)


def webhook_deliveries(endpoint: WebhookEndpoint | None = None) -> QuerySet[WebhookDelivery]:
    """Deliveries newest first: of one endpoint, or of every endpoint of the clinic."""
    deliveries = WebhookDelivery.objects.select_related("endpoint").order_by("-created_at", "id")
    return deliveries.filter(endpoint=endpoint) if endpoint is not None else deliveries


def delivery_last_attempt(delivery: WebhookDelivery) -> dict[str, Any]:
    """The last attempt's log entry (``at``, ``status``: the HTTP status or None, ``error``), or {}."""
    return delivery.attempt_log[-1] if delivery.attempt_log else {}


# --- Writes --------------------------------------------------------------------------------------


def _queue(endpoint: WebhookEndpoint, event: str, payload: dict[str, Any]) -> WebhookDelivery:
    """One delivery row, sent by ``webhooks.deliver`` after the caller's transaction commits (ids only)."""
    clinic_id = str(require_clinic_id())
    body = {"event": event, "created_at": timezone.now().isoformat(), "clinic_id": clinic_id, "data": payload}
    delivery = WebhookDelivery.objects.create(endpoint=endpoint, event=event, payload=body)
    delivery_id = str(delivery.id)
    transaction.on_commit(lambda: task_send(DELIVER_WEBHOOK, delivery_id, clinic_id))
    return delivery


def webhook_emit(*, event: str, payload: dict[str, Any]) -> list[WebhookDelivery]:
    """Record one delivery per subscribed endpoint of the clinic in scope and send after commit.
    Payloads carry ids only, never patient data."""
    if event not in WEBHOOK_EVENTS:
        raise ValueError(f"{event!r} is not in WEBHOOK_EVENTS: add it there so endpoints can subscribe")
    deliveries = []
    for endpoint in WebhookEndpoint.objects.filter(is_active=True):
        if endpoint.events and event not in endpoint.events:
            continue
        deliveries.append(_queue(endpoint, event, payload))
    return deliveries


def webhook_register(*, url: str, events: list[str] | None = None) -> tuple[WebhookEndpoint, str]:
    """Register an endpoint of the clinic in scope. Returns it and its signing secret, which is shown once
    (the caller returns it to the admin and keeps it nowhere); the row holds it encrypted only."""
    clinic_id = require_clinic_id()
    url = webhook_url_validate(url)
    events = _events_validate(events)
    secret = f"{SECRET_PREFIX}{secrets.token_urlsafe(32)}"
    with transaction.atomic():
        endpoint = WebhookEndpoint(id=uuid.uuid4(), url=url, events=events)
        endpoint.secret_encrypted = secret_seal(endpoint_id=endpoint.id, clinic_id=clinic_id, secret=secret)
        endpoint.save(force_insert=True)
        audit.record(
            action="webhook.register",
            clinic_id=clinic_id,
            object_type="webhook",
            object_id=endpoint.pk,
            details={"events": events},
        )
    return endpoint, secret


def webhook_revoke(*, endpoint: WebhookEndpoint) -> WebhookEndpoint:
    """Deactivate an endpoint (idempotent): nothing more is sent to it, deliveries still waiting for a retry
    are cancelled, and the endpoint and its delivery history are kept."""
    clinic_id = require_clinic_id()
    with transaction.atomic():
        endpoint = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
        was_active = endpoint.is_active
        if was_active:
            endpoint.is_active, endpoint.revoked_at = False, timezone.now()
            endpoint.save(update_fields=["is_active", "revoked_at"])
        cancelled = WebhookDelivery.objects.filter(endpoint=endpoint, status="pending").update(status="cancelled")
        audit.record(
            action="webhook.revoke",
            clinic_id=clinic_id,
            object_type="webhook",
            object_id=endpoint.pk,
            details={"already_revoked": not was_active, "cancelled_deliveries": cancelled},
        )
    return endpoint


def webhook_send_test(*, endpoint: WebhookEndpoint) -> WebhookDelivery:
    """Queue a ``webhook.test`` event to this endpoint only, through the usual signed and logged delivery."""
    clinic_id = require_clinic_id()
    with transaction.atomic():
        endpoint = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
        if not endpoint.is_active:
            raise ServiceError("webhook_revoked", "This webhook is revoked: register a new one.", 409)
        delivery = _queue(endpoint, TEST_EVENT, {"webhook_id": str(endpoint.pk)})
        audit.record(
            action="webhook.test",
            clinic_id=clinic_id,
            object_type="webhook",
            object_id=endpoint.pk,
            details={"delivery_id": str(delivery.pk)},
        )
    return delivery


def send(delivery: WebhookDelivery, *, timeout: float = 10.0) -> int:
    """POST one delivery; returns the HTTP status. Raises on network errors."""
    import urllib.request

    body = json.dumps(delivery.payload, sort_keys=True).encode()
    request = urllib.request.Request(  # noqa: S310 - the URL is an admin-configured https/http endpoint
        delivery.endpoint.url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "DentalScan-Webhooks/1",
            "X-DentalScan-Event": delivery.event,
            "X-DentalScan-Delivery": str(delivery.id),
            "X-DentalScan-Signature": signature(webhook_secret(delivery.endpoint), int(time.time()), body),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
