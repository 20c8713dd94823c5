"""One error shape for the whole API: ``{"error": {"code", "message", "details"}}``."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from core.errors import ApplicationError, error_body

from ..access import record_object_not_found
from .permissions import RouteRefused

_CODES = {
    exceptions.ValidationError: "validation_error",
    exceptions.ParseError: "parse_error",
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.AuthenticationFailed: "authentication_failed",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "rate_limited",
}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ApplicationError):  # clinics.services.ServiceError, patients.intake.IntakeError...
        return Response(error_body(exc.code, exc.message, exc.details), status=exc.status)
    if isinstance(exc, (Http404, exceptions.NotFound)) and "request" in context:
        record_object_not_found(context["request"])
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    assert isinstance(exc, exceptions.APIException)
    code = next((c for cls, c in _CODES.items() if isinstance(exc, cls)), "error")
    if exc.default_code in ("mfa_required", "reauthentication_required", "unknown_parameter"):
        code = exc.default_code
    elif isinstance(exc, RouteRefused):
        code = exc.refusal.code
    if isinstance(exc, exceptions.ValidationError):
        message, details = "The request is not valid.", exc.detail
    else:
        message, details = str(exc.detail), getattr(exc, "details", None)
    if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
        details = {"retry_after_seconds": int(exc.wait)}
    response.data = error_body(code, message, details)
    return response
