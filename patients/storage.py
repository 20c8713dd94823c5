"""Blob storage for encrypted image data: local files by default, S3-compatible by settings.

Object names are random ids (``blobs/<32 hex>``), never user file names or patient data.
"""

from __future__ import annotations

import uuid

from django.core.files.base import ContentFile
from django.core.files.storage import Storage, storages


def image_storage() -> Storage:
    return storages["images"]


def blob_put(data: bytes) -> str:
    name = f"blobs/{uuid.uuid4().hex}"
    saved = image_storage().save(name, ContentFile(data))
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
