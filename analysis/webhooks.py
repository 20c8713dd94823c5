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
import http.client
import ipaddress
import json
import re
import secrets
import socket
import ssl
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

from celery.exceptions import SoftTimeLimitExceeded
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
    endpoint's clinic in scope; raises ``crypto.IntegrityFailure`` for a ciphertext moved to another row, and for
    a row without an encrypted secret. The legacy plaintext ``secret`` column is never read (migration 0007 moved
    its values; a row written with only a plaintext secret cannot sign)."""
    blob = bytes(endpoint.secret_encrypted or b"")
    if not blob:
        raise crypto.IntegrityFailure(f"webhook {endpoint.pk} has no encrypted signing secret")
    return crypto.decrypt(clinic_key(), blob, _secret_aad(endpoint.pk, endpoint.clinic_id)).decode()


# --- Validation ----------------------------------------------------------------------------------


def _local_http_allowed() -> bool:
    """Plain http (and internal addresses) only where the installation is not production: in DEBUG, and under
    the local and test settings (``DEMO_DATA_ALLOWED``, False in production)."""
    return bool(settings.DEBUG or getattr(settings, "DEMO_DATA_ALLOWED", False))


def normalise_host(host: str) -> str:
    """A host as it is resolved: lowercase, without the trailing dot(s) of a fully qualified name
    (``localhost.`` is ``localhost``), an internationalised name in its IDNA (punycode) form, an IPv6 literal
    without brackets. Raises ``ValueError`` for a name IDNA cannot encode."""
    host = host.strip().strip("[]").rstrip(".").lower()
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return host
    try:
        return host.encode("idna").decode("ascii").lower()
    except UnicodeError as exc:
        raise ValueError("not a valid host name") from exc


def _is_internal(host: str) -> bool:
    """Whether a host is internal by its form (a loopback/private/link-local/reserved literal or an internal
    name). A public-looking name may still resolve to an internal address: ``send`` checks what it resolves to."""
    try:
        host = normalise_host(host)
    except ValueError:
        return True  # not a host we would send to
    if not host or host in LOCAL_HOSTS or host.endswith((".localhost", ".local", ".internal")):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return not address_allowed(address, local_allowed=False)


NAT64_PREFIX = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052: the IPv4 address in the last 32 bits
NAT64_LOCAL_PREFIX = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215
IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # deprecated ::a.b.c.d (:: and ::1 are judged as themselves)


def address_allowed(address: ipaddress.IPv4Address | ipaddress.IPv6Address, *, local_allowed: bool) -> bool:
    """Whether a webhook may connect to this (resolved) address: a global unicast address only; loopback too
    exactly when local http is allowed (development and tests, ``_local_http_allowed``). Never private,
    link-local (169.254.169.254, the cloud metadata service), unique-local (fc00::/7), multicast or reserved. An IPv6
    address that carries an IPv4 one (mapped, 6to4, NAT64's well-known prefix, the old IPv4-compatible form) is
    judged by that IPv4 address: on a NAT64 network 64:ff9b::a00:1 reaches 10.0.0.1."""
    if isinstance(address, ipaddress.IPv6Address):
        if address in NAT64_LOCAL_PREFIX:
            return False  # RFC 8215's local-use prefix: a network's own translator, never a public host
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and (address in NAT64_PREFIX or (address in IPV4_COMPATIBLE and int(address) > 1)):
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            address = embedded  # ::ffff:10.0.0.1 is 10.0.0.1
    if address.is_loopback:
        return local_allowed
    return address.is_global and not address.is_multicast


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
    try:
        host = normalise_host(parts.hostname or "")
    except ValueError as exc:
        raise ServiceError("invalid_url", "This is not a valid URL.") from exc
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
    """The last attempt's log entry (``at``, ``status``: the HTTP status or None, ``error``: a short category such
    as ``timeout`` or ``http_status_500``, "" on success), or {}. An entry written before errors were categorised
    (raw exception text) shows as ``network_error``."""
    if not delivery.attempt_log:
        return {}
    entry = dict(delivery.attempt_log[-1])
    error = entry.get("error") or ""
    if error and not ERROR_CATEGORY_RE.match(error):
        entry["error"] = "network_error"
    return entry


# --- Writes --------------------------------------------------------------------------------------


def _queue(endpoint: WebhookEndpoint, event: str, payload: dict[str, Any]) -> WebhookDelivery:
    """One delivery row, sent by ``webhooks.deliver`` after the caller's transaction commits (ids only)."""
    clinic_id = str(require_clinic_id())
    body = {"event": event, "created_at": timezone.now().isoformat(), "clinic_id": clinic_id, "data": payload}
    delivery = WebhookDelivery.objects.create(endpoint=endpoint, event=event, payload=body)
    delivery_id = str(delivery.id)
    # robust: a broker refusing the message after the commit must not turn a committed upload or result into an
    # error (the client would retry and store it twice); the delivery stays pending, visible on the webhooks page
    transaction.on_commit(lambda: task_send(DELIVER_WEBHOOK, delivery_id, clinic_id), robust=True)
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


# --- Sending -------------------------------------------------------------------------------------


class WebhookSendError(Exception):
    """An attempt refused or failed before any HTTP status; ``category`` is the short code the log keeps."""

    def __init__(self, category: str, detail: str = "") -> None:
        super().__init__(detail or category)
        self.category = category


# What an attempt's log entry says went wrong: short codes, never an exception's text (which may carry internal
# addresses, host names or response fragments an admin should not be shown).
ERROR_CATEGORY_RE = re.compile(r"^[a-z0-9_]{1,40}$")


# What ``send`` raises for a failed attempt (the delivery task records and retries each): network and TLS errors,
# malformed answers (``http.client.HTTPException``), bad values, a refused URL or address, an unusable secret, and
# the task's soft time limit (a slow receiver, or several addresses that each take their 10 s timeout): a failed
# attempt like the others, not an error that would leave the delivery pending with nothing logged.
SEND_ERRORS: tuple[type[BaseException], ...] = (
    SoftTimeLimitExceeded,
    OSError,
    http.client.HTTPException,
    ValueError,
    WebhookSendError,
    crypto.IntegrityFailure,
)


def error_category(exc: BaseException) -> str:
    """The short category of a failed attempt's exception (``timeout``, ``connection_refused``, ``tls_error``,
    ``dns_error``, ``address_not_allowed``...)."""
    if isinstance(exc, WebhookSendError):
        return exc.category
    if isinstance(exc, crypto.IntegrityFailure):
        return "secret_unavailable"
    if isinstance(exc, (ssl.SSLError, ssl.CertificateError)):
        return "tls_error"
    if isinstance(exc, socket.gaierror):
        return "dns_error"
    if isinstance(exc, (TimeoutError, SoftTimeLimitExceeded)):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "connection_refused"
    if isinstance(exc, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError, http.client.RemoteDisconnected)):
        return "connection_closed"
    if isinstance(exc, http.client.HTTPException):
        return "bad_response"
    if isinstance(exc, OSError):
        return "network_error"
    if isinstance(exc, ValueError):
        return "invalid_request"
    return "error"


def status_error(status: int) -> str:
    """The error category of an answered attempt that is not a success ("" for 2xx): a redirect is never followed."""
    if 200 <= status < 300:
        return ""
    if 300 <= status < 400:
        return "redirect_refused"
    return f"http_status_{status}"


def _resolve(host: str, port: int) -> tuple[str, ...]:
    """Resolve once and vet every address: returns them, to connect to in order. Refuses a name any of whose addresses
    is not public (DNS rebinding: a public name pointing at 127.0.0.1, 10.x, 169.254.169.254, ::1, fc00::/7...)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise WebhookSendError("dns_error") from exc
    addresses = [info[4][0] for info in infos]
    if not addresses:
        raise WebhookSendError("dns_error")
    local_allowed = _local_http_allowed()
    for raw in addresses:
        try:
            address = ipaddress.ip_address(raw.split("%", 1)[0])  # an IPv6 scope id is not part of the address
        except ValueError as exc:
            raise WebhookSendError("address_not_allowed") from exc
        if not address_allowed(address, local_allowed=local_allowed):
            raise WebhookSendError("address_not_allowed")
    return tuple(dict.fromkeys(addresses))  # in the resolver's order, once each


def _pinned_connector(pinned: str | tuple[str, ...]) -> Any:
    """A ``socket.create_connection`` replacement that ignores the host it is given and connects to the vetted
    address(es) (same port), trying each in turn as ``create_connection`` does with a resolver's answers."""
    addresses = (pinned,) if isinstance(pinned, str) else tuple(pinned)

    def connect(
        address: tuple[str, int], timeout: Any = socket._GLOBAL_DEFAULT_TIMEOUT, source: Any = None
    ) -> socket.socket:  # type: ignore[attr-defined]
        error: OSError | None = None
        for pinned_address in addresses:
            try:
                return socket.create_connection((pinned_address, address[1]), timeout, source)
            except OSError as exc:
                error = exc
        raise error or OSError("no address to connect to")

    return connect


class PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to an address already resolved and vetted (``address``, or several tried in turn), whatever the
    host name would resolve to now; the ``Host`` header still names ``host``. (``http.client`` connects through
    the instance attribute ``_create_connection``, which is replaced here.)"""

    def __init__(self, host: str, port: int, *, address: str | tuple[str, ...], timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.pinned_address = address
        self._create_connection = _pinned_connector(address)


class PinnedHTTPSConnection(http.client.HTTPSConnection):
    """TLS to the vetted address, with SNI and certificate verification for the host name (``check_hostname``):
    ``HTTPSConnection.connect`` wraps the socket with ``server_hostname=self.host``."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        address: str | tuple[str, ...],
        timeout: float,
        context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(host, port, timeout=timeout, context=context or ssl.create_default_context())
        self.pinned_address = address
        self._create_connection = _pinned_connector(address)


def send(delivery: WebhookDelivery, *, timeout: float = 10.0) -> int:
    """POST one delivery; returns the HTTP status, a 3xx included (redirects are never followed).

    Invariants (SSRF): the URL is checked again against the rules of ``webhook_url_validate`` (settings may have
    changed since registration); the host (trailing dots and IDNA normalised) is resolved here, once, every
    address it resolves to must be public (loopback only where local http is allowed), and the connection goes to
    the vetted address, so a second resolution cannot lead elsewhere; TLS still verifies the host name. No proxy
    from the environment is used. Raises ``WebhookSendError`` (a refused URL or address, a DNS failure),
    ``OSError``/``ssl.SSLError`` (network, TLS), ``http.client.HTTPException`` (a malformed answer) or
    ``crypto.IntegrityFailure`` (no usable secret); ``error_category`` names each."""
    endpoint = delivery.endpoint
    try:
        url = webhook_url_validate(endpoint.url)
    except ServiceError as exc:
        raise WebhookSendError("address_not_allowed") from exc
    parts = urlsplit(url)
    try:
        host = normalise_host(parts.hostname or "")
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError as exc:
        raise WebhookSendError("invalid_url") from exc
    addresses = _resolve(host, port)
    body = json.dumps(delivery.payload, sort_keys=True).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "DentalScan-Webhooks/1",
        "X-DentalScan-Event": delivery.event,
        "X-DentalScan-Delivery": str(delivery.id),
        "X-DentalScan-Signature": signature(webhook_secret(endpoint), int(time.time()), body),
    }
    connection: http.client.HTTPConnection
    if parts.scheme.lower() == "https":
        connection = PinnedHTTPSConnection(host, port, address=addresses, timeout=timeout)
    else:
        connection = PinnedHTTPConnection(host, port, address=addresses, timeout=timeout)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    try:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        response.read(65536)  # a little of the body, so the connection closes cleanly; never stored
        return response.status
    finally:
        connection.close()
