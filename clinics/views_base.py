"""Base class of every HTML view: resolves the member's clinic, enters its scope, checks the
permission map. ``dispatch`` is sealed so no subclass can skip it."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import render
from django.views import View

from .access import SESSION_CLINIC_KEY, Access, access_for_user, enter, record_denial
from .permissions import PUBLIC, ROUTE_PERMISSIONS, route_permission


class ClinicView(View):
    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "dispatch" in cls.__dict__:
            raise TypeError(f"{cls.__name__} may not override dispatch(): it owns clinic scoping.")

    access: Access | None = None

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        view_name = request.resolver_match.view_name if request.resolver_match else ""
        if view_name not in ROUTE_PERMISSIONS:
            raise ImproperlyConfigured(f"Route {view_name!r} has no entry in ROUTE_PERMISSIONS.")
        method = (request.method or "GET").upper()
        permission = route_permission(view_name, method)
        if permission is None:
            if hasattr(self, method.lower()) and method not in ("OPTIONS", "HEAD"):
                raise ImproperlyConfigured(f"{view_name} handles {method} with no permission map entry.")
            allowed = [m for m in ROUTE_PERMISSIONS[view_name] if hasattr(self, m.lower())]
            return HttpResponseNotAllowed(allowed)
        if permission != PUBLIC:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            access = access_for_user(request.user, request.session.get(SESSION_CLINIC_KEY))
            if access is None:
                return render(request, "clinics/no_clinic.html", status=403)
            self.access = access
            request.access = access  # type: ignore[attr-defined]
            enter(access)
            if not access.can(permission):
                record_denial(access, view_name=view_name, method=method, reason=permission)
                return render(request, "403.html", {"permission": permission}, status=403)
        return super().dispatch(request, *args, **kwargs)
