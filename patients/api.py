from __future__ import annotations

from typing import Any

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from clinics import audit
from clinics.api.base import ClinicGenericAPIView
from clinics.api.docs import error_response

from .models import Image, Patient, Sex
from .selectors import image_get, patient_get, patient_identity, patient_list
from .services import image_read, patient_create, patient_erase, patient_export, patient_update


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
    legal_hold = serializers.BooleanField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()

    def to_representation(self, patient: Patient) -> dict[str, Any]:
        identity = patient_identity(patient)
        return super().to_representation(
            {
                "id": patient.pk,
                "external_id": identity.external_id,
                "given_name": identity.given_name,
                "family_name": identity.family_name,
                "date_of_birth": identity.date_of_birth,
                "sex": patient.sex,
                "legal_hold": patient.legal_hold,
                "created_at": patient.created_at,
                "updated_at": patient.updated_at,
            }
        )


class AnalysisSummary(serializers.Serializer):
    id = serializers.UUIDField()
    status = serializers.CharField()
    not_assessable = serializers.DictField(
        child=serializers.CharField(),
        allow_null=True,
        help_text="When status is `not_assessable`: `code` and `message` of the image gate's reason (for example "
        "`blurred`, \"The photo is blurred: please retake it\"). The image is stored; the AI did not assess it.",
    )


class ImageOutput(serializers.Serializer):
    id = serializers.UUIDField()
    patient = serializers.UUIDField(source="patient_id")
    visit = serializers.UUIDField(source="visit_id")
    modality = serializers.CharField()
    width = serializers.IntegerField()
    height = serializers.IntegerField()
    bit_depth = serializers.IntegerField()
    original_format = serializers.CharField()
    sha256 = serializers.CharField()
    size_bytes = serializers.IntegerField()
    uploaded_at = serializers.DateTimeField()
    file = serializers.SerializerMethodField()
    analysis = serializers.SerializerMethodField()

    def get_file(self, image: Image) -> str:
        return f"/api/v1/images/{image.pk}/file"

    @extend_schema_field(AnalysisSummary(allow_null=True))
    def get_analysis(self, image: Image) -> dict[str, Any] | None:
        """The newest analysis of the image (None when no model exists for its modality)."""
        found = getattr(image, "newest_analyses", None)  # prefetched by patients.selectors.image_list
        if found is None:
            analysis = image.analyses.order_by("-created_at").first()
        else:
            analysis = found[0] if found else None
        if analysis is None:
            return None
        refused = analysis.status == "not_assessable"
        return {
            "id": analysis.pk,
            "status": analysis.status,
            "not_assessable": (
                {"code": analysis.not_assessable_code, "message": analysis.not_assessable_message} if refused else None
            ),
        }


class PatientSearchInput(serializers.Serializer):
    query = serializers.CharField(max_length=200, help_text="Practice id, or a given or family name (exact match)")


class PatientSearchOutput(serializers.Serializer):
    count = serializers.IntegerField()
    results = PatientOutput(many=True)


class PatientSearchView(ClinicGenericAPIView):
    """Find patients by practice id or exact name. A POST, so the words never appear in a URL."""

    serializer_class = PatientSearchInput
    MAX_RESULTS = 50

    @extend_schema(
        summary="Search patients by practice id or exact name",
        request=PatientSearchInput,
        responses=PatientSearchOutput,
    )
    def post(self, request: Request) -> Response:
        data = PatientSearchInput(data=request.data)
        data.is_valid(raise_exception=True)
        found = list(patient_list(search=data.validated_data["query"])[: self.MAX_RESULTS])
        audit.record(
            action="patient.list",
            clinic_id=request.access.clinic.id,
            object_type="patient",
            details={"ids": [str(p.id) for p in found], "searched": True},
        )
        return Response({"count": len(found), "results": PatientOutput(found, many=True).data})


class PatientListView(ClinicGenericAPIView):
    serializer_class = PatientOutput

    @extend_schema(summary="List the clinic's patients", responses=PatientOutput(many=True))
    def get(self, request: Request) -> Response:
        """The clinic's patients, newest first. To search, POST to ``patients/search/``: search words
        are patient data and must not travel in URLs (they end up in access logs)."""
        page = self.paginate_queryset(patient_list())
        audit.record(
            action="patient.list",
            clinic_id=request.access.clinic.id,
            object_type="patient",
            details={"ids": [str(p.id) for p in page], "searched": False},
        )
        return self.get_paginated_response(PatientOutput(page, many=True).data)

    @extend_schema(
        summary="Create a patient",
        request=PatientCreateInput,
        responses={201: PatientOutput, 409: error_response("`duplicate_external_id`: the practice id is taken")},
    )
    def post(self, request: Request) -> Response:
        data = PatientCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        patient = patient_create(**data.validated_data)
        return Response(PatientOutput(patient).data, status=status.HTTP_201_CREATED)


class PatientObjectMixin:
    def get_object(self) -> Patient:
        try:
            return patient_get(self.kwargs["pk"])
        except Patient.DoesNotExist as exc:
            from django.http import Http404

            raise Http404 from exc


class PatientDetailView(PatientObjectMixin, ClinicGenericAPIView):
    serializer_class = PatientOutput

    @extend_schema(summary="Get a patient", responses=PatientOutput)
    def get(self, request: Request, pk: str) -> Response:
        patient = self.get_object()
        audit.record(
            action="patient.view", clinic_id=request.access.clinic.id, object_type="patient", object_id=patient.id
        )
        return Response(PatientOutput(patient).data)

    @extend_schema(
        summary="Update a patient",
        request=PatientUpdateInput,
        responses={200: PatientOutput, 409: error_response("`duplicate_external_id`: the practice id is taken")},
    )
    def patch(self, request: Request, pk: str) -> Response:
        patient = self.get_object()
        data = PatientUpdateInput(data=request.data)
        data.is_valid(raise_exception=True)
        patient = patient_update(patient=patient, **data.validated_data)
        return Response(PatientOutput(patient).data)

    @extend_schema(
        summary="Erase a patient",
        description="Erase the patient (GDPR Art. 17): clinic admins only; 409 under legal hold.",
        responses={204: None, 409: error_response("`legal_hold`: the records are under legal hold")},
    )
    def delete(self, request: Request, pk: str) -> Response:
        patient_erase(patient=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


class PatientExportView(PatientObjectMixin, ClinicGenericAPIView):
    @extend_schema(
        summary="Export everything held about a patient",
        description="Everything held about one patient as a zip (clinic admins only).",
        responses={(200, "application/zip"): OpenApiTypes.BINARY},
    )
    def get(self, request: Request, pk: str) -> HttpResponse:
        patient = self.get_object()
        response = HttpResponse(patient_export(patient=patient), content_type="application/zip")
        response["Content-Disposition"] = f'attachment; filename="patient-{patient.pk}.zip"'
        response["Cache-Control"] = "no-store"
        return response


class ImageDetailView(ClinicGenericAPIView):
    serializer_class = ImageOutput

    def get_object(self) -> Image:
        try:
            return image_get(self.kwargs["pk"])
        except Image.DoesNotExist as exc:
            from django.http import Http404

            raise Http404 from exc

    @extend_schema(summary="Get an image's metadata", responses=ImageOutput)
    def get(self, request: Request, pk: str) -> Response:
        image = self.get_object()
        audit.record(
            action="image.metadata", clinic_id=request.access.clinic.id, object_type="image", object_id=image.pk
        )
        return Response(ImageOutput(image).data)


class ImageFileView(ImageDetailView):
    @extend_schema(
        summary="Download an image file",
        parameters=[OpenApiParameter("variant", str, enum=["original", "preview", "thumbnail"])],
        description="The original as PNG; the preview and thumbnail variants as JPEG.",
        responses={(200, "image/png"): OpenApiTypes.BINARY, (200, "image/jpeg"): OpenApiTypes.BINARY},
    )
    def get(self, request: Request, pk: str) -> HttpResponse:
        image = self.get_object()
        variant = request.query_params.get("variant", "original")
        data = image_read(image=image, variant=variant)
        response = HttpResponse(data, content_type="image/png" if variant == "original" else "image/jpeg")
        response["Cache-Control"] = "no-store"
        response["Content-Disposition"] = f'inline; filename="{image.pk}.{"png" if variant == "original" else "jpg"}"'
        return response
