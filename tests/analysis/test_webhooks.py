"""Webhooks: signed deliveries, retried with backoff until the receiver accepts them."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from analysis.models import WebhookDelivery
from analysis.registry import model_register
from analysis.webhooks import webhook_register
from clinics.tenancy import clinic_scope
from config.celery import app
from tests.ml.conftest import random_artifact  # noqa: F401 - fixture

from ..workers import start_worker, stop_worker, wait_for


class Receiver:
    """A local HTTP receiver that fails the first ``failures`` requests with 500."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.requests: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                receiver.requests.append({"headers": headers, "body": body, "at": time.monotonic()})
                ok = len(receiver.requests) > receiver.failures
                self.send_response(200 if ok else 500)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def valid_signature(secret: str, headers: dict, body: bytes, max_age: int = 300) -> bool:
    parts = dict(item.split("=", 1) for item in headers["x-dentalscan-signature"].split(","))
    expected = hmac.new(secret.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["v1"]) and abs(time.time() - int(parts["t"])) < max_age


@pytest.fixture
def receivers() -> Iterator[tuple[Receiver, Receiver]]:
    good, flaky = Receiver(0), Receiver(2)
    yield good, flaky
    good.close()
    flaky.close()


def _register_endpoints(clinic_id: object, good: Receiver, flaky: Receiver) -> tuple[str, str]:
    """Registered as an admin does (``webhook_register``: the secret is sealed); returns both signing secrets."""
    with clinic_scope(clinic_id):
        _, good_secret = webhook_register(url=good.url, events=["analysis.completed"])
        _, flaky_secret = webhook_register(url=flaky.url, events=[])
    return good_secret, flaky_secret


def _check(good: Receiver, flaky: Receiver, analysis_id: str, secrets: tuple[str, str]) -> None:
    good_secret, flaky_secret = secrets
    event = json.loads(good.requests[0]["body"])
    assert event["event"] == "analysis.completed" and event["data"]["analysis_id"] == analysis_id
    assert valid_signature(good_secret, good.requests[0]["headers"], good.requests[0]["body"])
    assert not valid_signature("another-secret", good.requests[0]["headers"], good.requests[0]["body"])
    assert len(flaky.requests) == 3  # failed twice, accepted on the third try
    assert all(valid_signature(flaky_secret, r["headers"], r["body"]) for r in flaky.requests)
    first_gap = flaky.requests[1]["at"] - flaky.requests[0]["at"]
    second_gap = flaky.requests[2]["at"] - flaky.requests[1]["at"]
    assert first_gap >= 0.4 and second_gap >= 0.9  # backoff: 0.5 s, then 1 s
    assert "Lovelace" not in flaky.requests[0]["body"].decode()  # ids only, never patient data


@pytest.mark.skipif(not os.environ.get("DATABASE_URL", "").startswith("postgres"), reason="needs PostgreSQL")
@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs Redis (set REDIS_URL); CI runs it")
@pytest.mark.django_db(transaction=True)
def test_analysis_completed_reaches_receivers_through_a_real_worker(
    random_artifact: Path,  # noqa: F811
    receivers: tuple[Receiver, Receiver],
) -> None:
    from .test_worker import _world_and_upload

    good, flaky = receivers
    app.control.purge()
    model_register(artifact_dir=random_artifact)
    from ..conftest import build_clinic

    world = build_clinic("hooks")
    secrets = _register_endpoints(world.clinic.id, good, flaky)
    analysis_id, _ = _world_and_upload(random_artifact, world=world)
    worker = start_worker("gpu,default", WEBHOOK_RETRY_BASE_SECONDS="0.5")
    try:
        wait_for(
            lambda: len(good.requests) >= 1 and len(flaky.requests) >= 3,
            timeout=120,
            what="both receivers to get analysis.completed",
            worker=worker,
        )
        wait_for(
            lambda: WebhookDelivery.unscoped.filter(status="delivered").count() == 2,
            timeout=30,
            what="both deliveries to be logged as delivered",
            worker=worker,
        )
    finally:
        stop_worker(worker)
    _check(good, flaky, analysis_id, secrets)
    delivery = WebhookDelivery.unscoped.get(endpoint__url=flaky.url)
    assert delivery.attempts == 3 and [a["status"] for a in delivery.attempt_log] == [500, 500, 200]
