"""The tamper-evident audit trail: writing events into per-clinic hash chains and verifying them.

Invariant: ``record`` is the only writer of ``AuditEvent``. It locks the chain head row
(``SELECT ... FOR UPDATE``) inside the caller's transaction, so concurrent writers of one clinic
are serialised and each event's ``prev_hash`` is the hash of the event before it. The event
commits or rolls back together with the action it records.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from . import context
from .models import AuditChainHead, AuditEvent, AuditOutcome

GENESIS_HASH = "0" * 64
GLOBAL_CHAIN = "global"


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
    with transaction.atomic():
        head, _ = AuditChainHead.objects.select_for_update().get_or_create(
            chain=chain, defaults={"last_seq": 0, "last_hash": GENESIS_HASH}
        )
        event = AuditEvent(
            chain=chain,
            seq=head.last_seq + 1,
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
            prev_hash=head.last_hash,
        )
        event.hash = event_hash(event)
        AuditEvent.unscoped.bulk_create([event])
        AuditChainHead.objects.filter(chain=chain).update(last_seq=event.seq, last_hash=event.hash)
    return event


@dataclass(frozen=True)
class ChainProblem:
    chain: str
    event_id: int | None
    seq: int | None
    reason: str

    def __str__(self) -> str:
        where = f"event id={self.event_id} (seq {self.seq})" if self.event_id is not None else "chain end"
        return f"chain {self.chain}: {where}: {self.reason}"


@dataclass(frozen=True)
class ChainReport:
    chain: str
    events: int
    problem: ChainProblem | None


def verify_chain(chain: str, checkpoints: dict[int, tuple[str, str]] | None = None) -> ChainReport:
    """Walk one chain in ``seq`` order; report the first event that was altered, removed or moved.

    ``checkpoints`` (``{seq: (hash, checkpoint file)}``, see :mod:`clinics.audit_checkpoints`) are heads
    recorded outside the database: the event at each such seq must still carry that hash, which catches a
    rewrite that recomputed the chain itself."""
    checkpoints = checkpoints or {}
    expected_seq = 1
    prev_hash = GENESIS_HASH
    count = 0
    events = AuditEvent.unscoped.filter(chain=chain).order_by("seq", "id")
    for event in events.iterator(chunk_size=2000):
        count += 1
        if event.seq != expected_seq:
            reason = (
                f"sequence gap: expected seq {expected_seq}, found {event.seq} (events removed)"
                if event.seq > expected_seq
                else f"duplicate or reordered seq {event.seq}"
            )
            return ChainReport(chain, count, ChainProblem(chain, event.id, event.seq, reason))
        if event.prev_hash != prev_hash:
            return ChainReport(
                chain, count, ChainProblem(chain, event.id, event.seq, "previous-hash link broken (reordered)")
            )
        if event_hash(event) != event.hash:
            return ChainReport(
                chain, count, ChainProblem(chain, event.id, event.seq, "content does not match its hash (altered)")
            )
        if event.seq in checkpoints and checkpoints[event.seq][0] != event.hash:
            reason = (
                f"hash differs from the one checkpoint {checkpoints[event.seq][1]} recorded "
                "(this event or an earlier one was rewritten and the chain recomputed)"
            )
            return ChainReport(chain, count, ChainProblem(chain, event.id, event.seq, reason))
        prev_hash = event.hash
        expected_seq += 1
    head = AuditChainHead.objects.filter(chain=chain).first()
    last_seq = expected_seq - 1
    if head is not None and (head.last_seq != last_seq or head.last_hash != prev_hash):
        reason = f"chain ends at seq {last_seq} but its head records seq {head.last_seq} (events removed at the end)"
        return ChainReport(chain, count, ChainProblem(chain, None, head.last_seq, reason))
    if checkpoints and max(checkpoints) > last_seq:
        seq = max(checkpoints)
        reason = f"chain ends at seq {last_seq} but checkpoint {checkpoints[seq][1]} recorded seq {seq}"
        reason += " (events removed)"
        return ChainReport(chain, count, ChainProblem(chain, None, seq, reason))
    return ChainReport(chain, count, None)


def chains_to_verify(clinic_id: str | None = None) -> list[str]:
    if clinic_id:
        return [chain_key(clinic_id)]
    chains = set(AuditChainHead.objects.values_list("chain", flat=True))
    chains |= set(AuditEvent.unscoped.values_list("chain", flat=True).distinct())
    return sorted(chains)
