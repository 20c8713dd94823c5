"""Base class of every HTML view: resolves the member's clinic, enters its scope, checks the
permission map and the registered route guards (``clinics.access``). ``dispatch`` is sealed so no
subclass can skip it.

Apps above clinics add to clinics' pages (the patient count on the home page, emergency-access grants on the
audit page) by registering a context provider for the page's URL name with ``page_context_register`` in their
``AppConfig.ready()``; the page's view merges ``registered_context``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlencode

from django.contrib.auth import logout
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views import View

from . import ratelimit
from .access import SESSION_CLINIC_KEY, Access, access_for_session, enter, record_denial, route_refusal
from .mfa import MFA_REQUIRED_ROLES
from .middleware import client_ip
from .permissions import PUBLIC, ROUTE_PERMISSIONS, needs_reauth, route_permission
from .selectors import memberships_of
from .sessions import MFA_METHOD, reauthenticated_recently

PageContext = Callable[[HttpRequest], Mapping[str, Any]]
_page_contexts: dict[str, list[PageContext]] = {}


def page_context_register(view_name: str, provider: PageContext) -> None:
    """Add ``provider(request) -> context`` to the template context of the page named ``view_name`` (a URL
    name such as ``"clinics:home"``); registering the same provider twice adds it once."""
    providers = _page_contexts.setdefault(view_name, [])
    if provider not in providers:
        providers.append(provider)


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
        if permission == PUBLIC:
            if request.user.is_authenticated and request.session.get(SESSION_CLINIC_KEY):
                if access_for_session(request.user, request.session) is None:
                    # A session whose clinic ended the person's access there is logged out before any public
                    # page (the clinic picker, an invitation's acceptance) can bind it to a clinic again.
                    logout(request)
                    request.session["logged_out_reason"] = "clinic_access_ended"
        else:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            access = access_for_session(request.user, request.session)
            if access is None:
                if request.session.get(SESSION_CLINIC_KEY):
                    # The clinic this session worked in ended the person's access there: this session ends
                    # (their sessions in other clinics do not).
                    logout(request)
                    request.session["logged_out_reason"] = "clinic_access_ended"
                    return redirect_to_login(request.get_full_path())
                if memberships_of(request.user).exists():  # several clinics and none picked yet
                    return redirect(f"{reverse('clinics:pick-clinic')}?{urlencode({'next': request.get_full_path()})}")
                return render(request, "clinics/no_clinic.html", status=403)
            if access.role in MFA_REQUIRED_ROLES and not request.session.get(MFA_METHOD):
                # A session made before this person's role needed MFA: log in again, with the second factor.
                logout(request)
                return redirect_to_login(request.get_full_path())
            self.access = access
            request.access = access  # type: ignore[attr-defined]
            enter(access)
            if not access.can(permission):
                record_denial(access, view_name=view_name, method=method, reason=permission)
                return render(request, "403.html", {"permission": permission}, status=403)
            refusal = route_refusal(access, view_name, method, kwargs)
            if refusal is not None:
                return render(request, refusal.template, dict(refusal.context), status=403)
        limit = ratelimit.limit_for(view_name, method)
        if limit is not None:
            retry_after = ratelimit.hit(limit, self.access, client_ip(request))
            if retry_after is not None:
                response = render(request, "429.html", {"retry_after": retry_after}, status=429)
                response["Retry-After"] = str(retry_after)
                return response
        if self.access is not None and needs_reauth(view_name, method) and not reauthenticated_recently(request):
            back = request.get_full_path() if method == "GET" else request.META.get("HTTP_REFERER", "")
            if not url_has_allowed_host_and_scheme(back, {request.get_host()}, request.is_secure()):
                back = ""
            return redirect(f"{reverse('clinics:reauth')}?{urlencode({'next': back})}")
        return super().dispatch(request, *args, **kwargs)

    def registered_context(self, request: HttpRequest) -> dict[str, Any]:
        """What the providers registered for this page add to its template context (inside the clinic scope)."""
        view_name = request.resolver_match.view_name if request.resolver_match else ""
        data: dict[str, Any] = {}
        for provider in _page_contexts.get(view_name, []):
            data.update(provider(request))
        return data
