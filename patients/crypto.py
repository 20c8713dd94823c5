"""Envelope encryption of patient data.

Key hierarchy: a master key (from the environment, or another ``KeyProvider``) wraps data keys;
each clinic has one data key (blind indexes for search) and each patient has one (their identity
and every blob of their images). Destroying a patient's data key makes every copy of their
ciphertext unreadable (crypto-shredding); rotating the master key re-wraps data keys only.

Invariants: AES-256-GCM everywhere, a fresh 96-bit nonce per encryption, and associated data that
binds a ciphertext to the object it belongs to (``image:<id>:<variant>``, ``patient:<id>``,
``datakey:<id>``), so a ciphertext moved onto another object fails to decrypt. A failed tag check
raises ``IntegrityFailure``; callers never see unauthenticated plaintext.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import os
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

FORMAT_V1 = b"\x01"
NONCE_BYTES = 12


class IntegrityFailure(Exception):
    """Ciphertext did not authenticate: altered, truncated, or bound to another object/key."""


class UnknownMasterKey(IntegrityFailure):
    """The master key a ciphertext names is not configured (e.g. removed after a rotation)."""


def encrypt(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return FORMAT_V1 + nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def decrypt(key: bytes, blob: bytes, aad: bytes) -> bytes:
    if len(blob) < 1 + NONCE_BYTES + 16 or blob[:1] != FORMAT_V1:
        raise IntegrityFailure("not a ciphertext of a known format")
    nonce, body = blob[1 : 1 + NONCE_BYTES], blob[1 + NONCE_BYTES :]
    try:
        return AESGCM(key).decrypt(nonce, body, aad)
    except InvalidTag as exc:
        raise IntegrityFailure("authentication tag mismatch") from exc


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def blind_index(clinic_key: bytes, value: str) -> str:
    """A keyed hash of a normalised value, for exact-match search without storing the value."""
    subkey = hmac.new(clinic_key, b"blind-index-v1", hashlib.sha256).digest()
    normalised = " ".join(value.casefold().split())
    return hmac.new(subkey, normalised.encode(), hashlib.sha256).hexdigest()


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
    return import_string(settings.KEY_PROVIDER)()


def reset_key_provider() -> None:
    key_provider.cache_clear()
