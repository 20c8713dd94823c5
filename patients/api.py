from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from clinics import audit
from clinics.api.base import ClinicGenericAPIView

from .models import Patient, Sex
from .selectors import patient_list
from .services import patient_create, patient_update


class PatientCreateInput(serializers.Serializer):
    external_id = serializers.CharField(max_length=64)
    given_name = serializers.CharField(max_length=100)
    family_name = serializers.CharField(max_length=100)
    date_of_birth = serializers.DateField()
    sex = serializers.ChoiceField(choices=Sex.choices, required=False, default=Sex.UNKNOWN)


class PatientUpdateInput(serializers.Serializer):
    external_id = serializers.CharField(max_length=64, required=False)
    given_name = serializers.CharField(max_length=100, required=False)
    family_name = serializers.CharField(max_length=100, required=False)
    date_of_birth = serializers.DateField(required=False)
    sex = serializers.ChoiceField(choices=Sex.choices, required=False)


class PatientOutput(serializers.Serializer):
    id = serializers.UUIDField()
    external_id = serializers.CharField()
    given_name = serializers.CharField()
    family_name = serializers.CharField()
    date_of_birth = serializers.DateField()
    sex = serializers.CharField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class PatientListView(ClinicGenericAPIView):
    serializer_class = PatientOutput

    @extend_schema(
        parameters=[OpenApiParameter("search", str, description="External id (exact) or part of a name")],
        responses=PatientOutput(many=True),
    )
    def get(self, request: Request) -> Response:
        page = self.paginate_queryset(patient_list(search=request.query_params.get("search", "")))
        audit.record(
            action="patient.list", clinic_id=request.access.clinic.id, object_type="patient",
            details={"ids": [str(p.id) for p in page], "searched": bool(request.query_params.get("search"))},
        )
        return self.get_paginated_response(PatientOutput(page, many=True).data)

    @extend_schema(request=PatientCreateInput, responses={201: PatientOutput})
    def post(self, request: Request) -> Response:
        data = PatientCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        patient = patient_create(**data.validated_data)
        return Response(PatientOutput(patient).data, status=status.HTTP_201_CREATED)


class PatientDetailView(ClinicGenericAPIView):
    serializer_class = PatientOutput

    def get_queryset(self):  # noqa: ANN201 - scoped manager: another clinic's id is a 404
        return Patient.objects.all()

    @extend_schema(responses=PatientOutput)
    def get(self, request: Request, pk: str) -> Response:
        patient = self.get_object()
        audit.record(action="patient.view", clinic_id=request.access.clinic.id, object_type="patient",
                     object_id=patient.id)
        return Response(PatientOutput(patient).data)

    @extend_schema(request=PatientUpdateInput, responses=PatientOutput)
    def patch(self, request: Request, pk: str) -> Response:
        patient = self.get_object()
        data = PatientUpdateInput(data=request.data)
        data.is_valid(raise_exception=True)
        patient = patient_update(patient=patient, **data.validated_data)
        return Response(PatientOutput(patient).data)
