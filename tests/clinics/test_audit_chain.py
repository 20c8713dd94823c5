from __future__ import annotations

import threading
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import DatabaseError, connection, connections, transaction

from clinics import audit
from clinics.models import AuditEvent
from clinics.services import clinic_create

from ..conftest import requires_postgres


def tamper(sql: str, params: list | None = None) -> None:
    """Change audit rows behind the application's back (as a superuser would on PostgreSQL)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # Step out of the application's role back to the superuser login, bypassing triggers.
            cursor.execute("SELECT current_user")
            app_role = cursor.fetchone()[0]
            cursor.execute("RESET ROLE")
            cursor.execute("SET session_replication_role = replica")
        cursor.execute(sql, params or [])
        if connection.vendor == "postgresql":
            cursor.execute("SET session_replication_role = DEFAULT")
            cursor.execute("SELECT set_config('role', %s, false)", [app_role])


def verify(*args: str) -> tuple[int, str]:
    out, err = StringIO(), StringIO()
    try:
        call_command("verify_audit_chain", *args, stdout=out, stderr=err)
    except SystemExit as exc:
        return int(exc.code or 0), out.getvalue() + err.getvalue()
    return 0, out.getvalue() + err.getvalue()


@pytest.fixture
def chain(db: object) -> list[AuditEvent]:
    clinic = clinic_create(name="Chain clinic", slug="chain")
    events = [
        audit.record(action=f"test.event{i}", clinic_id=clinic.id, object_type="thing", object_id=i, details={"n": i})
        for i in range(5)
    ]
    return [AuditEvent.unscoped.get(pk=e.pk) for e in events]


def test_intact_chain_verifies(chain: list[AuditEvent]) -> None:
    code, output = verify()
    assert code == 0, output
    assert "intact" in output and "6 event(s)" in output  # clinic.create + 5
    code, output = verify("--clinic", str(chain[0].clinic_id))
    assert code == 0


def test_altered_event_is_detected(chain: list[AuditEvent]) -> None:
    target = chain[2]
    tamper("UPDATE clinics_auditevent SET action = 'test.innocent' WHERE id = %s", [target.pk])
    code, output = verify()
    assert code == 1
    assert f"event id={target.pk}" in output and "altered" in output


def test_altered_details_are_detected(chain: list[AuditEvent]) -> None:
    target = chain[1]
    tamper("UPDATE clinics_auditevent SET outcome = 'denied' WHERE id = %s", [target.pk])
    code, output = verify("--clinic", str(target.clinic_id))
    assert code == 1 and f"event id={target.pk}" in output


def test_deleted_event_is_detected(chain: list[AuditEvent]) -> None:
    tamper("DELETE FROM clinics_auditevent WHERE id = %s", [chain[2].pk])
    code, output = verify()
    assert code == 1
    assert f"event id={chain[3].pk}" in output and "removed" in output


def test_deleted_tail_is_detected(chain: list[AuditEvent]) -> None:
    tamper("DELETE FROM clinics_auditevent WHERE id = %s", [chain[-1].pk])
    code, output = verify()
    assert code == 1 and "removed at the end" in output


def test_reordered_events_are_detected(chain: list[AuditEvent]) -> None:
    a, b = chain[1], chain[3]
    # Swap the positions of two events (their seq numbers), as a reordering would.
    tamper("UPDATE clinics_auditevent SET seq = 1000000 WHERE id = %s", [a.pk])
    tamper("UPDATE clinics_auditevent SET seq = %s WHERE id = %s", [a.seq, b.pk])
    tamper("UPDATE clinics_auditevent SET seq = %s WHERE id = %s", [b.seq, a.pk])
    code, output = verify()
    assert code == 1
    assert f"event id={b.pk}" in output


def test_timestamp_reordering_is_detected(chain: list[AuditEvent]) -> None:
    a, b = chain[1], chain[2]
    tamper("UPDATE clinics_auditevent SET created_at = %s WHERE id = %s", [b.created_at, a.pk])
    code, output = verify()
    assert code == 1 and f"event id={a.pk}" in output


@requires_postgres
def test_database_refuses_update_and_delete_of_audit_rows(chain: list[AuditEvent]) -> None:
    # The application's role holds no UPDATE or DELETE privilege on the audit table...
    with pytest.raises(DatabaseError, match="permission denied"), transaction.atomic():
        AuditEvent.unscoped.filter(pk=chain[0].pk).update(action="edited")
    with pytest.raises(DatabaseError, match="permission denied"), transaction.atomic():
        AuditEvent.unscoped.filter(pk=chain[0].pk).delete()
    # ...and even the owner is stopped by the append-only trigger.
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as c:
        c.execute("RESET ROLE")  # undone by the rollback of this block
        c.execute("UPDATE clinics_auditevent SET details = '{}'::jsonb")
    assert AuditEvent.unscoped.get(pk=chain[0].pk).action == chain[0].action


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_keep_the_chain_unbroken() -> None:
    clinic = clinic_create(name="Busy clinic", slug="busy")
    writers, per_writer = 20, 10
    barrier = threading.Barrier(writers)
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            barrier.wait()
            for i in range(per_writer):
                with transaction.atomic():
                    audit.record(action="test.concurrent", clinic_id=clinic.id, details={"writer": n, "i": i})
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    report = audit.verify_chain(audit.chain_key(clinic.id))
    assert report.problem is None, report.problem
    assert report.events == writers * per_writer + 1
    seqs = list(AuditEvent.unscoped.filter(clinic=clinic).order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, writers * per_writer + 2))
