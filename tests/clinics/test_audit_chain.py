from __future__ import annotations

import threading
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, connections, transaction

from clinics import audit
from clinics.models import AuditChainHead, AuditEvent
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
    for unknown in ("00000000-0000-0000-0000-000000000000", "not-a-uuid"):  # not "intact, 0 events"
        with pytest.raises(CommandError, match="No clinic with id"):
            call_command("verify_audit_chain", "--clinic", unknown, stdout=StringIO())


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


# --- sealed checkpoints: a rewrite by the database's owner -------------------------------------------------------


def _rewrite_from(target: AuditEvent, action: str) -> None:
    """What an owner of the database can do: change an event, then recompute its hash, every later
    event's link and hash, and the chain head, so that the chain alone verifies again."""
    events = list(AuditEvent.unscoped.filter(chain=target.chain, seq__gte=target.seq).order_by("seq"))
    prev_hash = events[0].prev_hash
    events[0].action = action
    for event in events:
        event.prev_hash = prev_hash
        event.hash = audit.event_hash(event)
        prev_hash = event.hash
        tamper(
            "UPDATE clinics_auditevent SET action = %s, prev_hash = %s, hash = %s WHERE id = %s",
            [event.action, event.prev_hash, event.hash, event.pk],
        )
    tamper("UPDATE clinics_auditchainhead SET last_hash = %s WHERE chain = %s", [prev_hash, target.chain])


def test_a_recomputed_rewrite_passes_the_chain_but_not_a_sealed_checkpoint(chain: list[AuditEvent]) -> None:
    from clinics.audit_checkpoints import checkpoints_load

    out = StringIO()
    call_command("audit_checkpoint", stdout=out)
    assert "chain head(s) sealed" in out.getvalue()
    assert AuditEvent.unscoped.filter(action="audit.checkpoint").count() == 1
    code, output = verify()
    assert code == 0 and "against 1 sealed checkpoint(s)" in output, output

    _rewrite_from(chain[1], "test.innocent")
    assert AuditEvent.unscoped.get(pk=chain[1].pk).action == "test.innocent"
    # The chain alone cannot tell: everything after the edit was recomputed.
    assert audit.verify_chain(chain[1].chain).problem is None
    # The checkpoint, sealed with the master key outside the database, still can.
    code, output = verify()
    assert code == 1, output
    assert "rewritten and the chain recomputed" in output and f"event id={chain[-1].pk}" in output
    assert checkpoints_load().files == 1


def test_removing_events_up_to_a_checkpoint_is_detected(chain: list[AuditEvent]) -> None:
    call_command("audit_checkpoint", stdout=StringIO())
    last = chain[-1]
    # remove the last event and move the head back to the one before, as an owner could
    tamper("DELETE FROM clinics_auditevent WHERE id = %s", [last.pk])
    tamper(
        "UPDATE clinics_auditchainhead SET last_seq = %s, last_hash = %s WHERE chain = %s",
        [chain[-2].seq, chain[-2].hash, last.chain],
    )
    assert audit.verify_chain(last.chain).problem is None
    code, output = verify("--clinic", str(last.clinic_id))
    assert code == 1 and f"recorded seq {last.seq}" in output and "events removed" in output, output


def test_a_forged_or_altered_checkpoint_is_refused(chain: list[AuditEvent], tmp_path) -> None:  # noqa: ANN001
    import json

    call_command("audit_checkpoint", stdout=StringIO())
    (path,) = (tmp_path / "audit-checkpoints" / "checkpoints").glob("*.json")
    document = json.loads(path.read_text())
    document["body"]["heads"][0]["seq"] += 1  # e.g. to hide a rewrite
    path.write_text(json.dumps(document))
    code, output = verify()
    assert code == 1 and "AUDIT CHECKPOINT BROKEN" in output and "does not match its seal" in output, output


def test_a_checkpoint_sealed_with_a_removed_master_key_is_listed_not_used(
    chain: list[AuditEvent],
    tmp_path,  # noqa: ANN001
) -> None:
    import json

    call_command("audit_checkpoint", stdout=StringIO())
    (path,) = (tmp_path / "audit-checkpoints" / "checkpoints").glob("*.json")
    document = json.loads(path.read_text())
    document["key_id"] = "retired-2019"
    path.write_text(json.dumps(document))
    code, output = verify()
    assert code == 0 and "warning:" in output and "retired-2019" in output and "against 0 sealed" in output, output


def test_the_periodic_task_writes_a_checkpoint(chain: list[AuditEvent], settings) -> None:  # noqa: ANN001
    from clinics.audit_checkpoints import checkpoints_load
    from clinics.tasks import audit_checkpoint_task

    assert settings.CELERY_BEAT_SCHEDULE["audit-checkpoint"]["task"] == audit_checkpoint_task.name
    chains = AuditChainHead.objects.filter(last_seq__gt=0).count()
    result = audit_checkpoint_task()
    assert result["chains"] == chains >= 1
    heads = checkpoints_load().heads
    assert heads[chain[-1].chain] == {chain[-1].seq: (chain[-1].hash, result["file"])}
    event = AuditEvent.unscoped.get(action="audit.checkpoint")
    assert "audit_checkpoint" in event.actor_label, event.actor_label


def test_verification_reads_the_newest_checkpoints(chain: list[AuditEvent]) -> None:
    from clinics.audit_checkpoints import checkpoint_write, checkpoints_load

    names = [checkpoint_write()[0] for _ in range(3)]
    loaded = checkpoints_load(newest=2)
    assert loaded.files == 2
    recorded = {name for heads in loaded.heads.values() for _, name in heads.values()}
    assert recorded <= set(names[1:]) and names[2] in recorded
