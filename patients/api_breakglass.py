"""``POST /api/v1/patients/{id}/break-glass/``: emergency access to a restricted record (people only)."""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from clinics.api.base import ClinicGenericAPIView

from .models import Patient
from .restricted import break_glass_open
from .selectors import patient_get


class BreakGlassInput(serializers.Serializer):
    reason = serializers.CharField(min_length=10, max_length=2000, help_text="Why emergency access is needed.")


class BreakGlassOutput(serializers.Serializer):
    id = serializers.UUIDField()
    patient = serializers.UUIDField(source="patient_id")
    expires_at = serializers.DateTimeField()


class PatientBreakGlassView(ClinicGenericAPIView):
    """Open time-limited access to a restricted patient; the clinic admins are notified and every
    use is audited. Not available to clinic API keys."""

    serializer_class = BreakGlassInput

    def get_object(self) -> Patient:
        # Another clinic's patient is a 404 before any permission answer (see RoutePermission).
        try:
            return patient_get(self.kwargs["pk"])
        except Patient.DoesNotExist as exc:
            raise Http404 from exc

    @extend_schema(
        summary="Open emergency access to a restricted patient",
        request=BreakGlassInput,
        responses={
            201: BreakGlassOutput,
            400: OpenApiResponse(description="Reason missing or too short"),
            403: OpenApiResponse(description="Not allowed (API keys cannot open emergency access)"),
            404: OpenApiResponse(description="No such patient in this clinic"),
            409: OpenApiResponse(description="The record is not restricted"),
        },
    )
    def post(self, request: Request, pk: str) -> Response:
        patient = self.get_object()
        data = BreakGlassInput(data=request.data)
        data.is_valid(raise_exception=True)
        grant = break_glass_open(access=request.access, patient=patient, reason=data.validated_data["reason"])
        return Response(BreakGlassOutput(grant).data, status=status.HTTP_201_CREATED)
