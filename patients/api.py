from __future__ import annotations

from typing import Any

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from clinics import audit
from clinics.api.base import ClinicGenericAPIView
from clinics.api.docs import error_response
from clinics.api.output import DirectOutput

from .models import Image, Patient, Sex
from .restricted import restricted_visible
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


RESTRICTED_IN_LISTS = (
    "Null in lists and search for a restricted record when the caller may not open it (staff, API keys): such a "
    "record shows as `restricted: true` with its id and practice id only."
)


class PatientOutput(DirectOutput):
    """One patient. In lists and search, a restricted record that the caller may not open (context
    ``restricted_visible`` False) carries its id, practice id and ``restricted`` only: never names, date of birth
    or sex."""

    id = serializers.UUIDField()
    external_id = serializers.CharField()
    restricted = serializers.BooleanField(help_text="Restricted record: open to dentists and clinic admins only.")
    given_name = serializers.CharField(allow_null=True, help_text=RESTRICTED_IN_LISTS)
    family_name = serializers.CharField(allow_null=True, help_text=RESTRICTED_IN_LISTS)
    date_of_birth = serializers.DateField(allow_null=True, help_text=RESTRICTED_IN_LISTS)
    sex = serializers.CharField(allow_null=True, help_text=RESTRICTED_IN_LISTS)
    legal_hold = serializers.BooleanField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()

    def to_representation(self, patient: Patient) -> dict[str, Any]:
        identity = patient_identity(patient)
        hidden = patient.restricted and not self.context.get("restricted_visible", True)
        return self.represent(
            {
                "id": patient.pk,
                "external_id": identity.external_id,
                "restricted": patient.restricted,
                "given_name": None if hidden else identity.given_name,
                "family_name": None if hidden else identity.family_name,
                "date_of_birth": None if hidden else identity.date_of_birth,
                "sex": None if hidden else patient.sex,
                "legal_hold": patient.legal_hold,
                "created_at": patient.created_at,
                "updated_at": patient.updated_at,
            }
        )


_OPEN_EXAMPLE = {
    "id": "0b6c3f0e-2a51-4c57-9d0a-5f1f8f9d2c11",
    "external_id": "PMS-1042",
    "restricted": False,
    "given_name": "Ada",
    "family_name": "Example",
    "date_of_birth": "1990-12-10",
    "sex": "female",
    "legal_hold": False,
    "created_at": "2026-12-01T09:30:00Z",
    "updated_at": "2026-12-01T09:30:00Z",
}
_RESTRICTED_EXAMPLE = {
    "id": "6f2d9a4b-8c3e-4e1a-b7f5-0d9c2e4a6b83",
    "external_id": "PMS-2001",
    "restricted": True,
    "given_name": None,
    "family_name": None,
    "date_of_birth": None,
    "sex": None,
    "legal_hold": False,
    "created_at": "2026-12-02T14:05:00Z",
    "updated_at": "2026-12-02T14:05:00Z",
}
# one item each: drf-spectacular puts a list example in a page of results
PATIENT_LIST_EXAMPLES = [
    OpenApiExample("An open record", value=_OPEN_EXAMPLE, response_only=True),
    OpenApiExample(
        "A restricted record, as staff and API keys see it",
        summary="its id and practice id only: no name, date of birth or sex",
        value=_RESTRICTED_EXAMPLE,
        response_only=True,
    ),
]
PATIENT_SEARCH_EXAMPLES = [
    OpenApiExample(
        "A search as staff or an API key see it",
        summary="a restricted record is found by its practice id only, and shows nothing more",
        value={"count": 1, "results": [_RESTRICTED_EXAMPLE]},
        response_only=True,
    )
]


class AnalysisSummary(serializers.Serializer):
    id = serializers.UUIDField()
    status = serializers.CharField()
    not_assessable = serializers.DictField(
        child=serializers.CharField(),
        allow_null=True,
        help_text="When status is `not_assessable`: `code` and `message` of the image gate's reason (for example "
        '`blurred`, "The photo is blurred: please retake it"). The image is stored; the AI did not assess it.',
    )


class ImageOutput(DirectOutput):
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

    def to_representation(self, image: Image) -> dict[str, Any]:
        return self.represent(
            {
                "id": image.pk,
                "patient": image.patient_id,
                "visit": image.visit_id,
                "modality": image.modality,
                "width": image.width,
                "height": image.height,
                "bit_depth": image.bit_depth,
                "original_format": image.original_format,
                "sha256": image.sha256,
                "size_bytes": image.size_bytes,
                "uploaded_at": image.uploaded_at,
                "file": self.get_file(image),
                "analysis": self.get_analysis(image),
            }
        )

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
        description="A restricted record is found by its practice id only by callers that may not open it (staff, "
        "API keys), and shows as `restricted: true` with no name, date of birth or sex.",
        request=PatientSearchInput,
        responses=PatientSearchOutput,
        examples=PATIENT_SEARCH_EXAMPLES,
    )
    def post(self, request: Request) -> Response:
        data = PatientSearchInput(data=request.data)
        data.is_valid(raise_exception=True)
        visible = restricted_visible(request.access)
        found = list(patient_list(search=data.validated_data["query"], restricted_names=visible)[: self.MAX_RESULTS])
        audit.record(
            action="patient.list",
            clinic_id=request.access.clinic.id,
            object_type="patient",
            details={"ids": [str(p.id) for p in found], "searched": True},
        )
        results = PatientOutput(found, many=True, context={"restricted_visible": visible}).data
        return Response({"count": len(found), "results": results})


class PatientListView(ClinicGenericAPIView):
    serializer_class = PatientOutput
    keyset = ("-created_at", "id")  # ?cursor= pages (clinics.api.pagination)

    @extend_schema(
        summary="List the clinic's patients",
        description="Restricted records are listed for everyone; to callers that may not open them (staff, API "
        "keys) with `restricted: true`, their id and practice id only.",
        responses=PatientOutput(many=True),
        examples=PATIENT_LIST_EXAMPLES,
    )
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
        visible = restricted_visible(request.access)
        return self.get_paginated_response(PatientOutput(page, many=True, context={"restricted_visible": visible}).data)

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
    decrypts = True  # False where the view reads nothing encrypted of the patient (saves loading the data key)

    def get_object(self) -> Patient:
        try:
            return patient_get(self.kwargs["pk"], with_key=self.decrypts)
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
    decrypts = False  # the metadata needs no data key

    def get_object(self) -> Image:
        try:
            return image_get(self.kwargs["pk"], with_key=self.decrypts)
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
    decrypts = True

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
