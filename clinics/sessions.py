"""Session lifecycle: log-in completion, idle and absolute timeouts, re-authentication, and ending
every session and token of a person at once.

Invariants: the session key rotates at log-in (``django.contrib.auth.login``); a session idle for
``SESSION_IDLE_TIMEOUT_SECONDS`` or older than ``SESSION_ABSOLUTE_TIMEOUT_SECONDS`` is ended on its
next request; ``sessions_end_all`` changes the user's security stamp (part of every session's auth
hash, so all their sessions on every device stop working) and revokes all their API tokens; it is for
account-wide events (log-out, password change or reset, a second-factor reset, the account's deactivation).
A session works in one clinic at a time (``clinics.access.access_for_session``) and an API token belongs to
one clinic: ``sessions_end_for_clinic`` (a membership deactivated) ends only that clinic's sessions and
tokens of the person, and their other clinics go on.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from django.conf import settings
from django.contrib.auth import login, logout
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from . import audit, context
from .access import SESSION_CLINIC_KEY, Access, session_bind
from .models import AuditOutcome, Membership, User, UserToken

AUTH_AT = "auth_at"  # when the person logged in (absolute limit)
LAST_SEEN = "last_seen"  # last request made by the person, not by a background poll (idle limit)
REAUTH_AT = "reauth_at"  # last time the password (and second factor) were checked
MFA_METHOD = "mfa"
# Activity is recorded at most this often: a page's dozen image requests do not each rewrite the session (a
# database write per request); the idle limit is then met between 15 minutes and 15 minutes minus this.
LAST_SEEN_RESOLUTION_SECONDS = 30
# Requests a page makes by itself (status polling) send this header; they do not count as activity.
BACKGROUND_HEADER = "HTTP_X_BACKGROUND_REQUEST"


def complete_login(request: HttpRequest, user: User, access: Access | None, *, mfa: str = "") -> None:
    """Log the person in. ``access`` is their clinic when they have one; with several (``None``) the session
    works in no clinic until they pick one (``clinic_pick``), and the log-in is recorded in the global chain."""
    login(request, user, backend="clinics.auth.EmailBackend")  # rotates the session key
    now = time.time()
    request.session.pop(SESSION_CLINIC_KEY, None)
    if access is not None:
        session_bind(request.session, access)
    request.session[AUTH_AT] = now
    request.session[LAST_SEEN] = now
    request.session[REAUTH_AT] = now
    request.session[MFA_METHOD] = mfa
    audit.record(
        action="auth.login",
        clinic_id=access.clinic.id if access else None,
        actor=context.Actor(user=user),
        details={"channel": "web", "mfa": mfa, **({} if access else {"clinic": "to_pick"})},
    )


def clinic_pick(request: HttpRequest, access: Access, *, switched_from: object = None) -> None:
    """Bind the logged-in session to ``access``'s clinic (the picker after log-in, or a switch), audited in
    that clinic's chain (``auth.clinic.select`` or ``auth.clinic.switch``)."""
    session_bind(request.session, access)
    audit.record(
        action="auth.clinic.switch" if switched_from else "auth.clinic.select",
        clinic_id=access.clinic.id,
        actor=access.actor,
        details={"channel": "web", "mfa": request.session.get(MFA_METHOD, "")},
    )


def reauthenticated_recently(request: HttpRequest) -> bool:
    at = request.session.get(REAUTH_AT, 0)
    return time.time() - float(at) <= settings.REAUTH_MAX_AGE_SECONDS


def mark_reauthenticated(request: HttpRequest) -> None:
    request.session[REAUTH_AT] = time.time()


def sessions_end_on_password_replaced(sender: type[User], *, user: User, **kwargs: object) -> None:
    """Receiver of ``clinics.signals.password_replaced``: a new password ends every session and token."""
    sessions_end_all(user, reason="password_changed")


def sessions_end_all(user: User, *, reason: str, clinic_id: object = None) -> int:
    """End every browser session and revoke every API token of ``user``; returns tokens revoked."""
    stamp = uuid.uuid4()
    User.objects.filter(pk=user.pk).update(security_stamp=stamp)
    user.security_stamp = stamp  # a later save() of this instance must not bring the old stamp back
    revoked = UserToken.objects.filter(user=user, revoked_at=None).update(revoked_at=timezone.now())
    audit.record(
        action="auth.sessions.end_all",
        clinic_id=clinic_id,
        object_type="user",
        object_id=user.pk,
        details={"reason": reason, "tokens_revoked": revoked},
    )
    return revoked


def sessions_end_for_clinic(membership: Membership, *, reason: str) -> int:
    """End the person's browser sessions working in the membership's clinic (a new session stamp) and revoke
    their API tokens for that clinic; their sessions and tokens in other clinics are untouched. Returns tokens
    revoked. Audited in that clinic's chain."""
    stamp = uuid.uuid4()
    Membership.unscoped.filter(pk=membership.pk).update(session_stamp=stamp)
    membership.session_stamp = stamp
    revoked = UserToken.objects.filter(
        user_id=membership.user_id, clinic_id=membership.clinic_id, revoked_at=None
    ).update(revoked_at=timezone.now())
    audit.record(
        action="auth.sessions.end_clinic",
        clinic_id=membership.clinic_id,
        object_type="membership",
        object_id=membership.pk,
        details={"reason": reason, "tokens_revoked": revoked},
    )
    return revoked


class SessionTimeoutMiddleware:
    """Ends a logged-in session that was idle too long or is older than the absolute limit."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            now = time.time()
            auth_at = float(request.session.get(AUTH_AT, 0))
            last_seen = float(request.session.get(LAST_SEEN, 0))
            reason = ""
            if now - auth_at > settings.SESSION_ABSOLUTE_TIMEOUT_SECONDS:
                reason = "absolute_timeout"
            elif now - last_seen > settings.SESSION_IDLE_TIMEOUT_SECONDS:
                reason = "idle_timeout"
            if reason:
                clinic_id = request.session.get(SESSION_CLINIC_KEY)
                audit.record(
                    action="auth.session.expired",
                    clinic_id=clinic_id,
                    outcome=AuditOutcome.DENIED,
                    actor=context.Actor(user=user),
                    details={"reason": reason},
                )
                logout(request)
                request.session["logged_out_reason"] = reason
            elif not request.META.get(BACKGROUND_HEADER) and now - last_seen >= LAST_SEEN_RESOLUTION_SECONDS:
                request.session[LAST_SEEN] = now
        return self.get_response(request)
