"""Rate limits and log-in lockout, written once and used by the HTML views and the API.

``ROUTE_LIMITS`` names, per URL name and method, the limit that applies; limits are counted per
principal inside its clinic (cache keys ``rl:clinic:<id>:...``), so one clinic's burst never uses up
another clinic's allowance. Anonymous routes count per client IP, in a bucket per purpose (log-in, second
factor, password reset, invitation acceptance, token), so people logging in behind one address never use up
that address's password resets; each of those purposes also has a per-account bucket (``hit_account``, the
address typed or the account of the pending step), limit ``<purpose>_account``. Log-in (HTML and API token) counts
only FAILED attempts per account (``account_failure``, checked with ``account_blocked`` before the password is
tried), so nobody can lock a person out by sending requests with the person's address, and that allowance is well
above the per-IP one; a correct password still works while the account is below it.

Lockout: failed log-ins are counted per (email, client IP) pair, not per IP alone, so an attacker
cannot lock a person out from everywhere and cannot reset the count by changing the email; after
``LOCKOUT_FAILURES`` failures that pair is refused for ``LOCKOUT_COOLOFF_SECONDS``. The client IP is
``clinics.middleware.client_ip``: a spoofed X-Forwarded-For is ignored unless it comes from a
trusted proxy.
"""

from __future__ import annotations

import hashlib
import time

from django.conf import settings
from django.core.cache import cache

from .access import Access
from .models import normalize_email

# URL name -> {method: limit name}; limits are in settings.RATE_LIMITS as "count/seconds".
ROUTE_LIMITS: dict[str, dict[str, str]] = {
    "clinics:login": {"POST": "login"},
    "clinics:mfa": {"POST": "second_factor"},
    "clinics:reauth": {"POST": "login"},
    "clinics:account-password": {"POST": "login"},
    "clinics:password-reset": {"POST": "password_reset"},
    "clinics:password-reset-confirm": {"POST": "password_reset"},
    "clinics:invitation-accept": {"POST": "invitation"},
    "clinics:members": {"POST": "invite"},  # sending invitations, per clinic admin (and per address: hit_address)
    "api:token": {"POST": "token"},
    "api:patient-image-list": {"POST": "upload"},
    "api:patient-image-batch": {"POST": "upload"},  # the first file; the view counts each further one
    "patients:upload": {"POST": "upload"},
    "api:analysis-list": {"GET": "analysis"},
    "api:analysis-detail": {"GET": "analysis"},
    "api:patient-export": {"GET": "export"},
    "patients:export": {"POST": "export"},
    "api:audit-event-export": {"GET": "export"},
    "clinics:audit-export": {"GET": "export"},
}


def _parse(limit: str) -> tuple[int, int]:
    count, _, seconds = limit.partition("/")
    return int(count), int(seconds)


def limit_for(view_name: str, method: str) -> str | None:
    method = "GET" if method.upper() == "HEAD" else method.upper()
    return ROUTE_LIMITS.get(view_name, {}).get(method)


def hit(name: str, access: Access | None, ip: str | None) -> int | None:
    """Count one request against limit ``name``, for the member or API key of ``access`` within its clinic
    (the cache key starts with the clinic), or for the client IP when anonymous. Returns seconds to wait
    when over the limit, else None."""
    if access is not None:
        scope = f"clinic:{access.clinic.id}"
        ident = f"key:{access.api_key.pk}" if access.api_key is not None else f"user:{getattr(access.user, 'pk', '')}"
    else:
        scope, ident = "anonymous", f"ip:{ip}"
    return _count(name, scope, ident)


def hit_account(purpose: str, account: str) -> int | None:
    """Count one anonymous attempt of ``purpose`` for one account (an e-mail address, known or not) against the
    limit ``<purpose>_account``, from whatever address it comes. Returns seconds to wait when over it."""
    return _count(f"{purpose}_account", "account", normalize_email(account))


def account_blocked(purpose: str, account: str) -> int | None:
    """Seconds to wait when the failures of ``purpose`` for this account (limit ``<purpose>_account``) are used up
    in the current window, else None. Counts nothing: a request that only asks is never held against the account."""
    return _peek(f"{purpose}_account", "account", normalize_email(account))


def account_failure(purpose: str, account: str) -> None:
    """Count one failed attempt of ``purpose`` for this account (known or not), from whatever address."""
    _count(f"{purpose}_account", "account", normalize_email(account))


def hit_address(name: str, email: str, *, clinic_id: object = None) -> int | None:
    """Count one request against limit ``name`` for an email address (whoever sends it), e.g. reset mails; with
    ``clinic_id``, within that clinic only (invitations: one clinic's count tells another nothing)."""
    scope = f"clinic:{clinic_id}:address" if clinic_id else "address"
    return _count(name, scope, normalize_email(email))


def _key(name: str, scope: str, ident: str, bucket: int) -> str:
    return f"rl:{scope}:{name}:{hashlib.sha256(ident.encode()).hexdigest()[:32]}:{bucket}"


def _peek(name: str, scope: str, ident: str) -> int | None:
    count, window = _parse(settings.RATE_LIMITS[name])
    now = int(time.time())
    bucket = now // window
    if (cache.get(_key(name, scope, ident, bucket)) or 0) >= count:
        return max(1, (bucket + 1) * window - now)
    return None


def _count(name: str, scope: str, ident: str) -> int | None:
    count, window = _parse(settings.RATE_LIMITS[name])
    now = int(time.time())
    bucket = now // window
    key = _key(name, scope, ident, bucket)
    cache.add(key, 0, timeout=window + 5)
    try:
        used = cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, timeout=window + 5)
        used = 1
    if used > count:
        return max(1, (bucket + 1) * window - now)
    return None


def _lock_key(email: str, ip: str | None) -> str:
    digest = hashlib.sha256(f"{normalize_email(email)}|{ip or '-'}".encode()).hexdigest()[:40]
    return f"lockout:{digest}"


def locked_for(email: str, ip: str | None) -> int | None:
    """Seconds left of a lockout of this (email, IP) pair, or None."""
    until = cache.get(_lock_key(email, ip) + ":until")
    if until is None:
        return None
    left = int(until - time.time())
    return left if left > 0 else None


def failure(email: str, ip: str | None) -> int | None:
    """Record a failed log-in; returns the cool-off in seconds when this failure locks the pair."""
    key = _lock_key(email, ip)
    cooloff = settings.LOCKOUT_COOLOFF_SECONDS
    cache.add(key, 0, timeout=cooloff)
    try:
        failures = cache.incr(key)
    except ValueError:
        cache.set(key, 1, timeout=cooloff)
        failures = 1
    if failures >= settings.LOCKOUT_FAILURES:
        cache.set(key + ":until", time.time() + cooloff, timeout=cooloff)
        cache.delete(key)
        return cooloff
    return None


def success(email: str, ip: str | None) -> None:
    key = _lock_key(email, ip)
    cache.delete_many([key, key + ":until"])
