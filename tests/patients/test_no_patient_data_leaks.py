"""No patient data in logs, error reports, URLs, task messages or audit events (GDPR 5(1)(c), 25).

The main flows run with a marker patient; every log record (all loggers, DEBUG and up), everything
written to stdout/stderr, every task message, every URL requested or linked from a page, and every
audit event are then searched for the marker's name, practice id and date of birth.
"""

from __future__ import annotations

import io
import json
import logging
import re
from typing import Any

import pytest
from celery.app.task import Task
from django.urls import reverse

from clinics.models import AuditEvent

from ..conftest import World, key_client, png_bytes, token_client, user_client

MARKERS = ("Qqmarkergiven", "Zzmarkerfamily", "MRK-424242", "1931-02-03")
HREF = re.compile(rb'(?:href|src|action)="([^"]+)"')


@pytest.fixture
def task_messages(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    sent: list[Any] = []
    original = Task.apply_async
    # This test follows patient data into task messages, so its drawn image must reach the model: the image gate
    # (tests/analysis/test_image_gate_pipeline.py) would refuse it and nothing would be queued.
    monkeypatch.setattr("analysis.uploads.image_gate", lambda *args, **kwargs: None)

    def spy(self: Task, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        sent.append({"task": self.name, "args": args, "kwargs": kwargs})
        return original(self, args, kwargs, **options)

    monkeypatch.setattr(Task, "apply_async", spy)
    return sent


def test_main_flows_leak_no_patient_data(
    alice: World,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    task_messages: list[Any],
    django_capture_on_commit_callbacks: Any,
) -> None:
    caplog.set_level(logging.DEBUG)
    urls: list[str] = []
    bodies: list[bytes] = []

    def seen(response: Any, url: str) -> Any:
        urls.append(url)
        if not getattr(response, "streaming", False) and response.get("Content-Type", "").startswith("text/html"):
            bodies.append(response.content)
        return response

    staff = user_client(alice.users["staff"])
    api = token_client(alice, "staff")
    dentist = token_client(alice, "dentist")
    new = {"external_id": MARKERS[2], "given_name": MARKERS[0], "family_name": MARKERS[1], "date_of_birth": MARKERS[3]}
    created = api.post(reverse("api:patient-list"), new, format="json")
    assert created.status_code == 201, created.content
    patient_id = created.json()["id"]
    html = staff.post(reverse("patients:list"), {**new, "external_id": "MRK-2", "sex": "female"})
    assert html.status_code == 302
    seen(staff.get(html["Location"]), html["Location"])
    searched = staff.post(reverse("patients:list"), {"action": "search", "q": MARKERS[1]})
    listing = seen(staff.get(searched["Location"]), searched["Location"])
    assert MARKERS[1].encode() in listing.content  # the search worked...
    upload_url = reverse("api:patient-image-list", kwargs={"pk": patient_id})
    with django_capture_on_commit_callbacks(execute=True):
        image = api.post(upload_url, {"file": io.BytesIO(png_bytes((96, 72))), "modality": "photo"}, format="multipart")
    assert image.status_code == 201, image.content
    bad = io.BytesIO(b"not an image at all")
    bad.name = f"{MARKERS[1]}.jpg"  # a client file name carrying the patient's name
    assert api.post(upload_url, {"file": bad, "modality": "photo"}, format="multipart").status_code in (400, 415)
    image_id = image.json()["id"]
    detail_url = reverse("patients:detail", kwargs={"pk": patient_id})
    seen(staff.get(detail_url), detail_url)
    meta = dentist.get(reverse("api:image-detail", kwargs={"pk": image_id})).json()
    visit_id = meta.get("visit") or meta.get("visit_id")
    assert visit_id, meta
    review_url = reverse("analysis:review", kwargs={"pk": visit_id})
    seen(user_client(alice.users["dentist"]).get(review_url), review_url)
    # With a broker (CI) the analysis waits in Redis: run the queued message here, in-process.
    from config.celery import app

    for message in list(task_messages):
        if message["task"] == "analysis.run":
            app.tasks[message["task"]].apply(args=message["args"], kwargs=message["kwargs"] or {})
    analysis = dentist.get(reverse("api:analysis-detail", kwargs={"pk": image.json()["analysis"]["id"]})).json()
    for finding in analysis["findings"]:
        review = reverse("api:finding-review", kwargs={"pk": finding["id"]})
        decided = dentist.post(review, {"decision": "reject", "reason": "not_present"}, format="json")
        assert decided.status_code == 200, decided.content
    signed = dentist.post(reverse("api:visit-report", kwargs={"pk": visit_id}))
    assert signed.status_code in (200, 201), signed.content
    for name in ("analysis:report", "analysis:report-pdf"):
        url = reverse(name, kwargs={"pk": visit_id})
        seen(user_client(alice.users["dentist"]).get(url), url)
    assert key_client(alice).get(reverse("api:visit-report-fhir", kwargs={"pk": visit_id})).status_code == 200
    export = user_client(alice.users["clinic_admin"]).post(reverse("patients:export", kwargs={"pk": patient_id}))
    assert export.status_code == 200
    missing = "/patients/00000000-0000-0000-0000-000000000000/"
    assert staff.get(missing).status_code == 404

    # ...and yet the marker is nowhere it must not be.
    out, err = capfd.readouterr()
    logged = "\n".join(
        [r.getMessage() for r in caplog.records]
        + [str(r.args) for r in caplog.records]
        + [r.exc_text or "" for r in caplog.records]
    )
    assert caplog.records, "the flows should have logged something (else this test proves nothing)"
    linked = [u.decode() for body in bodies for u in HREF.findall(body)]
    assert linked, "pages should link somewhere"
    events = json.dumps(list(AuditEvent.unscoped.values("action", "object_id", "details", "actor_label")), default=str)
    assert task_messages, "the upload should have queued an analysis"
    for marker in MARKERS:
        assert marker not in logged, f"{marker} in logs"
        assert marker not in out and marker not in err, f"{marker} on stdout/stderr"
        assert all(marker not in u for u in urls + linked), f"{marker} in a URL"
        assert marker not in json.dumps(task_messages, default=str), f"{marker} in a task message"
        assert marker not in events, f"{marker} in the audit trail"
    for message in task_messages:
        assert all(re.fullmatch(r"[0-9a-f-]{36}", str(a)) for a in message["args"] or []), message
