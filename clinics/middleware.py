from __future__ import annotations

import re
import uuid
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from . import context
from .tenancy import deactivate_clinic

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


def client_ip(request: HttpRequest) -> str | None:
    """The client address: REMOTE_ADDR, or the X-Forwarded-For entry added by our own trusted
    proxies (``TRUSTED_PROXY_COUNT``). Entries a client wrote itself are never trusted."""
    trusted = settings.TRUSTED_PROXY_COUNT
    if trusted > 0:
        forwarded = [p.strip() for p in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if p.strip()]
        if len(forwarded) >= trusted:
            return forwarded[-trusted]
    return request.META.get("REMOTE_ADDR") or None


class RequestContextMiddleware:
    """Gives each request an id and an IP for the audit trail, and guarantees that no clinic scope
    or actor survives from one request to the next (the scope itself is set by the base views)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.META.get("HTTP_X_REQUEST_ID", "")
        request_id = incoming if _REQUEST_ID_RE.match(incoming) else uuid.uuid4().hex
        context.reset()
        deactivate_clinic()
        context.request_id_var.set(request_id)
        context.client_ip_var.set(client_ip(request))
        context.request_cache_var.set({})
        try:
            response = self.get_response(request)
        finally:
            context.reset()
            deactivate_clinic()
        response["X-Request-ID"] = request_id
        return response


class SecurityHeadersMiddleware:
    """Content Security Policy on every page, and ``Cache-Control: no-store`` on every dynamic
    response (patient data must not stay in browser or proxy caches). Static files are served
    before this middleware and keep their long cache headers."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response.setdefault("Content-Security-Policy", settings.CONTENT_SECURITY_POLICY)
        response["Cache-Control"] = "no-store"
        response.setdefault("Permissions-Policy", "camera=(self), microphone=(), geolocation=()")
        response.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        return response
