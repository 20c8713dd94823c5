"""``GET, POST /api/v1/patients/{id}/images/``: a patient's images, and the upload of one.

The images are ``patients``' (listed with its selector and output serializer); an upload also requests the
image's analysis (``uploads.image_upload``), which ``patients`` cannot do without importing this app, so the
route is served from here (URL name ``api:patient-image-list``, as before).
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from clinics import audit
from clinics.api.base import ClinicGenericAPIView
from clinics.api.docs import error_response
from core.errors import error_body
from patients.api import ImageOutput, PatientObjectMixin
from patients.intake import IntakeError
from patients.models import Modality, Patient
from patients.selectors import image_list

from .uploads import idempotency_key_validate, image_upload, image_upload_once


class ImageUploadInput(serializers.Serializer):
    file = serializers.FileField(allow_empty_file=True, use_url=False)
    modality = serializers.ChoiceField(choices=Modality.choices)
    visit = serializers.UUIDField(required=False)


def intake_error_response(exc: IntakeError) -> Response:
    return Response(error_body(exc.code, exc.message), status=exc.status)


class PatientImageListView(PatientObjectMixin, ClinicGenericAPIView):
    parser_classes = [MultiPartParser]
    serializer_class = ImageOutput

    @property
    def decrypts(self) -> bool:
        return self.request.method != "GET"  # the list shows no encrypted field; an upload encrypts

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
        description=(
            "Send an `Idempotency-Key` header (1-64 characters of `A-Za-z0-9_-`, one key per file, the same key "
            "on every retry of that file) to make a retry safe: a repeated request with a key already used by this "
            "clinic for this patient stores nothing and answers 200 with the image the first request stored. Keys "
            "are remembered for 24 hours."
        ),
        request=ImageUploadInput,
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                required=False,
                description="Client-chosen key of this upload (pattern `^[A-Za-z0-9_-]{1,64}$`), reused on retries.",
            )
        ],
        responses={
            200: ImageOutput,
            201: ImageOutput,
            400: error_response("Rejected file or fields: error code and message, nothing stored"),
            404: error_response("No such patient (or `visit_not_found`: no such visit of the patient)"),
            409: error_response(
                "`visit_signed`: that visit's report is signed (no visit: a new one starts); "
                "`idempotency_key_reused`: the Idempotency-Key was used for another patient's upload"
            ),
            413: error_response("`file_too_large`: over the upload limit, nothing stored"),
            415: error_response("`unsupported_format`: not a supported image format, nothing stored"),
        },
    )
    def post(self, request: Request, pk: str) -> Response:
        patient = self.get_object()
        key = request.headers.get("Idempotency-Key")
        if key is not None:
            key = idempotency_key_validate(key)  # before the body is read: 400 invalid_idempotency_key
        fields = request.data  # parses the body; the upload handler flags an oversized file
        if getattr(request._request, "upload_too_large", False):
            return self.reject(patient, IntakeError("file_too_large", "The file is larger than the upload limit.", 413))
        if len(request.FILES.getlist("file")) > 1:
            return self.reject(patient, IntakeError("too_many_files", "Send one file per request.", 400))
        data = ImageUploadInput(data=fields)
        data.is_valid(raise_exception=True)
        upload = data.validated_data["file"]
        upload_fields = {
            "patient": patient,
            "stream": upload,
            "filename": upload.name,
            "size": upload.size,
            "modality": data.validated_data["modality"],
            "visit_id": data.validated_data.get("visit"),
        }
        try:  # the analysis is queued once the upload has committed
            if key is None:
                image, created = image_upload(**upload_fields), True
            else:
                image, created = image_upload_once(idempotency_key=key, **upload_fields)
        except IntakeError as exc:
            return self.reject(patient, exc)
        if not created:  # a retry of an upload already stored: the same image, nothing stored twice
            audit.record(
                action="image.upload_repeated",
                clinic_id=request.access.clinic.id,
                object_type="image",
                object_id=image.pk,
                details={"patient_id": str(patient.pk)},
            )
        return Response(ImageOutput(image).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)
