"""The one error shape of the API, and the base exception of every refusal a service can give.

A refusal carries a stable ``code`` (clients branch on it), a ``message`` for people and an HTTP ``status``;
the API's exception handler (``clinics.api.errors``) answers any ``ApplicationError`` with ``error_body``
without knowing the app that raised it. Plain Python: no Django.
"""

from __future__ import annotations

from typing import Any


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    """``{"error": {"code", "message", "details"}}``: the body of every API error response."""
    return {"error": {"code": code, "message": message, "details": details}}


class ApplicationError(Exception):
    """A request that cannot be carried out; ``code`` is the stable API error code."""

    code: str
    message: str
    status: int
    details: Any

    def __init__(self, code: str, message: str, status: int = 400, details: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.details = details
