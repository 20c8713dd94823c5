"""Outgoing webhooks: per-clinic endpoints, HMAC-SHA256 signatures with a timestamp, retries with
backoff, and every delivery attempt logged.

Signature header: ``X-DentalScan-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``.
Receivers should recompute it and reject timestamps older than five minutes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

from django.db import transaction
from django.utils import timezone

from clinics.tenancy import require_clinic_id

from .models import WebhookDelivery, WebhookEndpoint


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def webhook_emit(*, event: str, payload: dict[str, Any]) -> list[WebhookDelivery]:
    """Record one delivery per subscribed endpoint of the clinic in scope and send after commit.
    Payloads carry ids only, never patient data."""
    from .tasks import deliver_webhook

    deliveries = []
    clinic_id = str(require_clinic_id())
    for endpoint in WebhookEndpoint.objects.filter(is_active=True):
        if endpoint.events and event not in endpoint.events:
            continue
        body = {"event": event, "created_at": timezone.now().isoformat(), "clinic_id": clinic_id, "data": payload}
        delivery = WebhookDelivery.objects.create(endpoint=endpoint, event=event, payload=body)
        deliveries.append(delivery)
        delivery_id = str(delivery.id)
        transaction.on_commit(lambda d=delivery_id: deliver_webhook.delay(d, clinic_id))
    return deliveries


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
            "X-DentalScan-Signature": signature(delivery.endpoint.secret, int(time.time()), body),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
