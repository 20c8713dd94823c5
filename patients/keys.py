"""Data keys of clinics and patients: creation, unwrapping, master-key rotation, destruction.

Key hierarchy (envelope encryption): a master key (``core.key_providers``) wraps data keys; each clinic
has one data key (blind indexes for search) and each patient has one (their identity and every blob of
their images), all used with ``core.crypto`` and associated data naming the object (``image:<id>:<variant>``,
``patient:<id>``, ``datakey:<id>``). Destroying a patient's data key makes every copy of their ciphertext
unreadable (crypto-shredding); rotating the master key re-wraps data keys only.
"""

from __future__ import annotations

import uuid
from collections import Counter

from django.db import IntegrityError, transaction
from django.utils import timezone

from clinics import audit, context
from clinics.mfa import totp_rewrap_all
from clinics.models import TotpDevice
from clinics.tenancy import clinic_scope, require_clinic_id
from core import crypto
from core.key_providers import key_provider

from .models import DataKey, Patient

_NOT_LOADED = object()


def _aad(key: DataKey) -> bytes:
    return f"datakey:{key.id}:{key.clinic_id}:{key.patient_id or ''}".encode()


def _wrap_new(*, patient_id: uuid.UUID | None) -> tuple[DataKey, bytes]:
    provider = key_provider()
    raw = crypto.new_data_key()
    key = DataKey(
        id=uuid.uuid4(), clinic_id=require_clinic_id(), patient_id=patient_id, master_key_id=provider.current_key_id()
    )
    key.wrapped = provider.wrap(key.master_key_id, raw, _aad(key))
    return key, raw


def unwrap(key: DataKey) -> bytes:
    """The raw data key. Inside a request, each wrapped key is unwrapped once (``clinics.context.request_cache``:
    a page decrypting many things of one patient, or the clinic's search key, unwraps it once); outside a request
    (tasks, commands) nothing is kept."""
    wrapped = bytes(key.wrapped)
    cache = context.request_cache()
    if cache is None:
        return key_provider().unwrap(key.master_key_id, wrapped, _aad(key))
    slot = ("datakey", key.id, key.clinic_id, key.patient_id, key.master_key_id, wrapped)
    raw = cache.get(slot)
    if raw is None:
        raw = cache[slot] = key_provider().unwrap(key.master_key_id, wrapped, _aad(key))
    return raw


def keys_forget() -> None:
    """Drop the data keys this request unwrapped (after a key is destroyed: nothing may outlive it in memory)."""
    cache = context.request_cache()
    if cache is not None:
        for slot in [s for s in cache if isinstance(s, tuple) and s and s[0] == "datakey"]:
            del cache[slot]


def clinic_key() -> bytes:
    """The data key of the clinic in scope (created on first use)."""
    existing = DataKey.objects.filter(patient__isnull=True).first()
    if existing is not None:
        return unwrap(existing)
    key, raw = _wrap_new(patient_id=None)
    try:
        with transaction.atomic():
            key.save(force_insert=True)
    except IntegrityError:  # created concurrently: use the winner's key
        return unwrap(DataKey.objects.get(patient__isnull=True))
    return raw


def patient_key_new(patient_id: uuid.UUID) -> tuple[DataKey, bytes]:
    """A new data key for a patient; the caller saves it after the patient row."""
    return _wrap_new(patient_id=patient_id)


def patient_key(patient: Patient) -> bytes:
    """The patient's data key; uses the key loaded by ``Patient.objects.with_data_keys()`` or by
    ``prefetch_related("data_keys")`` when the caller did either."""
    loaded = patient.__dict__.get("_data_key", _NOT_LOADED)
    if loaded is _NOT_LOADED:
        keys = list(patient.data_keys.all())
        loaded = keys[0] if keys else None
    if loaded is None:
        raise crypto.IntegrityFailure(f"the data key of patient {patient.pk} no longer exists")
    return unwrap(loaded)


def keys_not_on_current_master_key() -> int:
    """Data keys and authenticator secrets still wrapped with another master key than the current one (every
    clinic's: an operator's check after ``master_key_rotate``)."""
    target = key_provider().current_key_id()
    return (
        DataKey.unscoped.exclude(master_key_id=target).count()
        + TotpDevice.objects.exclude(master_key_id=target).count()
    )


def master_key_rotate() -> dict[str, int]:
    """Re-wrap every data key of every clinic with the current master key; blobs are untouched.

    Deliberately cross-clinic (``unscoped``): an operator command, audited per clinic."""
    provider = key_provider()
    target = provider.current_key_id()
    per_clinic: Counter[str] = Counter()
    for key_id in DataKey.unscoped.exclude(master_key_id=target).values_list("id", flat=True).iterator():
        with transaction.atomic():
            key = DataKey.unscoped.select_for_update().get(pk=key_id)
            if key.master_key_id == target:
                continue
            raw = unwrap(key)
            key.wrapped = provider.wrap(target, raw, _aad(key))
            key.master_key_id, key.rotated_at = target, timezone.now()
            DataKey.unscoped.filter(pk=key.pk).update(
                wrapped=key.wrapped, master_key_id=key.master_key_id, rotated_at=key.rotated_at
            )
            per_clinic[str(key.clinic_id)] += 1
    totp_rewrap_all()
    for clinic_id, count in per_clinic.items():
        with clinic_scope(clinic_id):
            audit.record(
                action="crypto.master_key.rotate",
                clinic_id=clinic_id,
                object_type="data_key",
                details={"rewrapped": count, "master_key_id": target},
            )
    return dict(per_clinic)
