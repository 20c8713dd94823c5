"""Writes for clinics, members, API keys and user tokens. Each writes its audit event in the same
transaction."""

from __future__ import annotations

import hashlib
import logging
import secrets
from datetime import timedelta
from functools import partial

from django.conf import settings
from django.contrib.auth.forms import PasswordResetForm
from django.contrib.auth.password_validation import validate_password
from django.core import signing
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from core.errors import ApplicationError

from . import audit, context, mfa, ratelimit
from .models import (
    ApiKey,
    AuditChainHead,
    AuditOutcome,
    Clinic,
    Invitation,
    Membership,
    Role,
    User,
    UserToken,
    normalize_email,
)
from .permissions import API_KEY_DEFAULT_SCOPES, API_KEY_GRANTABLE
from .queue import INVITATION_MAIL, PASSWORD_RESET_MAIL, SECOND_FACTOR_LOCKED_MAIL, task_send_after_response
from .sessions import sessions_end_all, sessions_end_for_clinic
from .tenancy import clinic_scope, require_clinic_id

API_KEY_PREFIX = "dsk"
USER_TOKEN_PREFIX = "dut"


logger = logging.getLogger(__name__)


class ServiceError(ApplicationError):
    """A request that cannot be carried out; ``code`` is the stable API error code."""


def _hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _split_bearer(raw: str, kind: str) -> tuple[str, str] | None:
    parts = raw.split("_", 2)
    if len(parts) != 3 or parts[0] != kind or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def login_failed_record(email: str, reason: str) -> None:
    """Failed log-ins go to the chain of the account's clinic when it exists, else the global chain."""
    user = User.objects.filter(email=normalize_email(email)).first()
    audit.record(
        action="auth.login.failed",
        # the clinic whose trail records the person's log-in steps (their oldest membership), as the lockout's
        clinic_id=mfa.audit_clinic_of(user) if user else None,
        outcome=AuditOutcome.DENIED,
        actor=context.Actor(user=user),
        details={"reason": reason},
    )


SECOND_FACTOR_FAILURES = "second_factor_failures"  # the account allowance of wrong codes (``RATE_LIMITS``)


def second_factor_blocked(user: User) -> int | None:
    """Seconds the person's second factor stays refused (their wrong codes of the hour are used up), else None."""
    return ratelimit.account_blocked(SECOND_FACTOR_FAILURES, user.email)


def second_factor_failed(user: User) -> int | None:
    """Count a wrong second-factor code typed after the right password, from whatever address. When it uses up the
    account's allowance, returns the seconds the second factor stays refused, audits ``auth.second_factor.locked``
    and e-mails the person once for the window (whoever typed it knows their password)."""
    ratelimit.account_failure(SECOND_FACTOR_FAILURES, user.email)
    wait = second_factor_blocked(user)
    if wait is not None and cache.add(f"second-factor-locked:{user.pk}", 1, timeout=wait):
        audit.record(
            action="auth.second_factor.locked",
            clinic_id=mfa.audit_clinic_of(user),
            outcome=AuditOutcome.DENIED,
            actor=context.Actor(user=user),
            object_type="user",
            object_id=user.pk,
            details={"seconds": wait},
        )
        task_send_after_response(SECOND_FACTOR_LOCKED_MAIL, str(user.pk), wait)
    return wait


@transaction.atomic
def clinic_create(*, name: str, slug: str | None = None) -> Clinic:
    clinic = Clinic.objects.create(name=name, slug=slug or slugify(name)[:80])
    AuditChainHead.objects.get_or_create(
        chain=audit.chain_key(clinic.id), defaults={"last_seq": 0, "last_hash": audit.GENESIS_HASH}
    )
    audit.record(action="clinic.create", clinic_id=clinic.id, object_type="clinic", object_id=clinic.id)
    return clinic


@transaction.atomic
def member_add(*, email: str, role: str, password: str | None = None, full_name: str = "") -> Membership:
    """Create a new account in the clinic in scope, in a role, with an initial password. For operators and the
    demo data (``seed_demo``), never offered to a clinic admin: a clinic admin invites (``invitation_create``).
    An address that already has an account is refused: an existing account joins a clinic only by accepting an
    invitation."""
    clinic_id = require_clinic_id()
    if role not in Role.values:
        raise ServiceError("invalid_role", f"Unknown role {role!r}.")
    email = normalize_email(email)
    if User.objects.filter(email=email).exists():
        raise ServiceError("invitation_required", "An existing account joins a clinic by accepting an invitation.")
    if not password:
        raise ServiceError("password_required", "A new user needs an initial password.")
    validate_password(password, user=User(email=email, full_name=full_name))
    user = User.objects.create_user(email=email, password=password, full_name=full_name)
    membership = Membership.objects.create(
        user=user, role=role, is_active=True, display_name=full_name, created_account=True
    )
    audit.record(
        action="member.add",
        clinic_id=clinic_id,
        object_type="membership",
        object_id=membership.id,
        details={"role": role, "user_id": str(user.id)},
    )
    return membership


INVITATION_SALT = "clinics.invitation"


def invitation_token(invitation: Invitation) -> str:
    """The secret of the mailed link: the invitation id signed with SECRET_KEY (made again by the mail task from
    the id, so no secret travels in a task message or sits in the database)."""
    return signing.dumps(str(invitation.pk), salt=INVITATION_SALT, compress=True)


@transaction.atomic
def invitation_create(*, email: str, role: str, invited_by: User | None, domain: str, use_https: bool) -> Invitation:
    """Invite an address to the clinic in scope in a role. Invariant: the work, the answer and the audit event are
    the same whether or not an account exists for the address (nothing here looks it up); the mail, which says
    "log in to accept" or "choose a password", is made by a worker after the response. A pending invitation of
    the same address is replaced."""
    clinic_id = require_clinic_id()
    if role not in Role.values:
        raise ServiceError("invalid_role", f"Unknown role {role!r}.")
    email = normalize_email(email)
    if Membership.objects.filter(user__email=email, is_active=True).exists():  # this clinic's own members only
        raise ServiceError("already_member", "This person is already an active member of the clinic.")
    now = timezone.now()
    pending = Invitation.objects.select_for_update().filter(email=email, accepted_at=None, revoked_at=None)
    replaced = [str(pk) for pk in pending.values_list("pk", flat=True)]
    Invitation.objects.filter(pk__in=replaced).update(revoked_at=now)
    invitation = Invitation.objects.create(
        email=email,
        role=role,
        invited_by=invited_by,
        expires_at=now + timedelta(seconds=settings.INVITATION_TTL_SECONDS),
    )
    for pk in replaced:  # audit details are ids only (the chain is append-only: no address in it)
        audit.record(
            action="invitation.revoke",
            clinic_id=clinic_id,
            object_type="invitation",
            object_id=pk,
            details={"replaced_by": str(invitation.id)},
        )
    audit.record(
        action="invitation.create",
        clinic_id=clinic_id,
        object_type="invitation",
        object_id=invitation.id,
        details={"role": role, "expires_at": invitation.expires_at.isoformat()},
    )
    transaction.on_commit(partial(_send_invitation_mail, str(invitation.pk), str(clinic_id), domain, use_https))
    return invitation


def _send_invitation_mail(invitation_id: str, clinic_id: str, domain: str, use_https: bool) -> None:
    try:
        task_send_after_response(INVITATION_MAIL, invitation_id, clinic_id, domain, use_https)
    except Exception:  # noqa: BLE001 - a broker that is down: the admin sees "pending" and can invite again
        logger.warning("invitation mail %s not queued: broker unavailable", invitation_id, exc_info=True)


@transaction.atomic
def invitation_revoke(*, invitation: Invitation) -> Invitation:
    """Revoke a pending invitation; audited only when it was pending (an accepted or revoked one stays as is)."""
    changed = Invitation.objects.filter(pk=invitation.pk, accepted_at=None, revoked_at=None).update(
        revoked_at=timezone.now()
    )
    if changed:
        invitation.refresh_from_db(fields=["revoked_at"])
        audit.record(
            action="invitation.revoke",
            clinic_id=invitation.clinic_id,
            object_type="invitation",
            object_id=invitation.id,
        )
    return invitation


def invitation_for_token(token: str) -> Invitation | None:
    """The pending (not accepted, revoked or expired) invitation a mailed link stands for, or None."""
    try:
        pk = signing.loads(token, salt=INVITATION_SALT, max_age=settings.INVITATION_TTL_SECONDS)
    except signing.BadSignature:
        return None
    # Deliberately unscoped: the signed link is what tells us the clinic.
    invitation = Invitation.unscoped.select_related("clinic").filter(pk=pk).first()
    if invitation is None or invitation.status != "pending" or not invitation.clinic.is_active:
        return None
    return invitation


def invitation_accept(
    *, invitation: Invitation, user: User, display_name: str, new_account: bool = False
) -> Membership:
    """The invited person (logged in as the invited address) joins the clinic in the invited role, showing it
    ``display_name``. Audited in the inviting clinic's chain and in the global chain."""
    with clinic_scope(invitation.clinic_id), transaction.atomic():
        locked = Invitation.objects.select_for_update().filter(pk=invitation.pk).first()
        if locked is None or locked.status != "pending":
            raise ServiceError("invitation_invalid", "This invitation is no longer valid.", status=400)
        if normalize_email(user.email) != locked.email:
            raise ServiceError("invitation_other_account", "This invitation is for another address.", status=403)
        membership, created = Membership.objects.get_or_create(
            user=user,
            defaults={
                "role": locked.role,
                "is_active": True,
                "display_name": display_name,
                "created_account": new_account,
            },
        )
        if not created:
            membership.role, membership.is_active, membership.display_name = locked.role, True, display_name
            membership.save(update_fields=["role", "is_active", "display_name"])
        locked.accepted_at, locked.accepted_by = timezone.now(), user
        locked.save(update_fields=["accepted_at", "accepted_by"])
        actor = context.Actor(user=user)
        details = {"membership_id": str(membership.pk), "role": locked.role, "new_account": new_account}
        audit.record(
            action="invitation.accept",
            clinic_id=locked.clinic_id,
            object_type="invitation",
            object_id=locked.pk,
            actor=actor,
            details={**details, "user_id": str(user.pk)},
        )
        audit.record(
            action="invitation.accept",
            clinic_id=None,
            object_type="invitation",
            object_id=locked.pk,
            actor=actor,
            details={**details, "clinic_id": str(locked.clinic_id)},
        )
        return membership


@transaction.atomic
def invitation_accept_new_account(*, invitation: Invitation, full_name: str, password: str) -> Membership:
    """The invited address has no account yet: create it with the password the person chose, then accept."""
    if User.objects.filter(email=invitation.email).exists():
        raise ServiceError("account_exists", "This address has an account: log in to accept.", status=409)
    validate_password(password, user=User(email=invitation.email, full_name=full_name))
    user = User.objects.create_user(email=invitation.email, password=password, full_name=full_name)
    return invitation_accept(invitation=invitation, user=user, display_name=full_name, new_account=True)


@transaction.atomic
def member_update(*, membership: Membership, role: str | None = None, is_active: bool | None = None) -> Membership:
    before = {"role": membership.role, "is_active": membership.is_active}
    if role is not None:
        if role not in Role.values:
            raise ServiceError("invalid_role", f"Unknown role {role!r}.")
        membership.role = role
    if is_active is not None:
        membership.is_active = is_active
    after = {"role": membership.role, "is_active": membership.is_active}
    if before["role"] == Role.CLINIC_ADMIN and (after["role"] != Role.CLINIC_ADMIN or not after["is_active"]):
        # The active admins' rows, locked (a count() would lock nothing: Django drops FOR UPDATE from aggregates),
        # so two admins demoting each other at once cannot both pass: the second reads the first's change.
        admins = Membership.objects.select_for_update().filter(role=Role.CLINIC_ADMIN, is_active=True)
        if not [pk for pk in admins.values_list("pk", flat=True) if pk != membership.pk]:
            raise ServiceError("last_admin", "A clinic must keep at least one active clinic admin.", status=409)
    membership.save(update_fields=["role", "is_active"])
    if not membership.is_active and before["is_active"]:
        # Removing access ends the person's sessions and API tokens in this clinic, at once; their other
        # clinics are not this clinic's to end.
        sessions_end_for_clinic(membership, reason="membership_deactivated")
    audit.record(
        action="member.update",
        clinic_id=membership.clinic_id,
        object_type="membership",
        object_id=membership.id,
        details={"before": before, "after": after, "user_id": str(membership.user_id)},
    )
    return membership


def password_reset_request(*, email: str, domain: str, use_https: bool) -> None:
    """Audit the request (anonymous: whoever typed the address) and send the link from a worker after commit,
    for each active account with that address. The request does the same work for an unknown address (one
    audit event, in the global chain, with no address in it), and the mail itself is made and sent after the
    response (``task_send_after_response``), so neither the answer nor its time tells who has an account."""
    users = list(PasswordResetForm().get_users(email))
    # The clinic whose trail records it (``mfa.audit_clinic_of``), found by address in one query that runs for
    # every address, so an unknown one costs the same queries as a known one.
    clinic_of: dict[object, object] = {}
    for user_id, clinic_id in (
        Membership.unscoped.filter(user__email__iexact=normalize_email(email), is_active=True)
        .order_by("-created_at")
        .values_list("user_id", "clinic_id")
    ):
        clinic_of[user_id] = clinic_id  # the oldest wins
    for user in users:
        audit.record(
            action="auth.password.reset_requested",
            clinic_id=clinic_of.get(user.pk),
            object_type="user",
            object_id=user.pk,
        )
        transaction.on_commit(partial(_send_reset_mail, str(user.pk), domain, use_https))
    if not users:
        audit.record(action="auth.password.reset_requested", clinic_id=None, details={"account": False})
        # the same task, with no account: it sends nothing, but the request queues what a known address queues
        transaction.on_commit(partial(_send_reset_mail, None, domain, use_https))


def _send_reset_mail(user_id: str | None, domain: str, use_https: bool) -> None:
    try:
        task_send_after_response(PASSWORD_RESET_MAIL, user_id, domain, use_https)
    except Exception:  # noqa: BLE001 - a broker that is down: the person asks again, the page said the same
        logger.warning("password reset mail for user %s not queued: broker unavailable", user_id, exc_info=True)


@transaction.atomic
def password_set(*, user: User, password: str, action: str, clinic_id: object) -> None:
    """A new password (``auth.password.change`` from the account page, ``auth.password.reset`` from an emailed
    link): saving it ends every session and API token of the person (``User.save``), in one transaction with
    its audit event. The caller has checked the old password or the link, and the validators."""
    user.set_password(password)
    user.save(update_fields=["password"])
    audit.record(action=action, clinic_id=clinic_id, object_type="user", object_id=user.pk)


@transaction.atomic
def recovery_codes_renew(*, user: User, clinic_id: object) -> list[str]:
    """New recovery codes (the old ones stop working), audited; returned once for display."""
    codes = mfa.recovery_codes_regenerate(user)
    audit.record(
        action="auth.mfa.recovery_codes",
        clinic_id=clinic_id,
        object_type="user",
        object_id=user.pk,
        details={"codes": len(codes)},
    )
    return codes


@transaction.atomic
def member_mfa_reset(*, membership: Membership, by: User | None) -> None:
    """A clinic admin removes a member's authenticator (lost or replaced phone). Every session and token of the
    person ends; their next log-in sets up a new authenticator where their role needs one. Refused for one's
    own (use a recovery code, or ask another admin) and for people who belong, or belonged, to another clinic
    (which may reactivate them): one clinic alone must not lower the protection of another clinic's account.
    Refused first, with one message that says nothing about the account, when this clinic did not create it
    (``created_account``: the person joined with an account they already had)."""
    user = membership.user
    if not membership.created_account:
        raise ServiceError(
            "second_factor_not_resettable", "This person's second factor cannot be reset from here.", status=409
        )
    if by is not None and by.pk == user.pk:
        raise ServiceError("own_second_factor", "Another clinic admin must reset your second factor.", status=409)
    if Membership.unscoped.filter(user=user).exclude(clinic_id=membership.clinic_id).exists():
        raise ServiceError(
            "member_of_other_clinics",
            "This person also belongs to another clinic, so their second factor cannot be reset from here.",
            status=409,
        )
    had = mfa.mfa_remove(user)
    sessions_end_all(user, reason="mfa_reset", clinic_id=membership.clinic_id)
    audit.record(
        action="auth.mfa.reset",
        clinic_id=membership.clinic_id,
        object_type="membership",
        object_id=membership.id,
        details={"user_id": str(user.pk), "had_authenticator": had},
    )


@transaction.atomic
def api_key_create(
    *,
    name: str,
    scopes: list[str] | None = None,
    created_by: User | None = None,
    secret: str | None = None,
    expires_in_days: int | None = None,
) -> tuple[ApiKey, str]:
    """Create an API key for the clinic in scope, valid until revoked or for ``expires_in_days``. Returns the
    key and its full secret, which is shown once and never stored."""
    clinic_id = require_clinic_id()
    scopes = sorted(set(scopes if scopes is not None else API_KEY_DEFAULT_SCOPES))
    unknown = set(scopes) - API_KEY_GRANTABLE
    if unknown:
        raise ServiceError("invalid_scope", f"Scopes not grantable to an API key: {', '.join(sorted(unknown))}.")
    if not name.strip():
        raise ServiceError("name_required", "An API key needs a name.")
    raw = secret or f"{API_KEY_PREFIX}_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"
    split = _split_bearer(raw, API_KEY_PREFIX)
    if split is None:
        raise ServiceError("invalid_secret", "Malformed API key secret.")
    prefix, _ = split
    if expires_in_days is not None and expires_in_days <= 0:
        raise ServiceError("invalid_expiry", "An expiry must be a positive number of days.")
    key = ApiKey.objects.create(
        name=name.strip(),
        prefix=prefix,
        secret_hash=_hash_secret(raw),
        scopes=scopes,
        created_by=created_by,
        expires_at=timezone.now() + timedelta(days=expires_in_days) if expires_in_days else None,
    )
    audit.record(
        action="apikey.create",
        clinic_id=clinic_id,
        object_type="api_key",
        object_id=key.id,
        details={
            "name": key.name,
            "prefix": prefix,
            "scopes": scopes,
            "expires_at": key.expires_at.isoformat() if key.expires_at else None,
        },
    )
    return key, raw


@transaction.atomic
def api_key_revoke(*, key: ApiKey) -> ApiKey:
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
    audit.record(action="apikey.revoke", clinic_id=key.clinic_id, object_type="api_key", object_id=key.id)
    return key


def api_key_authenticate(raw: str) -> ApiKey | None:
    """The active key matching a presented secret, with ``last_used_at`` brought up to date."""
    split = _split_bearer(raw, API_KEY_PREFIX)
    if split is None:
        return None
    # Deliberately unscoped: the key is what tells us the clinic.
    key = ApiKey.unscoped.select_related("clinic").filter(prefix=split[0]).first()
    if key is None or not secrets.compare_digest(key.secret_hash, _hash_secret(raw)):
        return None
    if not key.is_active or not key.clinic.is_active:  # revoked or expired
        return None
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at > timedelta(seconds=60):
        ApiKey.unscoped.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
    return key


@transaction.atomic
def user_token_create(*, user: User, clinic: Clinic, mfa_verified: bool = False) -> tuple[UserToken, str]:
    raw = f"{USER_TOKEN_PREFIX}_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"
    prefix = raw.split("_", 2)[1]
    token = UserToken.objects.create(
        user=user,
        clinic=clinic,
        prefix=prefix,
        secret_hash=_hash_secret(raw),
        expires_at=timezone.now() + timedelta(seconds=settings.USER_TOKEN_TTL_SECONDS),
        mfa_verified=mfa_verified,
    )
    audit.record(
        action="auth.token.issue",
        clinic_id=clinic.id,
        object_type="user_token",
        object_id=token.id,
        details={"mfa": mfa_verified},
    )
    return token, raw


def user_token_authenticate(raw: str) -> UserToken | None:
    split = _split_bearer(raw, USER_TOKEN_PREFIX)
    if split is None:
        return None
    token = UserToken.objects.select_related("user", "clinic").filter(prefix=split[0]).first()
    if token is None or not secrets.compare_digest(token.secret_hash, _hash_secret(raw)):
        return None
    if token.revoked_at is not None or token.expires_at <= timezone.now() or not token.user.is_active:
        return None
    return token
