from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from .. import audit, context
from ..models import ApiKey, AuditOutcome, UserToken
from ..services import API_KEY_PREFIX, USER_TOKEN_PREFIX, api_key_authenticate, user_token_authenticate


@dataclass(frozen=True)
class ApiKeyPrincipal:
    """``request.user`` for a request made with a clinic API key (a system, not a person)."""

    api_key: ApiKey
    is_authenticated: bool = True
    is_anonymous: bool = False
    is_active: bool = True

    @property
    def pk(self) -> str:
        return f"api-key:{self.api_key.pk}"


class BearerAuthentication(authentication.BaseAuthentication):
    """``Authorization: Bearer <secret>`` with a clinic API key (``dsk_...``) or a user token (``dut_...``).

    ``request.auth`` is the ``ApiKey`` or ``UserToken``; the clinic comes from it, never from the
    request body or query.
    """

    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[Any, ApiKey | UserToken] | None:
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        parts = header.split()
        if parts[0].lower() != self.keyword.lower():
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed("Malformed Authorization header.")
        raw = parts[1]
        if raw.startswith(f"{API_KEY_PREFIX}_"):
            key = api_key_authenticate(raw)
            if key is not None:
                return ApiKeyPrincipal(api_key=key), key
        elif raw.startswith(f"{USER_TOKEN_PREFIX}_"):
            token = user_token_authenticate(raw)
            if token is not None:
                return token.user, token
        audit.record(
            action="auth.token.rejected",
            clinic_id=None,
            outcome=AuditOutcome.DENIED,
            actor=context.Actor(),
            details={"kind": raw[:3] if raw[:3] in (API_KEY_PREFIX, USER_TOKEN_PREFIX) else "?"},
        )
        raise exceptions.AuthenticationFailed("Invalid, expired or revoked token.")

    def authenticate_header(self, request: Request) -> str:
        return self.keyword


class BearerAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "clinics.api.authentication.BearerAuthentication"
    name = "bearer"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer", "description": "Clinic API key or short-lived user token"}
