"""Blob storage for encrypted image data: local files by default, S3-compatible by settings.

Object names are random ids (``blobs/<32 hex>``), never user file names or patient data.
"""

from __future__ import annotations

import logging
import uuid

from django.core.files.base import ContentFile
from django.core.files.storage import Storage, storages

logger = logging.getLogger(__name__)


def image_storage() -> Storage:
    return storages["images"]


def blob_put(data: bytes) -> str:
    """Store one blob under a new random name. A failed write (disk full, I/O error, storage down)
    removes whatever part of it was written, so a failed upload never leaves an orphan."""
    name = f"blobs/{uuid.uuid4().hex}"
    storage = image_storage()
    try:
        saved = storage.save(name, ContentFile(data))
    except BaseException:
        try:
            if storage.exists(name):
                storage.delete(name)
        except Exception:  # noqa: BLE001 - the write error is the one to report
            logger.exception("could not remove the partly written blob %s", name)
        raise
    if saved != name:  # a collision of 128 random bits would be a bug elsewhere
        raise RuntimeError("storage renamed a blob")
    return saved


def blob_get(name: str) -> bytes:
    with image_storage().open(name, "rb") as handle:
        return handle.read()


def blob_delete(name: str) -> None:
    image_storage().delete(name)


def blob_exists(name: str) -> bool:
    return image_storage().exists(name)


def blob_size(name: str) -> int:
    """Stored size in bytes; 0 for a blob that is missing."""
    storage = image_storage()
    try:
        return storage.size(name)
    except Exception:  # missing: FileNotFoundError on local files, botocore's ClientError (404) on S3
        if storage.exists(name):
            raise
        return 0
