"""Webhooks managed by clinic admins: the API, the page, the services' audit events and rules, and a signed
test event received by a real local HTTP server."""

from __future__ import annotations

import hashlib
import hmac
import importlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.apps import apps as django_apps
from django.contrib.sessions.models import Session
from django.urls import reverse

from analysis.models import WebhookDelivery, WebhookEndpoint
from analysis.tasks import deliver_webhook
from analysis.webhooks import webhook_emit, webhook_register, webhook_secret, webhook_send_test
from clinics.models import AuditEvent
from clinics.services import ServiceError
from clinics.tenancy import clinic_scope
from core import crypto

from ..conftest import World, key_client, tasks_on_commit, token_client, user_client

HOOK = "https://pms.example/hooks/dentalscan"


def _register(world: World, url: str = HOOK, **body: Any) -> Any:
    return token_client(world, "clinic_admin").post(reverse("api:webhook-list"), {"url": url, **body}, format="json")


def _events(world: World, action: str) -> list[AuditEvent]:
    return list(AuditEvent.unscoped.filter(clinic=world.clinic, action=action).order_by("id"))


def test_admin_registers_lists_tests_and_revokes_a_webhook(alice: World) -> None:
    admin = token_client(alice, "clinic_admin")
    created = _register(alice, events=["report.signed"])
    assert created.status_code == 201, created.content
    body = created.json()
    secret = body["secret"]
    assert secret.startswith("whsec_") and len(secret) > 40
    assert body["url"] == HOOK and body["events"] == ["report.signed"] and body["is_active"] is True
    assert created["Cache-Control"] == "no-store"
    webhook_id = body["id"]

    # Stored encrypted with the clinic's data key, bound to the row; never in clear.
    with clinic_scope(alice.clinic.id):
        endpoint = WebhookEndpoint.objects.get(pk=webhook_id)
        assert endpoint.secret == "" and secret.encode() not in bytes(endpoint.secret_encrypted)
        assert webhook_secret(endpoint) == secret
        moved = endpoint.secret_encrypted
        other = WebhookEndpoint.objects.create(url="https://other.example/h", secret_encrypted=moved)
        with pytest.raises(crypto.IntegrityFailure):
            webhook_secret(other)  # a ciphertext copied onto another row does not decrypt
        other.delete()

    # The secret is shown once: never in the list or the detail.
    listed = admin.get(reverse("api:webhook-list"))
    assert listed.status_code == 200 and [w["id"] for w in listed.json()["results"]] == [webhook_id]
    detail = admin.get(reverse("api:webhook-detail", kwargs={"pk": webhook_id}))
    assert detail.status_code == 200 and detail.json()["url"] == HOOK
    for response in (listed, detail):
        assert secret.encode() not in response.content and b'"secret"' not in response.content

    register = _events(alice, "webhook.register")
    assert [(e.object_id, e.details, e.actor_user_id) for e in register] == [
        (webhook_id, {"events": ["report.signed"]}, alice.users["clinic_admin"].pk)
    ]

    # A test event: one delivery, queued after commit, listed with its outcome.
    tested = admin.post(reverse("api:webhook-test", kwargs={"pk": webhook_id}))
    assert tested.status_code == 202, tested.content
    delivery = tested.json()
    assert delivery["event"] == "webhook.test" and delivery["outcome"] == "pending" and delivery["attempts"] == 0
    assert delivery["webhook"] == webhook_id and delivery["last_status_code"] is None
    payload = WebhookDelivery.unscoped.get(pk=delivery["id"]).payload
    assert payload["event"] == "webhook.test" and payload["data"] == {"webhook_id": webhook_id}
    assert [e.details for e in _events(alice, "webhook.test")] == [{"delivery_id": delivery["id"]}]
    deliveries = admin.get(reverse("api:webhook-deliveries", kwargs={"pk": webhook_id})).json()
    assert deliveries["count"] == 1 and deliveries["results"][0]["id"] == delivery["id"]

    # Revoke = deactivate: kept, with its history; the waiting delivery is cancelled; a second DELETE is harmless.
    assert admin.delete(reverse("api:webhook-detail", kwargs={"pk": webhook_id})).status_code == 204
    detail = admin.get(reverse("api:webhook-detail", kwargs={"pk": webhook_id})).json()
    assert detail["is_active"] is False and detail["revoked_at"] is not None
    assert WebhookDelivery.unscoped.get(pk=delivery["id"]).status == "cancelled"
    assert admin.delete(reverse("api:webhook-detail", kwargs={"pk": webhook_id})).status_code == 204
    assert [e.details for e in _events(alice, "webhook.revoke")] == [
        {"already_revoked": False, "cancelled_deliveries": 1},
        {"already_revoked": True, "cancelled_deliveries": 0},
    ]
    refused = admin.post(reverse("api:webhook-test", kwargs={"pk": webhook_id}))
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "webhook_revoked"
    assert admin.get(reverse("api:webhook-deliveries", kwargs={"pk": webhook_id})).json()["count"] == 1
    assert [w["is_active"] for w in admin.get(reverse("api:webhook-list")).json()["results"]] == [False]

    # The secret is in no audit event.
    assert not AuditEvent.unscoped.filter(details__icontains=secret[6:20]).exists()
    assert all(secret not in json.dumps(e.details) for e in AuditEvent.unscoped.all())


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("ftp://pms.example/hook", "invalid_url"),
        ("javascript:alert(1)", "invalid_url"),
        ("file:///etc/passwd", "invalid_url"),
        ("http://pms.example/hook", "invalid_url"),  # plain http only to localhost
        ("https://user:password@pms.example/hook", "invalid_url"),
        ("https://", "invalid_url"),
        ("not a url", "invalid_url"),
        ("", "validation_error"),
        ("https://pms.example/" + "a" * 500, "validation_error"),
    ],
)
def test_bad_urls_are_refused(alice: World, url: str, code: str) -> None:
    response = _register(alice, url)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    assert not WebhookEndpoint.unscoped.exists() and not _events(alice, "webhook.register")


def test_unknown_events_are_refused(alice: World) -> None:
    response = _register(alice, events=["patient.created"])
    assert response.status_code == 400 and response.json()["error"]["code"] == "validation_error"
    assert "events" in response.json()["error"]["details"]
    with clinic_scope(alice.clinic.id), pytest.raises(ServiceError) as refused:
        webhook_register(url=HOOK, events=["webhook.test"])
    assert refused.value.code == "invalid_event"
    assert not WebhookEndpoint.unscoped.exists()


def test_http_to_localhost_only_outside_production(alice: World, settings: Any) -> None:
    assert _register(alice, "http://127.0.0.1:8081/hook").status_code == 201  # the test settings: development
    assert _register(alice, "http://localhost:8081/hook").status_code == 201
    settings.DEBUG, settings.DEMO_DATA_ALLOWED = False, False  # as in production
    for url in (
        "http://127.0.0.1:8081/hook",
        "https://127.0.0.1/hook",
        "https://localhost/hook",
        "https://10.1.2.3/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/hook",
    ):
        response = _register(alice, url)
        assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_url", url
    assert _register(alice, "https://pms.example/hook").status_code == 201
    assert WebhookEndpoint.unscoped.count() == 3


@pytest.mark.parametrize("who", ["staff", "dentist", "api_key"])
def test_only_clinic_admins_manage_webhooks(alice: World, who: str) -> None:
    webhook_id = _register(alice).json()["id"]
    client = key_client(alice) if who == "api_key" else token_client(alice, who)
    calls = [
        ("get", reverse("api:webhook-list")),
        ("post", reverse("api:webhook-list")),
        ("get", reverse("api:webhook-detail", kwargs={"pk": webhook_id})),
        ("delete", reverse("api:webhook-detail", kwargs={"pk": webhook_id})),
        ("post", reverse("api:webhook-test", kwargs={"pk": webhook_id})),
        ("get", reverse("api:webhook-deliveries", kwargs={"pk": webhook_id})),
    ]
    for method, path in calls:
        kwargs = {"data": {"url": HOOK}, "format": "json"} if method == "post" else {}
        response = getattr(client, method)(path, **kwargs)
        assert response.status_code == 403, (method, path, response.status_code)
        assert response.json()["error"]["code"] == "permission_denied"
    assert WebhookEndpoint.unscoped.count() == 1 and WebhookEndpoint.unscoped.get().is_active
    assert not WebhookDelivery.unscoped.exists()


def test_another_clinics_webhook_is_not_found(alice: World, bob: World) -> None:
    webhook_id = _register(alice).json()["id"]
    other = token_client(bob, "clinic_admin")
    for method, name in [
        ("get", "api:webhook-detail"),
        ("delete", "api:webhook-detail"),
        ("post", "api:webhook-test"),
        ("get", "api:webhook-deliveries"),
    ]:
        response = getattr(other, method)(reverse(name, kwargs={"pk": webhook_id}))
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found", (method, name)
    assert other.get(reverse("api:webhook-list")).json()["results"] == []
    assert WebhookEndpoint.unscoped.get(pk=webhook_id).is_active and not WebhookDelivery.unscoped.exists()
    # Nor can bob's page act on it.
    page = user_client(bob.users["clinic_admin"])
    for action in ("test", "revoke"):
        response = page.post(reverse("analysis:webhooks"), {"action": action, "webhook": webhook_id})
        assert response.status_code == 404
    assert WebhookEndpoint.unscoped.get(pk=webhook_id).is_active


def test_a_test_event_goes_to_that_endpoint_only_and_revoked_endpoints_get_nothing(
    alice: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    with clinic_scope(alice.clinic.id):
        first, _ = webhook_register(url="https://one.example/hook")
        second, _ = webhook_register(url="https://two.example/hook")
        delivery = webhook_send_test(endpoint=first)
        assert [(d.endpoint_id, d.event) for d in WebhookDelivery.objects.all()] == [(first.pk, "webhook.test")]
        with pytest.raises(ValueError, match="WEBHOOK_EVENTS"):
            webhook_emit(event="webhook.test", payload={})
        from analysis.webhooks import webhook_revoke

        webhook_revoke(endpoint=first)
        emitted = webhook_emit(event="report.signed", payload={"report_id": "r"})
        assert [d.endpoint_id for d in emitted] == [second.pk]
    # A delivery queued before the revocation is not sent when its task runs.
    monkeypatch.setattr("analysis.tasks.send", lambda delivery: pytest.fail("sent to a revoked webhook"))
    WebhookDelivery.unscoped.filter(pk=delivery.pk).update(status="pending")
    assert deliver_webhook.apply(args=[str(delivery.pk), str(alice.clinic.id)]).get() == "cancelled"
    assert WebhookDelivery.unscoped.get(pk=delivery.pk).status == "cancelled"


def test_plaintext_secrets_of_older_rows_are_encrypted_by_the_migration(alice: World) -> None:
    with clinic_scope(alice.clinic.id):
        legacy = WebhookEndpoint.objects.create(url="https://old.example/hook", secret="legacy-secret")
    migration = importlib.import_module("analysis.migrations.0007_webhook_secret_encrypted")
    migration.encrypt_plaintext_secrets(django_apps, None)
    legacy.refresh_from_db()
    assert legacy.secret == "" and b"legacy-secret" not in bytes(legacy.secret_encrypted)
    with clinic_scope(alice.clinic.id):
        assert webhook_secret(legacy) == "legacy-secret"


def test_admin_page_registers_shows_the_secret_once_tests_and_revokes(alice: World) -> None:
    page = user_client(alice.users["clinic_admin"])
    url = reverse("analysis:webhooks")
    response = page.get(url)
    assert response.status_code == 200
    html = response.content.decode()
    assert "Register a webhook" in html and "No webhooks yet." in html
    assert f'href="{url}">Webhooks</a>' in html  # the nav link
    assert "<script" not in html  # the CSP forbids inline scripts; this page needs none

    refused = page.post(url, {"action": "register", "url": "http://pms.example/hook"})
    assert refused.status_code == 400 and "must use https://" in refused.content.decode()
    assert not WebhookEndpoint.unscoped.exists()

    created = page.post(url, {"action": "register", "url": HOOK, "events": ["analysis.completed"]})
    # Post/Redirect/Get: the POST answers a redirect, so reloading the page cannot register a second endpoint.
    assert created.status_code == 302 and created["Location"] == url
    endpoint = WebhookEndpoint.unscoped.get()
    with clinic_scope(alice.clinic.id):
        secret = webhook_secret(endpoint)
    assert secret.encode() not in created.content
    # between the POST and the GET the secret waits in the session (a database row) sealed, not in clear
    stored = Session.objects.get(session_key=page.session.session_key).session_data
    assert "webhook_new_secret" in page.session and secret not in stored and secret not in str(page.session.items())
    shown = page.get(url)
    assert shown["Cache-Control"] == "no-store"
    html = shown.content.decode()
    assert secret in html and "shown only this once" in html and endpoint.events == ["analysis.completed"]
    assert "webhook_new_secret" not in page.session  # dropped from the session once shown
    again = page.get(url).content.decode()  # a reload: the secret is gone, and still one endpoint
    assert secret not in again and HOOK in again and "analysis.completed" in again and "active" in again
    assert WebhookEndpoint.unscoped.count() == 1

    tested = page.post(url, {"action": "test", "webhook": str(endpoint.pk)})
    assert tested.status_code == 302 and tested["Location"] == url
    delivery = WebhookDelivery.unscoped.get()
    assert delivery.endpoint_id == endpoint.pk and delivery.event == "webhook.test"
    listing = page.get(url).content.decode()
    assert "Test event queued" in listing and 'data-testid="webhook-delivery"' in listing and "pending" in listing

    revoked = page.post(url, {"action": "revoke", "webhook": str(endpoint.pk)})
    assert revoked.status_code == 302
    endpoint.refresh_from_db()
    assert endpoint.is_active is False and endpoint.revoked_at is not None
    html = page.get(url).content.decode()
    assert "revoked" in html and "Send a test event" not in html
    assert page.post(url, {"action": "revoke", "webhook": "not-an-id"}).status_code == 404
    assert page.post(url, {"action": "explode"}).status_code == 400
    assert [e.action for e in AuditEvent.unscoped.filter(action__startswith="webhook.").order_by("id")] == [
        "webhook.register",
        "webhook.test",
        "webhook.revoke",
    ]


@pytest.mark.parametrize("role", ["staff", "dentist"])
def test_the_page_is_for_clinic_admins_only(alice: World, role: str) -> None:
    client = user_client(alice.users[role])
    assert client.get(reverse("analysis:webhooks")).status_code == 403
    response = client.post(reverse("analysis:webhooks"), {"action": "register", "url": HOOK})
    assert response.status_code == 403 and not WebhookEndpoint.unscoped.exists()
    home = client.get(reverse("clinics:home")).content.decode()
    assert reverse("analysis:webhooks") not in home


class Receiver:
    """A local HTTP receiver on 127.0.0.1 that answers 204 and keeps what it was sent."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append({"path": self.path, "headers": dict(self.headers.items()), "body": body})
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/dentalscan/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def verify(secret: str, header: str, body: bytes, *, tolerance: int = 300) -> bool:
    """What a receiver does (the README's recipe)."""
    parts = dict(item.split("=", 1) for item in header.split(","))
    expected = hmac.new(secret.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["v1"]) and abs(time.time() - int(parts["t"])) <= tolerance


def test_a_signed_test_event_reaches_a_real_receiver(
    alice: World,
    receiver: Receiver,
    eager: None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    admin = token_client(alice, "clinic_admin")
    created = _register(alice, receiver.url)
    assert created.status_code == 201, created.content
    webhook_id, secret = created.json()["id"], created.json()["secret"]

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        tested = admin.post(reverse("api:webhook-test", kwargs={"pk": webhook_id}))
    assert tested.status_code == 202 and len(tasks_on_commit(callbacks)) == 1  # sent by the task, after the commit

    assert len(receiver.requests) == 1
    received = receiver.requests[0]
    headers = {k.lower(): v for k, v in received["headers"].items()}
    assert received["path"] == "/dentalscan/hook"
    assert headers["x-dentalscan-event"] == "webhook.test" and headers["content-type"] == "application/json"
    assert headers["x-dentalscan-delivery"] == tested.json()["id"]
    assert verify(secret, headers["x-dentalscan-signature"], received["body"])
    assert not verify(secret + "x", headers["x-dentalscan-signature"], received["body"])
    assert not verify(secret, headers["x-dentalscan-signature"], received["body"] + b" ")
    event = json.loads(received["body"])
    assert event["event"] == "webhook.test" and event["data"] == {"webhook_id": webhook_id}
    assert event["clinic_id"] == str(alice.clinic.id)

    listed = admin.get(reverse("api:webhook-deliveries", kwargs={"pk": webhook_id})).json()["results"]
    assert len(listed) == 1
    delivery = listed[0]
    assert delivery["outcome"] == "delivered" and delivery["last_status_code"] == 204 and delivery["attempts"] == 1
    assert delivery["delivered_at"] is not None and delivery["last_error"] == ""
    page = user_client(alice.users["clinic_admin"]).get(reverse("analysis:webhooks")).content.decode()
    assert "HTTP 204" in page and "delivered" in page
