"""Blobs in the image storage that no row names any more: what a process killed between writing a blob and
committing the row that names it (an upload, a preview, a DICOM instance held in the inbox) left behind, or a blob
whose removal failed after its image was erased. They are unreadable without their row (the data key is gone or
never named them) but they take space the clinic's quota does not count.

``orphan_blobs`` finds them; ``manage.py remove_orphan_blobs`` lists them and, with ``--delete``, removes them.
Apps whose rows name blobs in this storage register where those names are (``blob_references_register``), so
this layer needs no import of the layers above it.

Deliberately cross-clinic (``unscoped``): an operator command over the whole storage.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils import timezone

from clinics import audit
from clinics.models import AuditOutcome

from .models import Image
from .storage import image_storage

# Only names this code makes (``storage.blob_put``); anything else in the bucket or folder is left alone.
BLOB_NAME = re.compile(r"blobs/[0-9a-f]{32}")

# ``--delete`` refuses (without ``--force``) when more than this share of the storage's blobs is unnamed.
MAX_SHARE = 0.05

_REFERENCES: list[Callable[[], Iterable[str]]] = []


def blob_references_register(source: Callable[[], Iterable[str]]) -> None:
    """Register a callable that yields the blob names some rows hold (every clinic's: it is run unscoped)."""
    if source not in _REFERENCES:
        _REFERENCES.append(source)


def _image_blobs() -> Iterable[str]:
    for names in Image.unscoped.values_list(*Image.BLOB_FIELDS.values()).iterator():
        yield from names


blob_references_register(_image_blobs)


def named_blobs() -> set[str]:
    """Every blob name some row holds, across clinics. (Held in memory: about 100 bytes a name, four names an
    image.)"""
    return {name for source in _REFERENCES for name in source() if name}


@dataclass(frozen=True)
class OrphanBlob:
    name: str
    size: int
    modified: datetime


@dataclass
class OrphanSearch:
    listed: int  # blobs of ours in the storage
    named: int  # blob names the rows hold
    orphans: list[OrphanBlob]

    @property
    def bytes(self) -> int:
        return sum(blob.size for blob in self.orphans)

    def implausible(self, max_share: float = MAX_SHARE) -> str:
        """Why removing these looks like a mistake rather than leftovers ("" when it does not): rows that name no
        blob at all beside a storage that holds some, or a large share of the storage unnamed -- the database and
        the storage are not each other's (a restored or staging database beside production's bucket), or the rows
        could not all be read."""
        if self.listed and not self.named:
            return f"the storage holds {self.listed} blob(s) but no row names any"
        if self.orphans and len(self.orphans) > max_share * self.listed:
            return (
                f"{len(self.orphans)} of the storage's {self.listed} blob(s) are unnamed, more than "
                f"{max_share:.0%}: is this the database of this storage?"
            )
        return ""


def orphan_blobs(*, older_than: timedelta, now: datetime | None = None) -> OrphanSearch:
    """The stored blobs no row names, last written more than ``older_than`` before ``now`` (a younger one may belong
    to an upload whose row has not committed yet). The storage is listed first and the rows read afterwards, so a
    blob named by a row committed in between is kept."""
    storage = image_storage()
    try:
        listed = [f"blobs/{name}" for name in storage.listdir("blobs")[1] if BLOB_NAME.fullmatch(f"blobs/{name}")]
    except FileNotFoundError:  # nothing stored yet
        listed = []
    named = named_blobs()
    cutoff = (now or timezone.now()) - older_than
    found = []
    for name in sorted(set(listed) - named):
        try:
            modified = storage.get_modified_time(name)  # (S3: a HEAD request, for the unnamed ones only)
            size = storage.size(name)
        except Exception:  # missing: FileNotFoundError on local files, botocore's ClientError (404) on S3
            if storage.exists(name):
                raise
            continue  # removed meanwhile (an erasure's own clean-up)
        if modified <= cutoff:
            found.append(OrphanBlob(name=name, size=size, modified=modified))
    return OrphanSearch(listed=len(listed), named=len(named), orphans=found)


def orphan_blobs_remove(blobs: list[OrphanBlob]) -> int:
    """Remove the blobs ``orphan_blobs`` found, except any a row names by now (the rows are read again first);
    audited on the global chain with their names (random ids), also when a removal fails part-way."""
    storage = image_storage()
    named = named_blobs()
    removed: list[OrphanBlob] = []
    outcome = AuditOutcome.FAILURE
    try:
        for blob in blobs:
            if blob.name in named:
                continue
            storage.delete(blob.name)
            removed.append(blob)
        outcome = AuditOutcome.SUCCESS
    finally:
        audit.record(
            action="storage.orphans.remove",
            clinic_id=None,  # the global chain: the storage is every clinic's
            object_type="storage",
            outcome=outcome,
            details={
                "blobs": len(removed),
                "bytes": sum(blob.size for blob in removed),
                "names": [blob.name for blob in removed],
            },
        )
    return len(removed)
