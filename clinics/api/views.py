from __future__ import annotations

from typing import Any

from django.contrib.auth import authenticate
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, status
from rest_framework.request import Request
from rest_framework.response import Response

from .. import mfa, ratelimit
from ..access import access_for_user
from ..exports import audit_export_response, record_audit_trail_read
from ..middleware import client_ip
from ..selectors import audit_events
from ..services import (
    ServiceError,
    login_failed_record,
    second_factor_blocked,
    second_factor_failed,
    user_token_create,
)
from .base import ClinicAPIView, ClinicGenericAPIView
from .serializers import AuditEventOutput, AuditExportInput, AuditFilterInput, TokenInput, TokenOutput


class TokenView(ClinicAPIView):
    """Exchange a user's email and password for a short-lived bearer token for one clinic."""

    authentication_classes: list[type] = []

    def get_authenticate_header(self, request: Request) -> str:
        return "Bearer"  # bad credentials are a 401, as on every other endpoint

    @extend_schema(
        summary="Get a user token",
        request=TokenInput,
        responses={
            200: TokenOutput,
            400: OpenApiResponse(description="Invalid request"),
            401: OpenApiResponse(description="Bad credentials, or a missing or wrong second factor (mfa_required)"),
            403: OpenApiResponse(description="Role needs MFA, none enrolled (mfa_enrollment_required)"),
            429: OpenApiResponse(description="Locked out after failed attempts, or rate limited; see Retry-After"),
        },
    )
    def post(self, request: Request) -> Response:
        data = TokenInput(data=request.data)
        data.is_valid(raise_exception=True)
        email, password = data.validated_data["email"], data.validated_data["password"]
        ip = client_ip(request._request)
        locked = ratelimit.locked_for(email, ip) or ratelimit.account_blocked("login", email)
        if locked:
            login_failed_record(email, "locked_out")
            raise exceptions.Throttled(wait=locked, detail="Too many failed attempts from this address.")
        user = authenticate(request._request, email=email, password=password)
        access = access_for_user(user, data.validated_data.get("clinic")) if user is not None else None
        if access is None:
            login_failed_record(email, "bad_credentials" if user is None else "no_membership")
            self._failed(email, ip)
            raise exceptions.AuthenticationFailed("Email or password is not correct, or no active membership.")
        second_factor = False
        if mfa.has_mfa(user):
            otp = data.validated_data.get("otp") or ""
            refused = second_factor_blocked(user)
            if refused:
                login_failed_record(email, "locked_out")
                raise exceptions.Throttled(wait=refused, detail="Too many wrong codes for this account.")
            second_factor = mfa.verify(user, otp) is not None
            if not second_factor:
                login_failed_record(email, "bad_second_factor" if otp else "second_factor_missing")
                if otp:
                    refused = second_factor_failed(user)
                    if refused:
                        raise exceptions.Throttled(wait=refused, detail="Too many wrong codes for this account.")
                self._failed(email, ip)
                raise MfaCodeRequired()
        elif mfa.mfa_required(user):
            login_failed_record(email, "mfa_not_enrolled")
            raise ServiceError(
                "mfa_enrollment_required",
                "This role needs a second factor: log in once in the browser to set up an authenticator.",
                status=403,
            )
        ratelimit.success(email, ip)
        token, raw = user_token_create(user=user, clinic=access.clinic, mfa_verified=second_factor)
        return Response(
            TokenOutput({"token": raw, "expires_at": token.expires_at, "clinic": access.clinic.id}).data,
            status=status.HTTP_200_OK,
        )

    def _failed(self, email: str, ip: str | None) -> None:
        ratelimit.account_failure("login", email)  # failures only: a correct password is never counted
        locked = ratelimit.failure(email, ip)
        if locked:
            raise exceptions.Throttled(wait=locked, detail="Too many failed attempts from this address.")


class MfaCodeRequired(exceptions.AuthenticationFailed):
    default_detail = "A valid code from the authenticator (field otp) or a recovery code is required."
    default_code = "mfa_required"


class AuditEventListView(ClinicGenericAPIView):
    """The clinic's audit trail, newest first (clinic admins only)."""

    serializer_class = AuditEventOutput

    @extend_schema(summary="List audit events", parameters=[AuditFilterInput], responses=AuditEventOutput(many=True))
    def get(self, request: Request) -> Response:
        filters = AuditFilterInput(data=request.query_params)
        filters.is_valid(raise_exception=True)
        page = self.paginate_queryset(audit_events(**filters.validated_data))
        record_audit_trail_read(
            clinic_id=request.access.clinic.id,
            filters=filters.validated_data,
            page=self.paginator.page.number,
            shown=len(page),
        )
        return self.get_paginated_response(AuditEventOutput(page, many=True).data)


class AuditEventExportView(ClinicAPIView):
    """The whole filtered trail as a CSV or JSON download; the export itself is audited."""

    @extend_schema(
        summary="Export the audit trail",
        parameters=[AuditExportInput],
        responses={(200, "text/csv"): OpenApiTypes.STR, (200, "application/json"): OpenApiTypes.OBJECT},
    )
    def get(self, request: Request) -> Any:
        params = AuditExportInput(data=request.query_params)
        params.is_valid(raise_exception=True)
        filters = {k: v for k, v in params.validated_data.items() if k != "format"}
        return audit_export_response(
            events=audit_events(**filters),
            fmt=params.validated_data["format"],
            clinic_id=request.access.clinic.id,
            filters=filters,
        )
