from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, connections, transaction

from clinics import audit
from clinics.models import AuditChainHead, AuditEvent
from clinics.services import clinic_create

from ..conftest import APP_ROLE, requires_postgres, seal_committed


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


@dataclass
class HeldTransaction:
    release: threading.Event = field(default_factory=threading.Event)
    result: object = None
    error: BaseException | None = None


@contextmanager
def transaction_held_open(work: Callable[[], object]) -> Iterator[HeldTransaction]:
    """Run ``work`` in a transaction of another thread (its own connection) and hold that transaction open until
    the block ends or ``held.release`` is set; ``held.result`` is what ``work`` returned. An error there fails the
    test."""
    held, started, done = HeldTransaction(), threading.Event(), threading.Event()

    def run() -> None:
        try:
            with transaction.atomic():
                held.result = work()
                started.set()
                held.release.wait(30)
        except BaseException as exc:  # noqa: BLE001 - reported below
            held.error = exc
        finally:
            connections.close_all()
            started.set()
            done.set()

    thread = threading.Thread(target=run)
    thread.start()
    try:
        assert started.wait(10) and held.error is None, held.error
        yield held
    finally:
        held.release.set()
        done.wait(30)
        thread.join()
    assert held.error is None, held.error


@pytest.fixture
def chain(transactional_db: object) -> list[AuditEvent]:
    """Five committed and sealed events of one clinic (after its clinic.create). Committed, not inside a test
    transaction: on PostgreSQL the sealer takes only events of transactions that have ended."""
    clinic = clinic_create(name="Chain clinic", slug="chain")
    events = [
        audit.record(action=f"test.event{i}", clinic_id=clinic.id, object_type="thing", object_id=i, details={"n": i})
        for i in range(5)
    ]
    seal_committed()  # what celery beat's audit-seal does (with no broker they are sealed on commit already)
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
def test_the_database_lets_only_the_sealer_seal_once(chain: list[AuditEvent], no_seal_on_commit: None) -> None:
    """The application's role may update the three seal columns (the sealer), but the trigger allows it only on an
    unsealed row, once, with nothing else changed; an event cannot be inserted already sealed."""
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():  # re-sealing a sealed event
        AuditEvent.unscoped.filter(pk=chain[1].pk).update(seq=chain[1].seq, prev_hash="0" * 64, hash="f" * 64)
    with pytest.raises(DatabaseError, match="inserted unsealed"), transaction.atomic():
        AuditEvent.unscoped.bulk_create(
            [
                AuditEvent(
                    chain="x", seq=1, prev_hash="0" * 64, hash="e" * 64, action="forged", created_at=chain[0].created_at
                )
            ]
        )
    event = audit.record(action="test.unsealed", clinic_id=chain[0].clinic_id)
    with transaction.atomic(), connection.cursor() as c:
        c.execute("RESET ROLE")  # the owner, not the app role (set back below, or undone by a rollback)
        c.execute("SELECT xact_id FROM clinics_auditevent WHERE id = %s", [event.pk])
        assert c.fetchone()[0] is not None  # set by the insert trigger
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():  # sealing and editing
            c.execute(
                "UPDATE clinics_auditevent SET seq = 99, prev_hash = %s, hash = %s, action = 'edited' WHERE id = %s",
                ["0" * 64, "d" * 64, event.pk],
            )
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():  # half a seal
            c.execute("UPDATE clinics_auditevent SET seq = 99 WHERE id = %s", [event.pk])
        c.execute("SELECT set_config('role', %s, false)", [APP_ROLE])
    assert seal_committed() == 1 and audit.verify_chain(chain[0].chain).problem is None


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
    seal_committed()  # what celery beat's audit-seal does
    report = audit.verify_chain(audit.chain_key(clinic.id))
    assert report.problem is None, report.problem
    assert report.events == writers * per_writer + 1
    seqs = list(AuditEvent.unscoped.filter(clinic=clinic).order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, writers * per_writer + 2))


# --- sealing: events are recorded unsealed, without a lock, and sealed into the chain afterwards -------------------


def test_an_event_inserted_between_sealing_runs_is_sealed_in_order_and_verifies(
    chain: list[AuditEvent], no_seal_on_commit: None
) -> None:
    clinic_id = chain[0].clinic_id
    late = audit.record(action="test.between_runs", clinic_id=clinic_id, details={"n": 5})
    stored = AuditEvent.unscoped.get(pk=late.pk)
    assert not stored.sealed and stored.seq is None and stored.hash is None
    code, output = verify()
    assert code == 0 and "6 event(s) verified" in output and "1 recent event(s) not sealed yet" in output, output
    assert AuditEvent.unscoped.get(pk=late.pk).seq is None  # verification never seals
    assert seal_committed() == 1
    stored = AuditEvent.unscoped.get(pk=late.pk)
    assert (stored.seq, stored.prev_hash) == (chain[-1].seq + 1, chain[-1].hash)
    assert AuditChainHead.objects.get(chain=stored.chain).last_hash == stored.hash
    assert audit.seal_all() == 0  # sealed once
    code, output = verify()
    assert code == 0 and "7 event(s) verified" in output and "0 recent event(s)" in output, output


def test_a_later_sealing_run_appends_after_the_sealed_events(chain: list[AuditEvent], no_seal_on_commit: None) -> None:
    first = [audit.record(action="test.run1", clinic_id=chain[0].clinic_id, details={"i": i}) for i in range(3)]
    assert seal_committed() == 3
    second = [audit.record(action="test.run2", clinic_id=chain[0].clinic_id, details={"i": i}) for i in range(2)]
    sealed, deadline = 0, time.monotonic() + 15
    while sealed < 2 and time.monotonic() < deadline:
        sealed += audit.seal_chain(chain[0].chain, batch_size=1)  # in batches of one
    assert sealed == 2
    seqs = [AuditEvent.unscoped.get(pk=e.pk).seq for e in first + second]
    assert seqs == list(range(chain[-1].seq + 1, chain[-1].seq + 6))
    assert audit.verify_chain(chain[0].chain).problem is None


def _forge(like: AuditEvent, *, seq: int, prev_hash: str) -> None:
    """Insert, behind the application's back, a sealed event whose link and hash are computed correctly."""
    import json

    forged = AuditEvent.unscoped.get(pk=like.pk)
    forged.pk, forged.action, forged.seq, forged.prev_hash = None, "test.forged", seq, prev_hash
    forged.hash = audit.event_hash(forged)
    columns = ["chain", "seq", "clinic_id", "actor_label", "action", "object_type", "object_id", "outcome",
               "request_id", "created_at", "details", "prev_hash", "hash"]  # fmt: skip
    values = [getattr(forged, c) for c in columns]
    values[2] = AuditEvent._meta.get_field("clinic").get_db_prep_value(forged.clinic_id, connection)
    values[10] = json.dumps(forged.details)
    tamper(f"INSERT INTO clinics_auditevent ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})", values)


def test_an_event_forged_into_the_sealed_chain_is_detected(chain: list[AuditEvent]) -> None:
    """At the end, linked and hashed correctly, the chain's head tells; in the middle (the later events moved up
    one), the next link breaks."""
    _forge(chain[2], seq=chain[-1].seq + 1, prev_hash=chain[-1].hash)
    code, output = verify()
    assert code == 1 and "goes on past its head" in output, output
    tamper("DELETE FROM clinics_auditevent WHERE action = 'test.forged'")
    assert verify()[0] == 0
    for event in reversed(chain[3:]):
        tamper("UPDATE clinics_auditevent SET seq = seq + 1 WHERE id = %s", [event.pk])
    _forge(chain[2], seq=chain[3].seq, prev_hash=chain[2].hash)
    code, output = verify()
    assert code == 1 and f"event id={chain[3].pk}" in output and "link broken" in output, output


def test_verify_reports_events_left_unsealed_too_long(
    chain: list[AuditEvent], no_seal_on_commit: None, settings
) -> None:  # noqa: ANN001
    stuck = audit.record(action="test.stuck", clinic_id=chain[0].clinic_id)
    tamper(
        "UPDATE clinics_auditevent SET created_at = %s WHERE id = %s",
        [AuditEvent.unscoped.get(pk=stuck.pk).created_at - timedelta(seconds=90), stuck.pk],
    )
    settings.AUDIT_SEAL_MAX_AGE_S = 60
    code, output = verify()
    assert code == 1 and "AUDIT EVENTS UNSEALED" in output and f"event id={stuck.pk} (unsealed)" in output, output
    assert "not sealed 60 s after" in output and "AUDIT CHAIN BROKEN" not in output
    assert AuditEvent.unscoped.get(pk=stuck.pk).seq is None  # verify is read-only: it did not seal
    settings.AUDIT_SEAL_MAX_AGE_S = 120
    assert verify()[0] == 0
    settings.AUDIT_SEAL_MAX_AGE_S = 60
    call_command("seal_audit", stdout=StringIO())
    code, output = verify()
    assert code == 0 and "7 event(s) verified" in output, output


def test_verification_reads_on_when_the_sealer_commits_meanwhile(
    chain: list[AuditEvent], no_seal_on_commit: None, monkeypatch
) -> None:  # noqa: ANN001
    audit.record(action="test.meanwhile", clinic_id=chain[0].clinic_id)
    check, sealed = audit._event_problem, []

    def seal_during_the_walk(*args: object) -> str | None:
        if not sealed:
            sealed.append(seal_committed())  # another process's sealer, committing while we read
        return check(*args)

    monkeypatch.setattr(audit, "_event_problem", seal_during_the_walk)
    report = audit.verify_chain(chain[0].chain)
    assert sealed == [1] and report.problem is None and report.events == 7, report


def test_an_action_rolled_back_leaves_no_event(chain: list[AuditEvent]) -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        audit.record(action="test.rolled_back", clinic_id=chain[0].clinic_id)
        assert AuditEvent.unscoped.filter(action="test.rolled_back").exists()  # inside the action's transaction
        raise RuntimeError("the action failed")
    assert not AuditEvent.unscoped.filter(action="test.rolled_back").exists()
    assert audit.seal_all() == 0
    code, output = verify()
    assert code == 0 and "6 event(s) verified" in output, output


def test_seal_audit_command_and_periodic_task(chain: list[AuditEvent], no_seal_on_commit: None, settings) -> None:  # noqa: ANN001
    import re

    from clinics.tasks import audit_seal_task

    assert settings.CELERY_BEAT_SCHEDULE["audit-seal"]["task"] == audit_seal_task.name
    audit.record(action="test.a", clinic_id=chain[0].clinic_id)
    audit.record(action="test.b", clinic_id=None)  # the global chain
    out = StringIO()
    call_command("seal_audit", stdout=out)
    by_command = int(re.fullmatch(r"Sealed (\d+) audit event\(s\)\.\n", out.getvalue()).group(1))
    audit.record(action="test.c", clinic_id=chain[0].clinic_id)
    by_task = audit_seal_task()["sealed"]
    # all three, over these runs and the next ones (on PostgreSQL a run leaves events to the next while an older
    # write transaction of the server is open)
    assert by_command + by_task + seal_committed() == 3
    assert not AuditEvent.unscoped.filter(seq__isnull=True).exists()
    assert verify()[0] == 0


def test_embedded_default_seals_on_commit(transactional_db: object, eager: None, monkeypatch) -> None:  # noqa: ANN001
    clinic = clinic_create(name="Embedded", slug="embedded")
    calls: list[str] = []
    seal_chain = audit.seal_chain
    monkeypatch.setattr(audit, "seal_chain", lambda chain: calls.append(chain) or seal_chain(chain))
    with transaction.atomic():
        event = audit.record(action="test.embedded", clinic_id=clinic.id)
        audit.record(action="test.embedded", clinic_id=clinic.id)
        assert calls == [] and AuditEvent.unscoped.get(pk=event.pk).seq is None  # not before the commit
    assert calls == [event.chain]  # once per chain and transaction, not per event
    if connection.vendor == "sqlite":  # (PostgreSQL: unless an older write transaction of the server is open)
        assert AuditEvent.unscoped.get(pk=event.pk).seq == 2  # after clinic.create


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_audit_writers_of_one_clinic_do_not_wait_for_each_other() -> None:
    """An open transaction that has recorded an event does not block another writer of the same clinic, and the
    sealer leaves both alone until the older transaction ends (then seals them in transaction order)."""
    clinic = clinic_create(name="Open clinic", slug="open")
    seal_committed()
    with transaction_held_open(lambda: audit.record(action="test.held_open", clinic_id=clinic.id)) as held:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL lock_timeout = '2s'")  # a regression fails fast instead of hanging
            cursor.execute("SET LOCAL statement_timeout = '5s'")
            second = audit.record(action="test.while_open", clinic_id=clinic.id)
        # committed, but an older transaction that wrote to the chain is still open: nothing may be sealed yet
        assert audit.seal_all() == 0
        assert AuditEvent.unscoped.get(pk=second.pk).seq is None
    assert seal_committed() == 2
    first = AuditEvent.unscoped.get(pk=held.result.pk)
    assert first.xact_id < AuditEvent.unscoped.get(pk=second.pk).xact_id
    assert (first.seq, AuditEvent.unscoped.get(pk=second.pk).seq) == (2, 3)  # transaction order, not commit order
    assert audit.verify_chain(audit.chain_key(clinic.id)).problem is None


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_sixteen_parallel_writers_of_one_clinic_show_no_lock_waits() -> None:
    """16 writers of one clinic, each holding its transaction open a little after recording (the rest of a
    request): a monitor samples pg_locks for any lock they wait on. With the chain head locked by every writer
    (the old design) they queued on each other's transaction; now none does, and the chain verifies after
    sealing."""
    clinic = clinic_create(name="Rush hour", slug="rush")
    writers, per_writer = 16, 5
    barrier = threading.Barrier(writers + 1)
    pids: list[int] = []
    errors: list[BaseException] = []
    finished = threading.Event()
    samples = 0
    waits: dict[str, int] = {}

    def write(n: int) -> None:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SET lock_timeout = '2s'")
                cursor.execute("SELECT pg_backend_pid()")
                pids.append(cursor.fetchone()[0])
            barrier.wait()
            for i in range(per_writer):
                with transaction.atomic():
                    audit.record(action="test.rush", clinic_id=clinic.id, details={"writer": n, "i": i})
                    time.sleep(0.02)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    barrier.wait()

    def join_all() -> None:
        for t in threads:
            t.join()
        finished.set()

    watcher = threading.Thread(target=join_all)
    watcher.start()
    with connection.cursor() as cursor:
        while not finished.is_set():
            cursor.execute("SELECT locktype FROM pg_locks WHERE NOT granted AND pid = ANY(%s)", [pids])
            samples += 1
            for (locktype,) in cursor.fetchall():
                waits[locktype] = waits.get(locktype, 0) + 1
    watcher.join()
    assert not errors, errors
    print(f"lock-wait samples: {samples}, waiting locks seen by type: {waits}")  # noqa: T201
    # "extend": growing the table's file, a storage-level lock of microseconds that any inserts share -- not the
    # audit design. Waiting on a row or transaction (the chain head held by another writer) would show here.
    assert samples >= 10 and {t: n for t, n in waits.items() if t != "extend"} == {}
    seal_committed()
    report = audit.verify_chain(audit.chain_key(clinic.id))
    assert report.problem is None and report.events == writers * per_writer + 1 and report.unsealed == 0


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


def test_removing_a_whole_chain_that_a_checkpoint_recorded_is_detected(chain: list[AuditEvent]) -> None:
    call_command("audit_checkpoint", stdout=StringIO())
    # every event and the head of one clinic's chain gone, as an owner could (TRUNCATE is not stopped by a trigger)
    tamper("DELETE FROM clinics_auditevent WHERE chain = %s", [chain[0].chain])
    tamper("DELETE FROM clinics_auditchainhead WHERE chain = %s", [chain[0].chain])
    code, output = verify()  # every chain, the one with no row left included
    assert code == 1 and f"recorded seq {chain[-1].seq}" in output and "events removed" in output, output


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


def test_files_added_to_the_checkpoint_folder_cannot_push_the_real_checkpoints_out(
    chain: list[AuditEvent],
    tmp_path,  # noqa: ANN001
) -> None:
    """Object lock stops removal, not addition: junk that sorts after the real checkpoints (unknown key, a future date,
    a name not the writer's) never takes the place of a sealed one, and what is not the writer's is reported."""
    import datetime as dt
    import json

    from clinics.audit_checkpoints import NEWEST, checkpoints_load

    call_command("audit_checkpoint", stdout=StringIO())
    folder = tmp_path / "audit-checkpoints" / "checkpoints"
    (real,) = folder.glob("*.json")
    document = json.loads(real.read_text())
    written = dt.datetime.strptime(real.name[:22], "%Y%m%dT%H%M%S%fZ")
    for n in range(NEWEST + 2):  # more than the window, newer by name, each sealed with a key nobody has
        later = (written + dt.timedelta(microseconds=n + 1)).strftime("%Y%m%dT%H%M%S%fZ")
        (folder / f"{later}-{n:08x}.json").write_text(json.dumps({**document, "key_id": "attacker"}))
    loaded = checkpoints_load()
    assert loaded.files == 1 and chain[0].chain in loaded.heads and len(loaded.unverifiable) == NEWEST + 2
    # the checkpoint still catches a removal
    tamper("DELETE FROM clinics_auditevent WHERE chain = %s", [chain[0].chain])
    tamper("DELETE FROM clinics_auditchainhead WHERE chain = %s", [chain[0].chain])
    assert verify()[0] == 1
    # a name dated in the future, or not the writer's, is a problem of its own
    (folder / "99991231T000000000000Z-00000000.json").write_text(real.read_text())
    (folder / "zz.json").write_text("{}")
    problems = checkpoints_load().problems
    assert any("future" in p for p in problems) and any("not a checkpoint's name" in p for p in problems)
    # the background verification of an intact chain fails on them too, as the command does
    from clinics.tasks import audit_chain_verify_task

    other = clinic_create(name="Intact clinic", slug="intact")
    seal_committed()
    assert audit_chain_verify_task(str(other.id))["intact"] is False
    verified = AuditEvent.unscoped.filter(action="audit.verify", clinic=other).latest("id")
    assert verified.outcome == "failure" and "behind the writer's back" in (verified.details["problem"] or "")


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


def test_checkpoints_that_disagree_about_a_head_are_a_problem(chain: list[AuditEvent]) -> None:
    """A head rewritten between two checkpoints (the chain recomputed by the owner, then checkpointed again): the
    newer checkpoint does not hide the older one's record."""
    from clinics.audit_checkpoints import checkpoint_write, checkpoints_load

    checkpoint_write()
    tamper("UPDATE clinics_auditchainhead SET last_hash = %s WHERE chain = %s", ["f" * 64, chain[0].chain])
    checkpoint_write()
    problems = checkpoints_load().problems
    assert any("record different hashes" in p and chain[0].chain in p for p in problems), problems


@requires_postgres
def test_events_sealed_out_of_the_sealers_order_are_detected(chain: list[AuditEvent], no_seal_on_commit: None) -> None:
    """Someone with the application's role could race the sealer and seal two waiting events itself, correctly
    linked and hashed but in another order than the sealer's (transaction, then insertion): verify says so."""
    clinic_id = chain[0].clinic_id
    first = audit.record(action="test.first", clinic_id=clinic_id)  # two transactions (autocommit), in this order
    second = audit.record(action="test.second", clinic_id=clinic_id)
    head = AuditChainHead.objects.get(chain=chain[0].chain)
    prev_hash, seq = head.last_hash, head.last_seq
    for event in (AuditEvent.unscoped.get(pk=second.pk), AuditEvent.unscoped.get(pk=first.pk)):  # swapped
        seq += 1
        event.seq, event.prev_hash = seq, prev_hash
        event.hash = audit.event_hash(event)
        tamper(
            "UPDATE clinics_auditevent SET seq = %s, prev_hash = %s, hash = %s WHERE id = %s",
            [event.seq, event.prev_hash, event.hash, event.pk],
        )
        prev_hash = event.hash
    tamper(
        "UPDATE clinics_auditchainhead SET last_seq = %s, last_hash = %s WHERE chain = %s", [seq, prev_hash, head.chain]
    )
    code, output = verify()
    assert code == 1 and "sealed out of order" in output and f"event id={first.pk}" in output, output


def round_ended(sealer: audit.BackgroundSealer) -> None:
    """Wait for the sealer's round in progress to end: a round commits its seals, then checks what is left and
    counts itself, so a test that sees the events sealed may still be ahead of the counters."""
    assert sealer._round.acquire(timeout=30)  # noqa: SLF001
    sealer._round.release()  # noqa: SLF001


@pytest.fixture
def background_sealer(settings, monkeypatch) -> Iterator[Callable[..., audit.BackgroundSealer]]:  # noqa: ANN001
    """Makes the process's background sealer for a test; afterwards nothing is left asked of it and its round in
    progress has ended, so its thread cannot seal into the next test's database (or hold a lock the flush of this
    one waits for)."""
    made: list[audit.BackgroundSealer] = []

    def make(**kwargs: float) -> audit.BackgroundSealer:
        settings.AUDIT_SEAL_IN_BACKGROUND = True  # from here on: what was recorded before sealed as it committed
        sealer = audit.BackgroundSealer(**kwargs)
        monkeypatch.setattr(audit, "_SEALER", sealer)
        made.append(sealer)
        return sealer

    yield make
    for sealer in made:
        with sealer._wake:  # noqa: SLF001
            sealer._pending.clear()  # noqa: SLF001
        sealer._swept = True  # noqa: SLF001
        round_ended(sealer)


@pytest.mark.django_db(transaction=True)
def test_embedded_default_seals_in_a_background_round_after_the_commits(eager: None, background_sealer) -> None:  # noqa: ANN001
    """Without a broker, a commit only asks the process's background sealer, which seals a moment later what all
    the commits of that moment recorded, in one round; the chain verifies."""
    sealer = background_sealer(delay=1.0)
    clinic = clinic_create(name="Background", slug="background")
    first = audit.record(action="test.background", clinic_id=clinic.id)  # autocommit: committed at once
    assert AuditEvent.unscoped.get(pk=first.pk).seq is None  # the commit did not seal it; the round comes later
    for _ in range(5):
        with transaction.atomic():
            audit.record(action="test.background", clinic_id=clinic.id)
    deadline = time.monotonic() + 20
    while AuditEvent.unscoped.filter(seq__isnull=True).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not AuditEvent.unscoped.filter(seq__isnull=True).exists()
    round_ended(sealer)  # the round that sealed them counts itself after its commit
    assert 1 <= sealer.sealing_rounds <= 3  # 7 committing transactions (clinic_create's too), a round or few
    head = AuditChainHead.objects.get(chain=str(clinic.id))
    assert head.last_seq == AuditEvent.unscoped.filter(chain=str(clinic.id)).count()
    assert verify()[0] == 0


@pytest.mark.django_db(transaction=True)
def test_background_sealer_seals_leftovers_and_what_is_asked_at_exit(eager: None, background_sealer) -> None:  # noqa: ANN001
    """A process that died between a commit and its round left events unsealed: the next process's first round
    seals every chain that has some. At exit, what is still asked for is sealed there and then."""
    from config.celery import app

    clinic = clinic_create(name="Leftover", slug="leftover")
    seal_committed()
    app.conf.task_always_eager = False  # as a process that never sealed (the eager fixture restores the setting)
    try:
        leftover = audit.record(action="test.leftover", clinic_id=None)  # the global chain
    finally:
        app.conf.task_always_eager = True
    background_sealer(delay=3600)  # its thread would wait an hour: only the exit flush seals
    asked = audit.record(action="test.asked", clinic_id=clinic.id)
    assert AuditEvent.unscoped.get(pk=asked.pk).seq is None
    audit._flush_at_exit()  # noqa: SLF001 - what atexit runs
    assert AuditEvent.unscoped.get(pk=asked.pk).seq is not None
    assert AuditEvent.unscoped.get(pk=leftover.pk).seq is not None  # the other chain, swept by the first round
    assert verify()[0] == 0


@pytest.mark.django_db(transaction=True)
def test_background_sealer_tries_again_after_a_failed_round(eager: None, background_sealer, monkeypatch) -> None:  # noqa: ANN001
    """A round whose sealing fails (the database locked, a lost connection) asks for the chain again: the events
    are sealed by a later round, not left for a next commit that may never come."""
    clinic = clinic_create(name="Retry", slug="retry")
    seal_committed()
    sealer = background_sealer(delay=0.05, max_delay=0.2)
    real, failures = audit.seal_chain, []

    def failing_once(chain: str, **kwargs: object) -> int:
        if not failures:
            failures.append(chain)
            raise DatabaseError("database is locked")
        return real(chain, **kwargs)

    monkeypatch.setattr(audit, "seal_chain", failing_once)
    event = audit.record(action="test.retry", clinic_id=clinic.id)
    deadline = time.monotonic() + 20
    while AuditEvent.unscoped.get(pk=event.pk).seq is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert failures == [str(clinic.id)]
    assert AuditEvent.unscoped.get(pk=event.pk).seq is not None
    round_ended(sealer)
    assert sealer.rounds >= 2
    assert verify()[0] == 0


@pytest.mark.django_db(transaction=True)
def test_exit_waits_for_a_round_in_progress_then_seals_what_is_asked(eager: None, background_sealer) -> None:  # noqa: ANN001
    clinic = clinic_create(name="Exit", slug="exit")
    seal_committed()
    sealer = background_sealer(delay=3600)
    event = audit.record(action="test.exit", clinic_id=clinic.id)
    sealer._round.acquire()  # noqa: SLF001 - a round in progress elsewhere
    released: list[float] = []

    def end_round() -> None:
        released.append(time.monotonic())
        sealer._round.release()  # noqa: SLF001

    threading.Timer(0.5, end_round).start()
    audit._flush_at_exit()  # noqa: SLF001
    assert released and time.monotonic() >= released[0]  # it waited for the round to end
    assert AuditEvent.unscoped.get(pk=event.pk).seq is not None


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_exit_waits_a_little_for_an_older_transaction_that_holds_the_events_back(
    eager: None,
    background_sealer,  # noqa: ANN001
) -> None:
    """On PostgreSQL an event may be sealed only once every write transaction older than it has ended: one still open
    when the process exits (another process's request) would leave the exit's single round sealing nothing. The exit
    tries again for a few seconds."""
    clinic = clinic_create(name="Exit later", slug="exit-later")
    seal_committed()

    def older_write() -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_current_xact_id()")  # a write transaction's id, older than the event

    with transaction_held_open(older_write) as held:
        background_sealer(delay=3600)
        event = audit.record(action="test.exit_later", clinic_id=clinic.id)
        threading.Timer(1.0, held.release.set).start()
        audit._flush_at_exit()  # noqa: SLF001
        assert AuditEvent.unscoped.get(pk=event.pk).seq is not None
    assert verify()[0] == 0


@contextmanager
def write_transaction_in_another_database() -> Iterator[None]:
    """A write transaction held open in another database of the same server (another application's, on a shared
    server): it has a transaction id, which every snapshot of the server sees as running."""
    import psycopg

    params = connection.settings_dict
    other = psycopg.connect(
        dbname="postgres",
        host=params["HOST"] or None,
        port=params["PORT"] or None,
        user=params["USER"],
        password=params["PASSWORD"] or None,
    )
    try:
        other.execute("SELECT pg_current_xact_id()")  # psycopg opened a transaction: now it has an id
        yield
    finally:
        other.rollback()
        other.close()


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_an_open_write_transaction_of_another_database_does_not_hold_sealing_back(no_seal_on_commit: None) -> None:
    clinic = clinic_create(name="Shared server", slug="shared-server")
    seal_committed()
    with write_transaction_in_another_database():
        event = audit.record(action="test.other_database", clinic_id=clinic.id)
        assert audit.seal_all() == 1  # at once: the other database's transaction cannot write an event here
        assert AuditEvent.unscoped.get(pk=event.pk).seq is not None
    assert verify()[0] == 0


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_an_open_write_transaction_of_this_database_holds_later_events_back(no_seal_on_commit: None) -> None:
    clinic = clinic_create(name="Held back", slug="held-back")
    seal_committed()

    def older_write() -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_current_xact_id()")  # it could still record an event that sorts first

    with transaction_held_open(older_write):
        event = audit.record(action="test.held_back", clinic_id=clinic.id)
        assert audit.seal_all() == 0
        assert AuditEvent.unscoped.get(pk=event.pk).seq is None
    assert seal_committed() == 1
    assert AuditEvent.unscoped.get(pk=event.pk).seq is not None
    assert verify()[0] == 0
