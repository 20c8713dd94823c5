from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone
from rest_framework import exceptions, permissions, throttling
from rest_framework.request import Request

from .. import ratelimit
from ..access import RouteRefusal, record_denial, route_refusal
from ..mfa import MFA_REQUIRED_ROLES
from ..middleware import client_ip
from ..models import UserToken
from ..permissions import PUBLIC, needs_reauth, route_permission
from ..sessions import MFA_METHOD, reauthenticated_recently


class RoutePermission(permissions.BasePermission):
    """Checks the permission map entry of the route and method against ``request.access``.

    A route or a handled method with no entry in the map is a configuration error, never open.
    """

    message = "Your role does not allow this action."

    def has_permission(self, request: Request, view: Any) -> bool:
        view_name = request.resolver_match.view_name if request.resolver_match else ""
        try:
            permission = route_permission(view_name, request.method or "GET")
        except KeyError as exc:
            raise ImproperlyConfigured(f"Route {view_name!r} has no entry in ROUTE_PERMISSIONS.") from exc
        if permission is None:
            if request.method and hasattr(view, request.method.lower()) and request.method not in ("OPTIONS", "HEAD"):
                raise ImproperlyConfigured(f"{view_name} handles {request.method} with no permission map entry.")
            # Not offered: the view answers 404 (detail of another clinic) or 405 after authentication.
            return request.method == "OPTIONS" or getattr(request, "access", None) is not None
        if permission == PUBLIC:
            return True
        access = getattr(request, "access", None)
        if access is None:
            return False
        if not access.can(permission):
            # Another clinic's object (or a missing one) is a 404 before it is a 403, so a denial never
            # confirms that an id exists.
            if "pk" in getattr(view, "kwargs", {}) and hasattr(view, "get_object"):
                view.get_object()
            record_denial(access, view_name=view_name, method=request.method or "", reason=permission)
            return False
        if access.role in MFA_REQUIRED_ROLES and not _second_factor_done(request):
            record_denial(access, view_name=view_name, method=request.method or "", reason="mfa_required")
            raise MfaRequired()
        refusal = route_refusal(access, view_name, request.method or "GET", getattr(view, "kwargs", {}))
        if refusal is not None:
            raise RouteRefused(refusal)
        if needs_reauth(view_name, request.method or "GET") and not _recently_authenticated(request):
            record_denial(access, view_name=view_name, method=request.method or "", reason="reauthentication")
            raise ReauthenticationRequired()
        return True


def _second_factor_done(request: Request) -> bool:
    """Did this request's credential come with a second factor? A browser session records it at log-in, a
    user token when it was issued; an API key is a system, not a person, and its role never needs MFA."""
    if request.auth is None:
        return bool(request.session.get(MFA_METHOD))
    if isinstance(request.auth, UserToken):
        return request.auth.mfa_verified
    return True


class MfaRequired(exceptions.PermissionDenied):
    default_detail = "This role needs a second factor: log in again with your authenticator code."
    default_code = "mfa_required"


class RouteRefused(exceptions.PermissionDenied):
    """A registered route guard refused the request (``clinics.access.route_refusal``): 403 with its code."""

    def __init__(self, refusal: RouteRefusal) -> None:
        super().__init__(detail=refusal.message, code=refusal.code)
        self.refusal = refusal


class ReauthenticationRequired(exceptions.PermissionDenied):
    default_detail = (
        "Exports and erasure need a fresh confirmation of identity: get a new token (password and code) "
        "and repeat the request within a few minutes."
    )
    default_code = "reauthentication_required"


def _recently_authenticated(request: Request) -> bool:
    auth = request.auth
    if isinstance(auth, UserToken):
        return (timezone.now() - auth.created_at).total_seconds() <= settings.REAUTH_MAX_AGE_SECONDS
    if auth is None:  # a browser session
        return reauthenticated_recently(request._request)
    return True  # a clinic API key: export and erasure are never grantable to one anyway


class RouteThrottle(throttling.BaseThrottle):
    """The limits of ``clinics.ratelimit.ROUTE_LIMITS``, per principal within its clinic (per IP when
    anonymous); over the limit the API answers 429 with Retry-After."""

    def __init__(self) -> None:
        self.wait_seconds: int | None = None

    def allow_request(self, request: Request, view: Any) -> bool:
        view_name = request.resolver_match.view_name if request.resolver_match else ""
        limit = ratelimit.limit_for(view_name, request.method or "GET")
        if limit is None:
            return True
        self.wait_seconds = ratelimit.hit(limit, getattr(request, "access", None), client_ip(request._request))
        return self.wait_seconds is None

    def wait(self) -> float | None:
        return self.wait_seconds
