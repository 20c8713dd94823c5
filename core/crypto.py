"""Authenticated encryption primitives: AES-256-GCM with associated data, and keyed blind indexes.

Invariants: a fresh 96-bit nonce per encryption, and associated data that binds a ciphertext to the
object it belongs to (callers choose it, e.g. ``image:<id>:<variant>``, ``totp:<user id>``), so a
ciphertext moved onto another object fails to decrypt. A failed tag check raises ``IntegrityFailure``;
callers never see unauthenticated plaintext.

Plain Python (no Django), so ``analysis.ml`` and every app may import it. The master keys that wrap
data keys come from ``core.key_providers``; the data keys of clinics and patients from ``patients.keys``.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

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
