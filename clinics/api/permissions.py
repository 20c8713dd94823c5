from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from rest_framework import permissions
from rest_framework.request import Request

from ..access import record_denial
from ..permissions import PUBLIC, route_permission


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
        return True
