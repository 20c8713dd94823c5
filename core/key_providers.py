"""Master keys: the ``KeyProvider`` that wraps and unwraps data keys, chosen by ``settings.KEY_PROVIDER``.

Invariant: master keys never reach the database; only data keys wrapped by them do (``patients.keys``,
``clinics.mfa``, ``clinics.audit_checkpoints``), each with the id of the master key that wrapped it, so a
rotation re-wraps data keys only. A ciphertext naming a master key that is not configured raises
``UnknownMasterKey``.
"""

from __future__ import annotations

import base64
import binascii
import functools
from typing import Protocol

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from .crypto import UnknownMasterKey, decrypt, encrypt

# Dotted paths that deployments may still name in KEY_PROVIDER after the class moved here.
MOVED_PROVIDERS = {"patients.crypto.StaticKeyProvider": "core.key_providers.StaticKeyProvider"}


class KeyProvider(Protocol):
    """Wraps and unwraps data keys with a master key. Implement this for a KMS or an HSM."""

    def current_key_id(self) -> str: ...

    def wrap(self, key_id: str, data_key: bytes, aad: bytes) -> bytes: ...

    def unwrap(self, key_id: str, wrapped: bytes, aad: bytes) -> bytes: ...


class StaticKeyProvider:
    """Master keys from settings: ``MASTER_KEYS="id1:<base64 32 bytes>,id2:..."`` and ``MASTER_KEY_ID``."""

    def __init__(self, keys: str | None = None, current: str | None = None) -> None:
        spec = settings.MASTER_KEYS if keys is None else keys
        self._keys: dict[str, bytes] = {}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            key_id, _, encoded = item.partition(":")
            try:
                raw = base64.b64decode(encoded, validate=True)
            except binascii.Error as exc:
                raise ImproperlyConfigured(f"Master key {key_id!r} is not valid base64.") from exc
            if len(raw) != 32:
                raise ImproperlyConfigured(f"Master key {key_id!r} must be 32 bytes (AES-256).")
            self._keys[key_id] = raw
        self._current = settings.MASTER_KEY_ID if current is None else current
        if self._current not in self._keys:
            raise ImproperlyConfigured("MASTER_KEY_ID does not name one of MASTER_KEYS.")

    def current_key_id(self) -> str:
        return self._current

    def _key(self, key_id: str) -> bytes:
        try:
            return self._keys[key_id]
        except KeyError as exc:
            raise UnknownMasterKey(f"master key {key_id!r} is not configured") from exc

    def wrap(self, key_id: str, data_key: bytes, aad: bytes) -> bytes:
        return encrypt(self._key(key_id), data_key, aad)

    def unwrap(self, key_id: str, wrapped: bytes, aad: bytes) -> bytes:
        return decrypt(self._key(key_id), wrapped, aad)


@functools.cache
def key_provider() -> KeyProvider:
    path = settings.KEY_PROVIDER
    return import_string(MOVED_PROVIDERS.get(path, path))()


def reset_key_provider() -> None:
    key_provider.cache_clear()
