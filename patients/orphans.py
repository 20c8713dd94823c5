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
from datetime import timedelta

from django.utils import timezone

from clinics import audit

from .models import Image
from .storage import image_storage

# Only names this code makes (``storage.blob_put``); anything else in the bucket or folder is left alone.
BLOB_NAME = re.compile(r"blobs/[0-9a-f]{32}")

_REFERENCES: list[Callable[[], Iterable[str]]] = []


def blob_references_register(source: Callable[[], Iterable[str]]) -> None:
    """Register a callable that yields the blob names some rows hold (every clinic's: it is run unscoped)."""
    if source not in _REFERENCES:
        _REFERENCES.append(source)


def _image_blobs() -> Iterable[str]:
    fields = ("original_key", "preview_key", "thumbnail_key", "model_input_key")
    for names in Image.unscoped.values_list(*fields).iterator(chunk_size=5000):
        yield from names


blob_references_register(_image_blobs)


@dataclass(frozen=True)
class OrphanBlob:
    name: str
    size: int
    modified: object  # datetime


def orphan_blobs(*, older_than: timedelta) -> list[OrphanBlob]:
    """The stored blobs no row names, last written more than ``older_than`` ago (a younger one may belong to an
    upload whose row has not committed yet). The storage is listed first and the rows read afterwards, so a blob
    named by a row committed in between is kept."""
    storage = image_storage()
    try:
        listed = storage.listdir("blobs")[1]
    except FileNotFoundError:  # nothing stored yet
        return []
    unnamed = {f"blobs/{name}" for name in listed if BLOB_NAME.fullmatch(f"blobs/{name}")}
    for source in _REFERENCES:
        for name in source():
            unnamed.discard(name)
    cutoff = timezone.now() - older_than
    found = []
    for name in sorted(unnamed):
        try:
            modified = storage.get_modified_time(name)
            size = storage.size(name)
        except Exception:  # missing: FileNotFoundError on local files, botocore's ClientError (404) on S3
            if storage.exists(name):
                raise
            continue  # removed meanwhile (an erasure's own clean-up)
        if modified <= cutoff:
            found.append(OrphanBlob(name=name, size=size, modified=modified))
    return found


def orphan_blobs_remove(blobs: list[OrphanBlob]) -> int:
    """Remove the blobs ``orphan_blobs`` found; audited on the global chain (how many, how many bytes)."""
    storage = image_storage()
    removed = 0
    for blob in blobs:
        storage.delete(blob.name)
        removed += 1
    audit.record(
        action="storage.orphans.remove",
        clinic_id=None,  # the global chain: the storage is every clinic's
        object_type="storage",
        details={"blobs": removed, "bytes": sum(blob.size for blob in blobs)},
    )
    return removed
