"""Who is acting, for which clinic, with which permissions: shared by the HTML views and the API.

Invariant: the clinic of a request comes only from the authenticated identity (a membership of the
logged-in user, the clinic of a user token, or the clinic of an API key). ``enter`` activates that
clinic's scope for the rest of the request.

Route guards: an app above clinics that closes some routes beyond the role check (``patients``: restricted
records) registers a guard with ``route_guard_register`` in its ``AppConfig.ready()``. The HTML base view and
the API permission class ask ``route_refusal`` after the role check, on every request that passed it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import audit, context
from .models import ApiKey, AuditOutcome, Clinic, Membership, User
from .permissions import api_key_has_permission, role_has_permission
from .selectors import membership_for, memberships_of
from .tenancy import activate_clinic

SESSION_CLINIC_KEY = "clinic_id"
SESSION_CLINIC_STAMP_KEY = "clinic_stamp"


@dataclass(frozen=True)
class Access:
    clinic: Clinic
    user: User | None = None
    membership: Membership | None = None
    api_key: ApiKey | None = None

    @property
    def role(self) -> str | None:
        return self.membership.role if self.membership is not None else None

    @property
    def actor(self) -> context.Actor:
        return context.Actor(user=self.user, api_key=self.api_key)

    def can(self, permission: str) -> bool:
        if self.api_key is not None:
            return api_key_has_permission(self.api_key.scopes, permission)
        return role_has_permission(self.role, permission)


def access_for_user(user: User, clinic_id: object = None) -> Access | None:
    membership = membership_for(user, clinic_id)
    if membership is None:
        return None
    return Access(clinic=membership.clinic, user=user, membership=membership)


def session_bind(session: Any, access: Access) -> None:
    """Make a browser session work in ``access``'s clinic (log-in, the clinic picker, a switch)."""
    assert access.membership is not None
    session[SESSION_CLINIC_KEY] = str(access.clinic.id)
    session[SESSION_CLINIC_STAMP_KEY] = str(access.membership.session_stamp)


def access_for_session(user: User, session: Any) -> Access | None:
    """The access of a logged-in browser session. Invariant: a session works in one clinic at a time, and only
    while that membership is active with the session stamp it had when the session was bound to it, so
    deactivating a membership (a new stamp) ends the person's sessions in that clinic and nowhere else.

    A session bound to no clinic yet is bound now when the person has exactly one clinic; with several it
    stays unbound (None) until the person picks one."""
    clinic_id = session.get(SESSION_CLINIC_KEY)
    if not clinic_id:
        memberships = list(memberships_of(user)[:2])
        if len(memberships) != 1:
            return None
        access = Access(clinic=memberships[0].clinic, user=user, membership=memberships[0])
        session_bind(session, access)
        return access
    access = access_for_user(user, clinic_id)
    if access is None or access.membership is None:
        return None
    if session.get(SESSION_CLINIC_STAMP_KEY) != str(access.membership.session_stamp):
        return None
    return access


def access_for_api_key(key: ApiKey) -> Access:
    return Access(clinic=key.clinic, api_key=key)


def enter(access: Access) -> None:
    """Activate the clinic scope and the audit actor for the rest of this request or task."""
    activate_clinic(access.clinic.id)
    context.actor_var.set(access.actor)


@dataclass(frozen=True)
class RouteRefusal:
    """A guard's refusal of a request that passed the role check: 403 with ``template`` (and ``context``) in
    the HTML, 403 with ``code`` and ``message`` in the API's error shape."""

    code: str
    message: str
    template: str
    context: Mapping[str, Any] = field(default_factory=dict)


RouteGuard = Callable[[Access, str, str, Mapping[str, Any]], RouteRefusal | None]
_route_guards: list[RouteGuard] = []


def route_guard_register(guard: RouteGuard) -> None:
    """Add a guard ``(access, view_name, method, url_kwargs) -> RouteRefusal | None``; called from the
    ``AppConfig.ready()`` of the app that owns the rule (registering the same guard twice adds it once)."""
    if guard not in _route_guards:
        _route_guards.append(guard)


def route_refusal(access: Access, view_name: str, method: str, kwargs: Mapping[str, Any]) -> RouteRefusal | None:
    """The first refusal of the registered guards, in registration order, or None when every guard lets the
    request through. A guard records its own audit events."""
    for guard in _route_guards:
        refusal = guard(access, view_name, method, kwargs)
        if refusal is not None:
            return refusal
    return None


def record_denial(access: Access | None, *, view_name: str, method: str, reason: str, object_id: object = None) -> None:
    audit.record(
        action="permission.denied",
        clinic_id=access.clinic.id if access else None,
        outcome=AuditOutcome.DENIED,
        actor=access.actor if access else context.actor_var.get(),
        object_id=object_id if object_id is not None else "",
        details={"route": view_name, "method": method, "reason": reason},
    )


def record_object_not_found(request: object) -> None:
    """A member asked for an object id that their clinic does not hold (another clinic's, or none): the answer
    is a plain 404 that confirms nothing, and the attempt goes into the member's clinic's audit trail."""
    access = getattr(request, "access", None)
    match = getattr(request, "resolver_match", None)
    if access is None or match is None or "pk" not in match.kwargs:
        return
    record_denial(
        access,
        view_name=match.view_name,
        method=getattr(request, "method", "") or "",
        reason="not_found",
        object_id=str(match.kwargs["pk"])[:64],
    )
