"""The one error shape: any ``core.errors.ApplicationError`` is answered by the API handler as it says."""

from __future__ import annotations

from clinics.api.errors import exception_handler
from clinics.services import ServiceError
from core.errors import ApplicationError, error_body
from patients.intake import IntakeError


class _Refusal(ApplicationError):
    """An app the handler has never heard of."""


def test_every_application_error_gets_the_api_error_shape_and_its_status() -> None:
    for exc in (
        _Refusal("over_budget", "Not this month.", 402),
        ServiceError("last_admin", "Keep one admin.", status=409),
        IntakeError("unsupported_format", "Nope.", 415),
    ):
        response = exception_handler(exc, {})
        assert response is not None
        assert response.status_code == exc.status
        assert response.data == {"error": {"code": exc.code, "message": exc.message, "details": None}}


def test_error_body_and_defaults() -> None:
    assert error_body("x", "y", {"a": 1}) == {"error": {"code": "x", "message": "y", "details": {"a": 1}}}
    err = ServiceError("invalid_role", "Unknown role.")
    assert (err.code, err.message, err.status, str(err)) == ("invalid_role", "Unknown role.", 400, "Unknown role.")
