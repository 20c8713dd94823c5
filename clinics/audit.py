"""The tamper-evident audit trail: writing events into per-clinic hash chains and verifying them.

Invariants:
- ``record`` is the only writer of ``AuditEvent`` rows. It inserts the event *unsealed* (no ``seq``,
  ``prev_hash``, ``hash``) inside the caller's transaction and takes no lock, so audited actions of one
  clinic run in parallel; the event commits or rolls back together with the action it records.
- ``seal_chain`` is the only writer of the seal fields and of ``AuditChainHead``: one sealer per chain at a
  time (a PostgreSQL advisory transaction lock; SQLite has a single writer), appending the committed
  unsealed events to the chain in batches, each event's ``prev_hash`` the hash of the event before it.
  It runs every few seconds (celery beat ``audit-seal``, or ``manage.py seal_audit --loop``), and, in the
  embedded default with no broker, in a background thread of the process a moment after audited commits
  (``BackgroundSealer``; ``AUDIT_SEAL_IN_BACKGROUND=0``: in the committing thread, right after the commit).
- Order on PostgreSQL: an event carries its transaction's id (``xact_id``, set by the insert trigger). The
  sealer takes only events whose ``xact_id`` is below the oldest transaction of this database that its snapshot
  sees running (``_SEALING_BOUND_SQL``) -- every older one of this database has ended, none of them can still
  commit an event -- in (``xact_id``, ``id``) order. So no event can later
  appear that sorts before one already sealed: the chain is one fixed total order, only ever extended at
  its end, with the events of one transaction together and in the order they were recorded. (That is the
  order in which the transactions first wrote, which can differ from their commit order; a write
  transaction of this database left open holds sealing back, never the writers; one of another database on the
  same server does not.) On SQLite write
  transactions are serialised (IMMEDIATE), so ``id`` order is commit order.
- ``verify_chain`` is read-only: it checks the sealed events and reports unsealed events older than
  ``AUDIT_SEAL_MAX_AGE_S`` (a sealer that stopped) as a fault. An unsealed event is protected only by the
  database's append-only trigger until it is sealed, within seconds.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import connection, transaction
from django.db.models import QuerySet
from django.db.models.expressions import RawSQL
from django.utils import timezone

from . import context
from .models import AuditChainHead, AuditEvent, AuditOutcome
from .tenancy import current_clinic_id

logger = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64
GLOBAL_CHAIN = "global"
SEAL_BATCH = 500
# First key of the sealer's PostgreSQL advisory lock ("audt"); the second is hashtext(chain).
SEAL_LOCK_CLASS = 0x61756474


def chain_key(clinic_id: uuid.UUID | str | None) -> str:
    return str(clinic_id) if clinic_id else GLOBAL_CHAIN


def _ts(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_hash(event: AuditEvent) -> str:
    """SHA-256 over the canonical JSON of every recorded field and the previous hash."""
    payload = {
        "chain": event.chain,
        "seq": event.seq,
        "clinic": str(event.clinic_id) if event.clinic_id else None,
        "actor_user": str(event.actor_user_id) if event.actor_user_id else None,
        "actor_api_key": str(event.actor_api_key_id) if event.actor_api_key_id else None,
        "actor_label": event.actor_label,
        "action": event.action,
        "object_type": event.object_type,
        "object_id": event.object_id,
        "outcome": event.outcome,
        "ip": event.ip,
        "request_id": event.request_id,
        "created_at": _ts(event.created_at),
        "details": event.details,
        "prev_hash": event.prev_hash,
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def record(
    *,
    action: str,
    clinic_id: uuid.UUID | str | None,
    object_type: str = "",
    object_id: object = "",
    outcome: str = AuditOutcome.SUCCESS,
    details: dict[str, Any] | None = None,
    actor: context.Actor | None = None,
) -> AuditEvent:
    """Append one event to the clinic's chain (or the global chain when ``clinic_id`` is None).

    ``details`` must not contain patient names or other identifying data: ids only.
    """
    actor = actor or context.actor_var.get() or context.Actor()
    chain = chain_key(clinic_id)
    event = AuditEvent(
        chain=chain,
        clinic_id=clinic_id or None,
        actor_user=actor.user,
        actor_api_key=actor.api_key,
        actor_label=actor.label,
        action=action,
        object_type=object_type,
        object_id=str(object_id) if object_id else "",
        outcome=outcome,
        ip=context.client_ip_var.get(),
        request_id=context.request_id_var.get(),
        created_at=timezone.now(),
        details=details or {},
    )
    if clinic_id and str(current_clinic_id()) == str(clinic_id):
        # An event of the clinic in scope: row-level security lets it in as it is, so no bypass -- which on
        # PostgreSQL saves two set_config round trips around the insert of nearly every request.
        QuerySet(AuditEvent).bulk_create([event])  # in the caller's transaction, unsealed, no lock
    else:
        AuditEvent.unscoped.bulk_create([event])  # the global chain, or another clinic's (operator commands)
    if current_app.conf.task_always_eager and not _seal_pending(chain):
        # The embedded default has no worker or beat: seal once the transaction commits (nothing if it rolls back).
        transaction.on_commit(partial(seal_after_commit, chain), robust=True)
    return event


def _seal_pending(chain: str) -> bool:
    """Whether this transaction already seals ``chain`` on commit (one sealing per chain, not one per event)."""
    return any(
        getattr(callback, "func", None) is seal_after_commit and callback.args == (chain,)
        for _, callback, *_ in connection.run_on_commit
    )


def seal_after_commit(chain: str) -> None:
    """The embedded default's sealer, called once a transaction that recorded events of ``chain`` has committed:
    with ``AUDIT_SEAL_IN_BACKGROUND`` (the default) the process's background sealer seals the chain a moment
    later, together with whatever other requests committed meanwhile (the answer does not wait for it, and one
    sealing covers many events); without it, here and now."""
    if settings.AUDIT_SEAL_IN_BACKGROUND:
        background_sealer().request(chain)
    else:
        seal_chain(chain)


class BackgroundSealer:
    """One thread per process that seals the chains asked for, ``delay`` seconds after the first ask of a round
    (asks that arrive meanwhile join the round). Its first round seals every chain with unsealed events, so that
    events a previous process committed but did not live to seal are sealed too. A chain a round could not seal
    to its end (another sealer held it, an older write transaction was open on PostgreSQL, an error) is tried
    again, after a wait that doubles up to ``max_delay`` while rounds make no progress. At exit, the process waits
    for a round in progress and seals what is still asked for. Used only without a broker (a worker's periodic
    task seals otherwise)."""

    def __init__(self, delay: float = 0.2, max_delay: float = 5.0) -> None:
        self.delay, self.max_delay = delay, max(delay, max_delay)
        self._pending: set[str] = set()
        self._wake = threading.Condition()
        self._round = threading.Lock()  # one round at a time in this process (the thread's, or the exit's)
        self._thread: threading.Thread | None = None
        self._swept = False
        self._wait = delay
        self.rounds = 0  # rounds run (tests)
        self.sealing_rounds = 0  # rounds that sealed at least one event (tests)

    def request(self, chain: str) -> None:
        with self._wake:
            self._pending.add(chain)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="audit-sealer", daemon=True)
                self._thread.start()
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._pending:
                    self._wake.wait()
            time.sleep(self._wait)  # let the commits of the next moments join this round
            complete = self.flush()
            self._wait = self.delay if complete else min(2 * self._wait, self.max_delay)
            with self._wake:
                idle = not self._pending
            if idle:
                connection.close()  # this thread's own connection; the next round opens another

    def flush(self, timeout: float = -1) -> bool:
        """Seal the chains asked for so far (every chain with unsealed events on the first round), here and now;
        returns whether each was sealed to its end (those that were not are asked for again). ``timeout``: how long
        to wait for a round in progress (-1: as long as it takes); False if it did not end in time."""
        if not self._round.acquire(timeout=timeout):
            return False
        left: set[str] = set()
        sealed = 0
        try:
            with self._wake:
                chains, self._pending = self._pending, set()
            try:
                if not self._swept:
                    chains |= set(chains_to_seal())
                    self._swept = True
            except Exception:  # noqa: BLE001 - sweep again on the next round
                logger.exception("the audit chains to seal could not be listed")
            for chain in sorted(chains):
                try:
                    while (done := seal_chain(chain)) >= SEAL_BATCH * 20:  # a full run: more may be waiting
                        sealed += done
                    sealed += done
                    if AuditEvent.unscoped.filter(chain=chain, seq__isnull=True).exists():
                        left.add(chain)  # another sealer held the chain, or (PostgreSQL) an older write is open
                except Exception:  # noqa: BLE001 - tried again on the next round; verify_audit_chain reports it
                    logger.exception("audit chain %s could not be sealed", chain)
                    left.add(chain)
                    connection.close_if_unusable_or_obsolete()  # a lost connection: the next round opens another
            self.rounds += 1
            self.sealing_rounds += sealed > 0
        finally:
            if left:
                with self._wake:
                    self._pending |= left
            self._round.release()
        return not left

    def reset_after_fork(self) -> None:
        self._wake, self._round = threading.Condition(), threading.Lock()
        self._pending, self._thread, self._wait = set(), None, self.delay


_SEALER: BackgroundSealer | None = None
_SEALER_LOCK = threading.Lock()


def background_sealer() -> BackgroundSealer:
    global _SEALER  # noqa: PLW0603 - one per process
    with _SEALER_LOCK:
        if _SEALER is None:
            _SEALER = BackgroundSealer(max_delay=settings.AUDIT_SEAL_EVERY_SECONDS)
            atexit.register(_flush_at_exit)
        return _SEALER


def _flush_at_exit(retry_seconds: float = 5.0) -> None:
    """At exit: wait (up to 30 s) for a round in progress, then seal what is still asked for; a chain that could not
    be sealed to its end (on PostgreSQL: a write transaction older than its events still open) is tried again for up
    to ``retry_seconds``. What is left then, the next process's first round seals."""
    sealer = _SEALER
    if sealer is None or not (sealer._pending or sealer._round.locked()):  # noqa: SLF001
        return
    deadline = time.monotonic() + retry_seconds
    try:
        while not sealer.flush(timeout=30) and time.monotonic() < deadline:
            time.sleep(0.1)
    except Exception:  # noqa: BLE001 - the next process's first round seals them
        logger.exception("audit events could not be sealed at exit")


def _after_fork_in_child() -> None:
    global _SEALER_LOCK  # noqa: PLW0603
    _SEALER_LOCK = threading.Lock()
    if _SEALER is not None:
        _SEALER.reset_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


# The oldest transaction that may still commit an event of this database, as seen by the statement's snapshot (the
# one the events are read with): the smallest id the snapshot sees as running, leaving out the ids that backends and
# prepared transactions of *other* databases of the server hold (they cannot write here: a write transaction of
# another application on a shared server must not hold sealing back), or the snapshot's xmax when none is left. It
# errs only on the safe side: an id the activity view no longer lists (ended, or started after its first read in
# this transaction) is kept; a backend's database never changes and an id is never reused within 2^31, so an id it
# lists for another database is not one of ours. Ids in the views are 32-bit: compared modulo 2^32 (``%%``: the
# SQL goes through the driver's placeholders).
_SEALING_BOUND_SQL = """
COALESCE(
  (SELECT min(running::text::bigint) FROM pg_snapshot_xip(pg_current_snapshot()) AS running
    WHERE running::text::bigint %% 4294967296 NOT IN (
      SELECT backend_xid::text::bigint FROM pg_stat_activity
        WHERE backend_xid IS NOT NULL AND datid IS NOT NULL
          AND datid <> (SELECT oid FROM pg_database WHERE datname = current_database())
      UNION ALL
      SELECT transaction::text::bigint FROM pg_prepared_xacts WHERE database <> current_database())),
  pg_snapshot_xmax(pg_current_snapshot())::text::bigint)
"""


def _sealable(chain: str) -> QuerySet[AuditEvent]:
    """The chain's unsealed events that may be sealed now, in sealing order (see the module's invariants)."""
    events = AuditEvent.unscoped.filter(chain=chain, seq__isnull=True)
    if connection.vendor == "postgresql":
        bound = RawSQL(_SEALING_BOUND_SQL, [])  # noqa: S611 - a constant, no input
        return events.filter(xact_id__lt=bound).order_by("xact_id", "id")
    return events.order_by("id")


def seal_chain(chain: str, *, batch_size: int = SEAL_BATCH, max_batches: int = 20) -> int:
    """Append the chain's committed unsealed events to it (``seq``, ``prev_hash``, ``hash``) and move its head,
    in one transaction of at most ``max_batches`` batches (the next run goes on); returns how many were sealed
    (0 as well when another sealer holds the chain)."""
    sealed = 0
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_try_advisory_xact_lock(%s, hashtext(%s))", [SEAL_LOCK_CLASS, chain])
                if not cursor.fetchone()[0]:
                    return 0
        head, _ = AuditChainHead.objects.get_or_create(chain=chain, defaults={"last_seq": 0, "last_hash": GENESIS_HASH})
        seq, prev_hash = head.last_seq, head.last_hash
        for _ in range(max_batches):
            events = list(_sealable(chain)[:batch_size])
            for event in events:
                seq += 1
                event.seq, event.prev_hash = seq, prev_hash
                event.hash = prev_hash = event_hash(event)
            if events:
                AuditEvent.unscoped.bulk_update(events, ["seq", "prev_hash", "hash"])
                sealed += len(events)
            if len(events) < batch_size:
                break
        if sealed:
            AuditChainHead.objects.filter(chain=chain).update(last_seq=seq, last_hash=prev_hash)
    return sealed


def chains_to_seal() -> list[str]:
    return sorted(set(AuditEvent.unscoped.filter(seq__isnull=True).values_list("chain", flat=True).distinct()))


def seal_all() -> int:
    """Seal every chain that has unsealed events (the periodic task and ``manage.py seal_audit``)."""
    sealed = 0
    for chain in chains_to_seal():
        try:  # one chain that cannot be sealed (verify will report it) must not stop the others
            sealed += seal_chain(chain)
        except Exception:  # noqa: BLE001
            logger.exception("audit chain %s could not be sealed", chain)
    return sealed


@dataclass(frozen=True)
class ChainProblem:
    chain: str
    event_id: int | None
    seq: int | None
    reason: str
    overdue: bool = False  # an event the sealer has not sealed in time, not a broken chain

    def __str__(self) -> str:
        if self.event_id is None:
            where = "chain end"
        else:
            where = f"event id={self.event_id} " + (f"(seq {self.seq})" if self.seq is not None else "(unsealed)")
        return f"chain {self.chain}: {where}: {self.reason}"


@dataclass(frozen=True)
class ChainReport:
    chain: str
    events: int  # sealed events verified
    problem: ChainProblem | None
    unsealed: int = 0  # events not sealed yet


def verify_chain(chain: str, checkpoints: dict[int, tuple[str, str]] | None = None) -> ChainReport:
    """Walk one chain's sealed events in ``seq`` order; report the first event that was altered, removed or
    moved, then an unsealed event older than ``AUDIT_SEAL_MAX_AGE_S`` (the sealer stopped). Read-only.

    ``checkpoints`` (``{seq: (hash, checkpoint file)}``, see :mod:`clinics.audit_checkpoints`) are heads
    recorded outside the database: the event at each such seq must still carry that hash, which catches a
    rewrite that recomputed the chain itself."""
    checkpoints = checkpoints or {}
    expected_seq = 1
    prev_hash = GENESIS_HASH
    count = 0
    head = None
    last_order: tuple[int, int] | None = None
    # A sealer may commit while we read: when the head moved past the events read, read on from there.
    for _ in range(5):
        events = AuditEvent.unscoped.filter(chain=chain, seq__isnull=False).order_by("seq", "id")
        if expected_seq > 1:
            events = events.filter(seq__gte=expected_seq)
        for event in events.iterator(chunk_size=2000):
            count += 1
            problem = _event_problem(event, expected_seq, prev_hash, checkpoints)
            # The sealer seals in (xact_id, id) order (PostgreSQL; events from before sealing have no xact_id):
            # events sealed in any other order, with correct hashes, were sealed by someone else.
            if problem is None and event.xact_id is not None:
                if last_order is not None and (event.xact_id, event.id) <= last_order:
                    problem = "sealed out of order (not by the sealer: its order is transaction, then insertion)"
                last_order = (event.xact_id, event.id)
            if problem is not None:
                return ChainReport(chain, count, ChainProblem(chain, event.id, event.seq, problem))
            prev_hash = event.hash
            expected_seq += 1
        head = AuditChainHead.objects.filter(chain=chain).first()
        if head is None or head.last_seq <= expected_seq - 1:
            break
    last_seq = expected_seq - 1
    if head is not None and (head.last_seq != last_seq or head.last_hash != prev_hash):
        if head.last_seq < last_seq:
            reason = (
                f"chain goes on past its head (seq {head.last_seq}) to seq {last_seq} "
                "(events added behind the sealer's back)"
            )
        else:
            reason = (
                f"chain ends at seq {last_seq} but its head records seq {head.last_seq} (events removed at the end)"
            )
        return ChainReport(chain, count, ChainProblem(chain, None, head.last_seq, reason))
    if checkpoints and max(checkpoints) > last_seq:
        seq = max(checkpoints)
        reason = f"chain ends at seq {last_seq} but checkpoint {checkpoints[seq][1]} recorded seq {seq}"
        reason += " (events removed)"
        return ChainReport(chain, count, ChainProblem(chain, None, seq, reason))
    unsealed = AuditEvent.unscoped.filter(chain=chain, seq__isnull=True)
    waiting = unsealed.count()
    max_age = settings.AUDIT_SEAL_MAX_AGE_S
    overdue = unsealed.filter(created_at__lt=timezone.now() - timedelta(seconds=max_age)).order_by("id").first()
    if overdue is not None:
        reason = (
            f"not sealed {max_age:g} s after it was recorded ({_ts(overdue.created_at)}): is the sealer running? "
            "(celery beat audit-seal, or manage.py seal_audit)"
        )
        return ChainReport(chain, count, ChainProblem(chain, overdue.id, None, reason, overdue=True), waiting)
    return ChainReport(chain, count, None, waiting)


def _event_problem(
    event: AuditEvent, expected_seq: int, prev_hash: str, checkpoints: dict[int, tuple[str, str]]
) -> str | None:
    if event.seq != expected_seq:
        if event.seq > expected_seq:
            return f"sequence gap: expected seq {expected_seq}, found {event.seq} (events removed)"
        return f"duplicate or reordered seq {event.seq}"
    if event.prev_hash != prev_hash:
        return "previous-hash link broken (reordered)"
    if event_hash(event) != event.hash:
        return "content does not match its hash (altered)"
    if event.seq in checkpoints and checkpoints[event.seq][0] != event.hash:
        return (
            f"hash differs from the one checkpoint {checkpoints[event.seq][1]} recorded "
            "(this event or an earlier one was rewritten and the chain recomputed)"
        )
    return None


def chains_to_verify(clinic_id: str | None = None) -> list[str]:
    if clinic_id:
        return [chain_key(clinic_id)]
    chains = set(AuditChainHead.objects.values_list("chain", flat=True))
    chains |= set(AuditEvent.unscoped.values_list("chain", flat=True).distinct())
    return sorted(chains)
