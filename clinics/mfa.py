"""Multi-factor authentication: TOTP (RFC 6238) with single-use recovery codes.

Invariants: dentists and clinic admins (in any clinic) cannot reach patient data, in the browser or
through a user token, without a confirmed TOTP device and a code checked at log-in; an accepted
code's 30-second step is remembered, so the same code (or an older one) is refused afterwards;
recovery codes are stored as hashes and work once. The shared secret is wrapped by the master key
provider, like the clinics' data keys.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time

import pyotp
from django.db import transaction
from django.utils import timezone

from core.key_providers import key_provider

from . import audit
from .models import Membership, RecoveryCode, Role, TotpDevice, User

ISSUER = "DentalScan"
MFA_REQUIRED_ROLES = frozenset({Role.DENTIST, Role.CLINIC_ADMIN})
RECOVERY_CODE_COUNT = 10
VALID_WINDOW = 1  # accept the previous and next 30-second step (clock drift)


def _aad(user_id: object) -> bytes:
    return f"totp:{user_id}".encode()


def _hash_code(user: User, code: str) -> str:
    normalised = code.replace("-", "").replace(" ", "").lower()
    return hashlib.sha256(f"{user.pk}:{normalised}".encode()).hexdigest()


def mfa_required(user: User) -> bool:
    """True when any active membership of the user is a role that needs MFA."""
    return Membership.unscoped.filter(
        user=user, is_active=True, clinic__is_active=True, role__in=MFA_REQUIRED_ROLES
    ).exists()


def has_mfa(user: User) -> bool:
    return TotpDevice.objects.filter(user=user, confirmed_at__isnull=False).exists()


def _secret(device: TotpDevice) -> str:
    raw = key_provider().unwrap(device.master_key_id, bytes(device.wrapped_secret), _aad(device.user_id))
    return base64.b32encode(raw).decode()


def enrol_begin(user: User) -> str:
    """Create (or replace an unconfirmed) device and return its base32 secret for the authenticator."""
    existing = TotpDevice.objects.filter(user=user).first()
    if existing is not None and existing.confirmed_at is not None:
        raise ValueError("This account already has a confirmed authenticator.")
    raw = secrets.token_bytes(20)
    provider = key_provider()
    key_id = provider.current_key_id()
    TotpDevice.objects.update_or_create(
        user=user,
        defaults={
            "master_key_id": key_id,
            "wrapped_secret": provider.wrap(key_id, raw, _aad(user.pk)),
            "confirmed_at": None,
            "last_step": 0,
        },
    )
    return base64.b32encode(raw).decode()


def pending_secret(user: User) -> str | None:
    device = TotpDevice.objects.filter(user=user, confirmed_at__isnull=True).first()
    return _secret(device) if device is not None else None


def provisioning_uri(user: User, secret: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=user.email, issuer_name=ISSUER)


def _accept_totp(device: TotpDevice, code: str, now: float | None = None) -> bool:
    """Check a code against the device and remember its step; refuses replays. Call under a row lock."""
    code = code.strip().replace(" ", "")
    if not (code.isdigit() and len(code) == 6):
        return False
    totp = pyotp.TOTP(_secret(device))
    now = time.time() if now is None else now
    current = int(now // totp.interval)
    for step in range(current - VALID_WINDOW, current + VALID_WINDOW + 1):
        if step <= device.last_step:
            continue
        if hmac.compare_digest(totp.generate_otp(step), code):
            device.last_step = step
            device.save(update_fields=["last_step"])
            return True
    return False


@transaction.atomic
def enrol_confirm(user: User, code: str) -> list[str] | None:
    """Confirm the pending device with a first code; returns new recovery codes (shown once)."""
    device = TotpDevice.objects.select_for_update().filter(user=user, confirmed_at__isnull=True).first()
    if device is None or not _accept_totp(device, code):
        return None
    device.confirmed_at = timezone.now()
    device.save(update_fields=["confirmed_at"])
    codes = recovery_codes_regenerate(user)
    audit.record(action="auth.mfa.enrol", clinic_id=audit_clinic_of(user), object_type="user", object_id=user.pk)
    return codes


def recovery_codes_left(user: User) -> int:
    return RecoveryCode.objects.filter(user=user, used_at__isnull=True).count()


@transaction.atomic
def mfa_remove(user: User) -> bool:
    """Remove the person's authenticator and recovery codes (a lost phone); returns whether there was one.
    Their next log-in enrols a new one where a role needs it. Callers audit and end sessions."""
    had = has_mfa(user)
    TotpDevice.objects.filter(user=user).delete()
    RecoveryCode.objects.filter(user=user).delete()
    return had


@transaction.atomic
def recovery_codes_regenerate(user: User) -> list[str]:
    RecoveryCode.objects.filter(user=user).delete()
    codes = [f"{secrets.token_hex(4)}-{secrets.token_hex(4)}" for _ in range(RECOVERY_CODE_COUNT)]
    RecoveryCode.objects.bulk_create([RecoveryCode(user=user, code_hash=_hash_code(user, c)) for c in codes])
    return codes


@transaction.atomic
def verify(user: User, code: str) -> str | None:
    """Check a second factor: a TOTP code or an unused recovery code. Returns the method used."""
    code = (code or "").strip()
    if not code:
        return None
    device = TotpDevice.objects.select_for_update().filter(user=user, confirmed_at__isnull=False).first()
    if device is None:
        return None
    if _accept_totp(device, code):
        return "totp"
    recovery = (
        RecoveryCode.objects.select_for_update()
        .filter(user=user, used_at__isnull=True, code_hash=_hash_code(user, code))
        .first()
    )
    if recovery is not None:
        recovery.used_at = timezone.now()
        recovery.save(update_fields=["used_at"])
        audit.record(
            action="auth.mfa.recovery_code_used", clinic_id=audit_clinic_of(user), object_type="user", object_id=user.pk
        )
        return "recovery_code"
    return None


def audit_clinic_of(user: User) -> object:
    """The clinic whose trail records an event about the person that no clinic request carries (log-in steps,
    password reset): their oldest active membership, or None (the global chain)."""
    membership = Membership.unscoped.filter(user=user, is_active=True).order_by("created_at").first()
    return membership.clinic_id if membership else None


def totp_rewrap_all() -> int:
    """Re-wrap every TOTP secret with the current master key (part of ``rotate_master_key``)."""
    provider = key_provider()
    target = provider.current_key_id()
    count = 0
    for device in TotpDevice.objects.exclude(master_key_id=target):
        raw = provider.unwrap(device.master_key_id, bytes(device.wrapped_secret), _aad(device.user_id))
        # only if the row still holds what was read: a person who re-enrolled meanwhile keeps the new secret (a
        # later run re-wraps it)
        count += TotpDevice.objects.filter(
            pk=device.pk, master_key_id=device.master_key_id, wrapped_secret=device.wrapped_secret
        ).update(master_key_id=target, wrapped_secret=provider.wrap(target, raw, _aad(device.user_id)))
    return count


def demo_enrol(user: User, secret_b32: str) -> None:
    """Enrol a known secret (``seed_demo`` only, so the printed secret works in an authenticator)."""
    raw = base64.b32decode(secret_b32)
    provider = key_provider()
    key_id = provider.current_key_id()
    device = TotpDevice.objects.filter(user=user).first()
    if device is not None and device.confirmed_at is not None and _secret(device) == secret_b32:
        return
    TotpDevice.objects.update_or_create(
        user=user,
        defaults={
            "master_key_id": key_id,
            "wrapped_secret": provider.wrap(key_id, raw, _aad(user.pk)),
            "confirmed_at": timezone.now(),
            "last_step": 0,
        },
    )
