from __future__ import annotations

from typing import Any

from django.db import transaction
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from analysis.exports import patient_clinical_record
from analysis.services import analysis_request, model_input_maker
from clinics import audit
from clinics.api.base import ClinicGenericAPIView
from clinics.api.docs import error_response
from core.errors import error_body

from .intake import IntakeError
from .models import Image, Modality, Patient, Sex
from .selectors import image_get, image_list, patient_get, patient_identity, patient_list
from .services import image_ingest, image_read, patient_create, patient_erase, patient_export, patient_update


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
        return {"id": analysis.pk, "status": analysis.status} if analysis else None


class ImageUploadInput(serializers.Serializer):
    file = serializers.FileField(allow_empty_file=True, use_url=False)
    modality = serializers.ChoiceField(choices=Modality.choices)
    visit = serializers.UUIDField(required=False)


def intake_error_response(exc: IntakeError) -> Response:
    return Response(error_body(exc.code, exc.message), status=exc.status)


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
        response = HttpResponse(
            patient_export(patient=patient, clinical=patient_clinical_record), content_type="application/zip"
        )
        response["Content-Disposition"] = f'attachment; filename="patient-{patient.pk}.zip"'
        response["Cache-Control"] = "no-store"
        return response


class PatientImageListView(PatientObjectMixin, ClinicGenericAPIView):
    parser_classes = [MultiPartParser]
    serializer_class = ImageOutput

    @extend_schema(summary="List a patient's images", responses=ImageOutput(many=True))
    def get(self, request: Request, pk: str) -> Response:
        patient = self.get_object()
        page = self.paginate_queryset(image_list(patient))
        audit.record(
            action="image.list",
            clinic_id=request.access.clinic.id,
            object_type="patient",
            object_id=patient.pk,
            details={"ids": [str(i.pk) for i in page]},
        )
        return self.get_paginated_response(ImageOutput(page, many=True).data)

    def reject(self, patient: Patient, exc: IntakeError) -> Response:
        """A refused upload: nothing was stored; the refusal is audited and explained."""
        audit.record(
            action="image.rejected",
            clinic_id=self.request.access.clinic.id,
            object_type="patient",
            object_id=patient.pk,
            outcome="denied",
            details={"code": exc.code},
        )
        return intake_error_response(exc)

    @extend_schema(
        summary="Upload an image",
        request=ImageUploadInput,
        responses={
            201: ImageOutput,
            400: error_response("Rejected file or fields: error code and message, nothing stored"),
            404: error_response("No such patient (or `visit_not_found`: no such visit of the patient)"),
            409: error_response("`visit_signed`: that visit's report is signed (no visit: a new one starts)"),
            413: error_response("`file_too_large`: over the upload limit, nothing stored"),
            415: error_response("`unsupported_format`: not a supported image format, nothing stored"),
        },
    )
    def post(self, request: Request, pk: str) -> Response:
        patient = self.get_object()
        fields = request.data  # parses the body; the upload handler flags an oversized file
        if getattr(request._request, "upload_too_large", False):
            return self.reject(patient, IntakeError("file_too_large", "The file is larger than the upload limit.", 413))
        if len(request.FILES.getlist("file")) > 1:
            return self.reject(patient, IntakeError("too_many_files", "Send one file per request.", 400))
        data = ImageUploadInput(data=fields)
        data.is_valid(raise_exception=True)
        upload = data.validated_data["file"]
        try:
            with transaction.atomic():  # the analysis is queued once the upload has committed
                image = image_ingest(
                    patient=patient,
                    stream=upload,
                    filename=upload.name,
                    size=upload.size,
                    modality=data.validated_data["modality"],
                    visit_id=data.validated_data.get("visit"),
                    model_input=model_input_maker(data.validated_data["modality"]),
                )
                analysis_request(image=image)
        except IntakeError as exc:
            return self.reject(patient, exc)
        return Response(ImageOutput(image).data, status=status.HTTP_201_CREATED)


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
