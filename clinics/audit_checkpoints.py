"""Audit checkpoints: every chain's head, sealed with the master key and kept outside the database.

The hash chains reveal an edit, removal or reordering made behind the application's back -- unless
whoever made it also recomputed every later hash and the chain head, which the database's owner can
do. A checkpoint records each chain's ``(seq, hash)`` at one moment, sealed by the key provider's
current master key (which the database does not hold) and written to separate storage
(``STORAGES["audit_checkpoints"]``; in production a bucket of its own, ideally with object lock).
Verification then also checks that every checkpointed head is still in its chain: rewriting any event
up to a checkpoint, or removing events up to it, is reported even when the chain was recomputed. The
events after the newest checkpoint are protected by the chain alone; the periodic task
``clinics.audit_checkpoint`` (``AUDIT_CHECKPOINT_EVERY_SECONDS``) bounds that window.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.core.files.base import ContentFile
from django.core.files.storage import Storage, storages
from django.utils import timezone

from core.crypto import IntegrityFailure, UnknownMasterKey
from core.key_providers import key_provider

from .audit import record
from .models import AuditChainHead

AAD = b"dentalscan:audit-checkpoint:v1"
FOLDER = "checkpoints"
NEWEST = 48  # checkpoints read by verification: two days of hourly ones


def checkpoint_storage() -> Storage:
    return storages["audit_checkpoints"]


def _canonical(body: dict) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def checkpoint_write() -> tuple[str, int]:
    """Write one checkpoint of every chain's committed head (and record that in the global chain);
    returns (file name, number of chains)."""
    created = timezone.now()
    heads = [
        {"chain": h.chain, "seq": h.last_seq, "hash": h.last_hash}
        for h in AuditChainHead.objects.order_by("chain")
        if h.last_seq > 0
    ]
    body = {"version": 1, "created_at": created.isoformat(), "heads": heads}
    provider = key_provider()
    key_id = provider.current_key_id()
    seal = provider.wrap(key_id, hashlib.sha256(_canonical(body)).digest(), AAD)
    document = {"body": body, "key_id": key_id, "seal": base64.b64encode(seal).decode()}
    name = f"{FOLDER}/{created.strftime('%Y%m%dT%H%M%S%fZ')}-{uuid.uuid4().hex[:8]}.json"
    saved = checkpoint_storage().save(name, ContentFile(json.dumps(document, indent=1).encode()))
    record(action="audit.checkpoint", clinic_id=None, object_type="audit_trail", details={"chains": len(heads)})
    return saved, len(heads)


@dataclass
class Checkpoints:
    """Heads by chain (``{chain: {seq: (hash, file)}}``) from the checkpoints whose seal holds; a problem
    line for each checkpoint whose seal does not hold (forged or altered) or that is not a checkpoint at
    all; and the checkpoints sealed with a master key that is no longer configured (after a rotation that
    removed the old key), which can be neither trusted nor refuted and are only listed."""

    heads: dict[str, dict[int, tuple[str, str]]] = field(default_factory=dict)
    files: int = 0
    problems: list[str] = field(default_factory=list)
    unverifiable: list[str] = field(default_factory=list)


def _open(storage: Storage, name: str) -> dict:
    with storage.open(name, "rb") as handle:
        document = json.loads(handle.read())
    body = document["body"]
    sealed_digest = key_provider().unwrap(document["key_id"], base64.b64decode(document["seal"]), AAD)
    if sealed_digest != hashlib.sha256(_canonical(body)).digest():
        raise IntegrityFailure("the content does not match its seal")
    return body


# The names ``checkpoint_write`` gives: the time (UTC, to the microsecond), then a random suffix.
NAME_RE = re.compile(r"^(\d{8}T\d{12}Z)-[0-9a-f]{8}\.json$")
FUTURE_SLACK = timedelta(minutes=10)  # clocks of the writing and the verifying machines may differ a little


def checkpoints_load(newest: int = NEWEST) -> Checkpoints:
    """The ``newest`` checkpoints whose seal holds, newest first by name (which starts with the time). The newest
    one alone already covers every event up to its heads -- a rewrite of any of them changes the hash it recorded
    -- so older ones only matter if newer ones were deleted, which object lock prevents; reading a bounded number
    keeps verification fast after years of hourly checkpoints.

    Only sealed checkpoints count towards ``newest``: files someone added (object lock stops removal, not
    addition) cannot push the real ones out of it. A file in the folder that is not a checkpoint by its name, dated
    in the future, or whose sealed time is not its name's, is a problem; one sealed with a master key no longer
    configured is listed as unverifiable and read past."""
    storage = checkpoint_storage()
    found = Checkpoints()
    try:
        _, files = storage.listdir(FOLDER)
    except FileNotFoundError:  # none written yet (local folder absent)
        return found
    latest = (timezone.now() + FUTURE_SLACK).strftime("%Y%m%dT%H%M%S%fZ")
    for file_name in sorted(files, reverse=True):
        name = f"{FOLDER}/{file_name}"
        matched = NAME_RE.match(file_name)
        if matched is None:
            found.problems.append(f"checkpoint {name}: not a checkpoint's name (added behind the writer's back)")
            continue
        if matched.group(1) > latest:
            found.problems.append(f"checkpoint {name}: dated in the future (added behind the writer's back)")
            continue
        if found.files >= newest:
            continue  # older than the newest sealed ones: their names were checked, their contents are not read
        try:
            body = _open(storage, name)
        except UnknownMasterKey as exc:
            found.unverifiable.append(f"checkpoint {name}: {exc}")
            continue
        except (IntegrityFailure, ValueError, KeyError, TypeError) as exc:
            # forged, altered, or not a checkpoint at all
            found.problems.append(f"checkpoint {name}: cannot be trusted ({exc})")
            continue
        sealed_at = datetime.fromisoformat(body["created_at"]).astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        if sealed_at != matched.group(1):
            found.problems.append(f"checkpoint {name}: sealed at {body['created_at']}, not at its name's time")
            continue
        found.files += 1
        for head in body["heads"]:
            recorded = found.heads.setdefault(head["chain"], {})
            seq = int(head["seq"])
            if seq in recorded and recorded[seq][0] != head["hash"]:  # read newest first: the newer one is there
                found.problems.append(
                    f"checkpoints {name} and {recorded[seq][1]} record different hashes for seq {seq} of chain "
                    f"{head['chain']} (the chain was rewritten between them)"
                )
            recorded.setdefault(seq, (head["hash"], name))  # the newest checkpoint that recorded this head
    return found
