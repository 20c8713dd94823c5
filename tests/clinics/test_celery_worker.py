"""A real Celery worker on Redis runs a clinic task inside that clinic's scope."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.conf import settings

from clinics import audit
from clinics.models import AuditEvent
from clinics.services import clinic_create
from clinics.tasks import audit_chain_verify_task

from ..conftest import requires_postgres, seal_committed
from ..workers import start_worker, stop_worker, wait_for

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.django_db(transaction=True)
def test_task_runs_in_process_without_a_broker() -> None:
    if settings.REDIS_URL:
        pytest.skip("a broker is configured; the worker test below covers it")
    clinic = clinic_create(name="Eager", slug="eager")
    seal_committed()  # the task verifies sealed events
    assert audit_chain_verify_task.delay(str(clinic.id)).get() == {"intact": True, "events": 1}
    assert AuditEvent.unscoped.filter(clinic=clinic, action="audit.verify", outcome="success").exists()


@requires_postgres
@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs Redis (set REDIS_URL); CI runs it")
@pytest.mark.django_db(transaction=True)
def test_real_worker_runs_the_task_in_the_clinics_scope() -> None:
    clinic = clinic_create(name="Worker clinic", slug="worker")
    audit.record(action="test.before", clinic_id=clinic.id)
    seal_committed()  # the task verifies sealed events
    from config.celery import app

    app.control.purge()
    worker = start_worker("default")
    try:
        message = audit_chain_verify_task.delay(str(clinic.id))
        assert message.id
        event = wait_for(
            lambda: AuditEvent.unscoped.filter(clinic=clinic, action="audit.verify").first(),
            timeout=60,
            what="the worker to run the task",
            worker=worker,
        )
        assert event.outcome == "success" and event.details == {"events": 2, "problem": None}
        assert audit.verify_chain(audit.chain_key(clinic.id)).problem is None
    finally:
        stop_worker(worker)
