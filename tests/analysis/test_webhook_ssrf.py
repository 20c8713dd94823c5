"""Webhook deliveries cannot be turned against the platform's own network (SSRF): no redirects followed, every
resolved address vetted at send time and connected to as vetted, internal names refused in any spelling, and
only short error categories kept; the delivery task records every kind of failed attempt; the signing secret is
never read from the legacy plaintext column."""

from __future__ import annotations

import ast
import http.client
import importlib
import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django.apps import apps as django_apps
from django.urls import reverse

from analysis import webhooks
from analysis.models import WebhookDelivery, WebhookEndpoint
from analysis.tasks import WEBHOOK_MAX_ATTEMPTS, deliver_webhook
from analysis.webhooks import (
    PinnedHTTPSConnection,
    WebhookSendError,
    send,
    webhook_register,
    webhook_secret,
    webhook_send_test,
)
from clinics.tenancy import clinic_scope
from core import crypto

from ..conftest import World, token_client, user_client

REAL_GETADDRINFO = socket.getaddrinfo


@pytest.fixture(autouse=True)
def retries_in_process() -> Iterator[None]:
    """``deliver_webhook.apply`` runs every retry at once, in-process (a retry is not an error to propagate)."""
    from config.celery import app

    saved = app.conf.task_eager_propagates
    app.conf.task_eager_propagates = False
    yield
    app.conf.task_eager_propagates = saved


class Server:
    """A local HTTP server answering every method with ``status`` (and ``Location`` when given)."""

    def __init__(self, status: int = 204, location: str | None = None) -> None:
        self.requests: list[dict[str, Any]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                server.requests.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "host": self.headers["Host"],
                        "body": self.rfile.read(length),
                    }
                )
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = do_PUT = _answer  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        server.close()


def _fake_dns(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[str]], calls: list[str] | None = None) -> None:
    """Host names resolve to the given addresses (the rest as usual)."""

    def getaddrinfo(host: str, port: object, *args: Any, **kwargs: Any) -> list[Any]:
        if calls is not None:
            calls.append(host)
        if host in answers:
            result = []
            for address in answers[host]:
                family = socket.AF_INET6 if ":" in address else socket.AF_INET
                sockaddr = (address, int(port), 0, 0) if family == socket.AF_INET6 else (address, int(port))
                result.append((family, socket.SOCK_STREAM, 6, "", sockaddr))
            return result
        return REAL_GETADDRINFO(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def _no_connection(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    attempts: list[Any] = []

    def refuse(address: Any, *args: Any, **kwargs: Any) -> None:
        attempts.append(address)
        raise AssertionError(f"connected to {address}")

    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


def _endpoint(world: World, url: str) -> WebhookEndpoint:
    with clinic_scope(world.clinic.id):
        endpoint, _ = webhook_register(url=url)
    return endpoint


def _deliver(world: World, endpoint: WebhookEndpoint) -> WebhookDelivery:
    """Queue a test event and run its task in-process (every retry at once); the delivery as it ends."""
    with clinic_scope(world.clinic.id):
        delivery = webhook_send_test(endpoint=endpoint)
    deliver_webhook.apply(args=[str(delivery.pk), str(world.clinic.id)])
    return WebhookDelivery.unscoped.get(pk=delivery.pk)


# --- Redirects ------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_never_followed_and_is_a_failed_attempt(alice: World, servers: list[Server], status: int) -> None:
    target = Server(204)
    redirecting = Server(status, location=target.url)
    servers += [target, redirecting]
    delivery = _deliver(alice, _endpoint(alice, redirecting.url))
    assert target.requests == []  # the redirect's target got nothing, not even a GET
    assert len(redirecting.requests) == WEBHOOK_MAX_ATTEMPTS
    assert delivery.status == "failed" and delivery.delivered_at is None
    assert [(a["status"], a["error"]) for a in delivery.attempt_log] == [(status, "redirect_refused")] * 6
    page = user_client(alice.users["clinic_admin"]).get(reverse("analysis:webhooks")).content.decode()
    assert f"HTTP {status} (redirect_refused)" in page and target.url not in page


# --- Addresses checked at send time (DNS rebinding) -----------------------------------------------


@pytest.mark.parametrize(
    "addresses",
    [
        ["127.0.0.1"],
        ["10.1.2.3"],
        ["169.254.169.254"],
        ["192.168.0.10"],
        ["100.64.0.1"],  # carrier-grade NAT
        ["::1"],
        ["fc00::1"],
        ["fe80::1"],
        ["::ffff:10.0.0.1"],
        ["64:ff9b::a00:1"],  # NAT64's well-known prefix: 10.0.0.1 on a NAT64 network
        ["64:ff9b::a9fe:a9fe"],  # ... and the metadata service
        ["64:ff9b:1::a00:1"],  # RFC 8215 local-use NAT64
        ["2002:a00:1::1"],  # 6to4 of 10.0.0.1
        ["::a00:1"],  # the old IPv4-compatible form
        ["0.0.0.0"],
        ["93.184.216.34", "10.0.0.1"],  # one bad address among good ones is enough to refuse
    ],
)
def test_a_public_name_resolving_to_an_internal_address_is_refused_at_send_time(
    alice: World, monkeypatch: pytest.MonkeyPatch, settings: Any, addresses: list[str]
) -> None:
    endpoint = _endpoint(alice, "https://hooks.pms.example/dentalscan")  # passes registration: a public name
    settings.DEBUG, settings.DEMO_DATA_ALLOWED = False, False  # as in production
    _fake_dns(monkeypatch, {"hooks.pms.example": addresses})
    connections = _no_connection(monkeypatch)
    delivery = _deliver(alice, endpoint)
    assert connections == []
    assert delivery.status == "failed" and delivery.attempts == WEBHOOK_MAX_ATTEMPTS
    assert {(a["status"], a["error"]) for a in delivery.attempt_log} == {(None, "address_not_allowed")}


def test_ipv6_forms_of_public_ipv4_addresses_stay_allowed() -> None:
    for text in ("64:ff9b::808:808", "2002:808:808::1", "2606:4700::1111", "8.8.8.8"):
        assert webhooks.address_allowed(ipaddress.ip_address(text), local_allowed=False), text


def test_loopback_is_allowed_exactly_where_local_http_is(
    alice: World, monkeypatch: pytest.MonkeyPatch, settings: Any, servers: list[Server]
) -> None:
    receiver = Server(204)
    servers.append(receiver)
    # Development/test settings: the local receiver is reached (as the other webhook tests rely on)...
    endpoint = _endpoint(alice, f"http://localhost:{receiver.port}/hook")
    _fake_dns(monkeypatch, {"localhost": ["127.0.0.1"], "hooks.pms.example": ["10.0.0.7"]})
    assert _deliver(alice, endpoint).status == "delivered" and len(receiver.requests) == 1
    # ...but even there, a name resolving to a private (non-loopback) address is refused.
    other = _endpoint(alice, "https://hooks.pms.example/hook")
    connections = _no_connection(monkeypatch)
    refused = _deliver(alice, other)
    assert connections == [] and refused.attempt_log[0]["error"] == "address_not_allowed"
    # In production neither is reached, whatever was registered before.
    settings.DEBUG, settings.DEMO_DATA_ALLOWED = False, False
    late = _deliver(alice, endpoint)
    assert late.status == "failed" and late.attempt_log[0]["error"] == "address_not_allowed"
    assert len(receiver.requests) == 1 and connections == []


def test_the_connection_goes_to_the_address_that_was_checked(
    alice: World, monkeypatch: pytest.MonkeyPatch, servers: list[Server]
) -> None:
    """Resolved once: a second answer (the rebinding attacker's) is never asked for nor used."""
    receiver = Server(204)
    servers.append(receiver)
    endpoint = _endpoint(alice, f"http://localhost:{receiver.port}/hook?x=1")
    calls: list[str] = []
    answers = iter([["127.0.0.1"], ["169.254.169.254"], ["169.254.169.254"]])

    def rebinding(host: str, port: object, *args: Any, **kwargs: Any) -> list[Any]:
        calls.append(host)
        if host != "localhost":  # the literal address socket.create_connection is given
            return REAL_GETADDRINFO(host, port, *args, **kwargs)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers)[0], int(port)))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    connected: list[Any] = []
    real_create = socket.create_connection

    def create(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
        connected.append(address)
        return real_create(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", create)
    with clinic_scope(alice.clinic.id):
        delivery = webhook_send_test(endpoint=endpoint)
        assert send(WebhookDelivery.objects.select_related("endpoint").get(pk=delivery.pk)) == 204
    assert calls.count("localhost") == 1 and "169.254.169.254" not in calls
    assert connected == [("127.0.0.1", receiver.port)]
    request = receiver.requests[0]
    assert request["host"] == f"localhost:{receiver.port}" and request["path"] == "/hook?x=1"


def test_every_vetted_address_is_tried_in_turn(
    alice: World, monkeypatch: pytest.MonkeyPatch, servers: list[Server]
) -> None:
    """A name with an IPv6 and an IPv4 address, the receiver listening on IPv4 only: reached, as before."""
    receiver = Server(204)
    servers.append(receiver)
    endpoint = _endpoint(alice, f"http://localhost:{receiver.port}/hook")
    _fake_dns(monkeypatch, {"localhost": ["::1", "127.0.0.1"]})
    delivery = _deliver(alice, endpoint)
    assert delivery.status == "delivered" and len(receiver.requests) == 1


def test_https_connects_to_the_vetted_address_with_sni_and_verification_for_the_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    context = ssl.create_default_context()
    seen: dict[str, Any] = {}
    real_wrap = context.wrap_socket

    def wrap(sock: socket.socket, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        seen["server_hostname"] = kwargs.get("server_hostname")
        seen["peer"] = sock.getpeername()
        sock.close()
        raise ssl.SSLError("handshake refused by the test")

    monkeypatch.setattr(context, "wrap_socket", wrap)
    connection = PinnedHTTPSConnection("pms.example", port, address="127.0.0.1", timeout=2, context=context)
    with pytest.raises(ssl.SSLError):
        connection.connect()
    listener.close()
    assert seen == {"server_hostname": "pms.example", "peer": ("127.0.0.1", port)}
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    assert real_wrap is not None
    default = PinnedHTTPSConnection("pms.example", 443, address="203.0.113.9", timeout=2)
    assert default._context.check_hostname and default._context.verify_mode == ssl.CERT_REQUIRED


# --- Internal names in any spelling ---------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://localhost./hook",
        "https://localhost../hook",
        "https://LOCALHOST./hook",
        "https://metadata.google.internal./computeMetadata/v1/",
        "https://printer.local./hook",
        "https://api.localhost./hook",
        "https://api.ｌｏｃａｌｈｏｓｔ/hook",  # full-width letters: IDNA maps them to "localhost"
        "https://metadata.ｉｎｔｅｒｎａｌ/hook",
    ],
)
def test_internal_hosts_are_refused_with_a_trailing_dot_or_in_idna_spelling(
    alice: World, settings: Any, url: str
) -> None:
    settings.DEBUG, settings.DEMO_DATA_ALLOWED = False, False
    response = token_client(alice, "clinic_admin").post(reverse("api:webhook-list"), {"url": url}, format="json")
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_url", url
    assert not WebhookEndpoint.unscoped.exists()


# --- Short error categories, never the exception's text -------------------------------------------


def test_failed_attempts_keep_a_short_category_not_the_error_text(
    alice: World, monkeypatch: pytest.MonkeyPatch, servers: list[Server]
) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there: connection refused
    refused = _deliver(alice, _endpoint(alice, f"http://127.0.0.1:{port}/hook"))
    assert {a["error"] for a in refused.attempt_log} == {"connection_refused"}
    assert refused.status == "failed"

    failing = Server(500)
    servers.append(failing)
    answered = _deliver(alice, _endpoint(alice, failing.url))
    assert {(a["status"], a["error"]) for a in answered.attempt_log} == {(500, "http_status_500")}

    endpoint = _endpoint(alice, "https://no-such-host.pms.example/hook")
    _fake_dns(monkeypatch, {})
    monkeypatch.setattr(
        socket, "getaddrinfo", lambda *a, **k: (_ for _ in ()).throw(socket.gaierror(-2, "Name or service not known"))
    )
    assert {a["error"] for a in _deliver(alice, endpoint).attempt_log} == {"dns_error"}

    admin = token_client(alice, "clinic_admin")
    listed = admin.get(reverse("api:webhook-deliveries", kwargs={"pk": refused.endpoint_id})).json()["results"]
    assert listed[0]["last_error"] == "connection_refused"
    page = admin.get(reverse("api:webhook-deliveries", kwargs={"pk": answered.endpoint_id})).json()["results"]
    assert page[0]["last_error"] == "http_status_500" and page[0]["last_status_code"] == 500
    for delivery in WebhookDelivery.unscoped.all():
        for attempt in delivery.attempt_log:
            assert "Errno" not in attempt["error"] and "127.0.0.1" not in attempt["error"]


@pytest.mark.parametrize(
    ("exc", "category"),
    [
        (TimeoutError("timed out"), "timeout"),
        (SoftTimeLimitExceeded(), "timeout"),  # the task's soft limit, reached inside send
        (ConnectionRefusedError(111, "Connection refused"), "connection_refused"),
        (ssl.SSLCertVerificationError("certificate verify failed: Hostname mismatch"), "tls_error"),
        (ssl.SSLError("wrong version number"), "tls_error"),
        (socket.gaierror(-2, "Name or service not known"), "dns_error"),
        (http.client.RemoteDisconnected("Remote end closed connection"), "connection_closed"),
        (http.client.BadStatusLine("garbage"), "bad_response"),
        (ValueError("Invalid header value b'internal-host'"), "invalid_request"),
        (WebhookSendError("address_not_allowed", "10.0.0.1"), "address_not_allowed"),
        (crypto.IntegrityFailure("authentication tag mismatch"), "secret_unavailable"),
    ],
)
def test_every_failure_of_send_is_recorded_and_retried(
    alice: World, monkeypatch: pytest.MonkeyPatch, exc: Exception, category: str
) -> None:
    endpoint = _endpoint(alice, "https://pms.example/hook")
    calls: list[str] = []

    def failing(delivery: WebhookDelivery) -> int:
        calls.append(str(delivery.pk))
        raise exc

    monkeypatch.setattr("analysis.tasks.send", failing)
    delivery = _deliver(alice, endpoint)
    assert len(calls) == WEBHOOK_MAX_ATTEMPTS  # retried, never left half-done
    assert delivery.attempts == WEBHOOK_MAX_ATTEMPTS and delivery.status == "failed"
    assert [(a["status"], a["error"]) for a in delivery.attempt_log] == [(None, category)] * WEBHOOK_MAX_ATTEMPTS


def test_a_retry_after_a_failure_delivers(alice: World, monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint = _endpoint(alice, "https://pms.example/hook")
    outcomes: list[Any] = [http.client.IncompleteRead(b""), ValueError("bad"), 200]

    def flaky(delivery: WebhookDelivery) -> int:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    monkeypatch.setattr("analysis.tasks.send", flaky)
    delivery = _deliver(alice, endpoint)
    assert delivery.status == "delivered" and delivery.attempts == 3
    assert [(a["status"], a["error"]) for a in delivery.attempt_log] == [
        (None, "bad_response"),
        (None, "invalid_request"),
        (200, ""),
    ]


def test_an_old_log_entry_with_raw_error_text_is_not_shown(alice: World) -> None:
    endpoint = _endpoint(alice, "https://pms.example/hook")
    with clinic_scope(alice.clinic.id):
        delivery = webhook_send_test(endpoint=endpoint)
    raw = "URLError: <urlopen error [Errno 111] Connection refused to 10.0.0.5:8080>"
    WebhookDelivery.unscoped.filter(pk=delivery.pk).update(
        attempts=1, attempt_log=[{"at": "2026-01-01T00:00:00+00:00", "status": None, "error": raw}]
    )
    listed = token_client(alice, "clinic_admin").get(reverse("api:webhook-deliveries", kwargs={"pk": endpoint.pk}))
    assert listed.json()["results"][0]["last_error"] == "network_error" and b"10.0.0.5" not in listed.content


# --- The signing secret --------------------------------------------------------------------------


def test_the_plaintext_secret_column_is_never_read(alice: World, monkeypatch: pytest.MonkeyPatch) -> None:
    with clinic_scope(alice.clinic.id):
        legacy = WebhookEndpoint.objects.create(url="https://old.example/hook", secret="legacy-secret")
        with pytest.raises(crypto.IntegrityFailure, match="no encrypted signing secret"):
            webhook_secret(legacy)
    # Its deliveries fail as an attempt (recorded and retried), never signed with the plaintext.
    _fake_dns(monkeypatch, {"old.example": ["93.184.216.34"]})
    _no_connection(monkeypatch)
    delivery = _deliver(alice, legacy)
    assert {a["error"] for a in delivery.attempt_log} == {"secret_unavailable"}
    source = Path(webhooks.__file__).read_text()
    assert "endpoint.secret\n" not in source and "return endpoint.secret" not in source


# --- Migration 0007 is frozen ---------------------------------------------------------------------


def test_migration_0007_imports_no_live_application_code() -> None:
    path = Path(importlib.import_module("analysis.migrations.0007_webhook_secret_encrypted").__file__)
    imported: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    project = {m for m in imported if m.split(".")[0] in {"analysis", "patients", "clinics", "core", "demo"}}
    # Only stable primitives: the master-key provider and the row-level security context managers.
    assert project <= {"core.key_providers", "clinics.rls", "clinics.tenancy"}, project


def test_migration_0007_seals_exactly_as_the_application_reads(alice: World, bob: World) -> None:
    with clinic_scope(alice.clinic.id):
        legacy = WebhookEndpoint.objects.create(url="https://old.example/hook", secret="legacy-secret")
    with clinic_scope(bob.clinic.id):
        other = WebhookEndpoint.objects.create(url="https://bob.example/hook", secret="bob-secret")
    migration = importlib.import_module("analysis.migrations.0007_webhook_secret_encrypted")
    migration.encrypt_plaintext_secrets(django_apps, None)
    for world, endpoint, secret in ((alice, legacy, "legacy-secret"), (bob, other, "bob-secret")):
        endpoint.refresh_from_db()
        assert endpoint.secret == "" and secret.encode() not in bytes(endpoint.secret_encrypted)
        with clinic_scope(world.clinic.id):
            assert webhook_secret(endpoint) == secret
