"""``GET, POST /api/v1/patients/{id}/images/``: a patient's images, and the upload of one;
``POST /api/v1/patients/{id}/images/batch/``: the upload of several in one request, one result per file.

The images are ``patients``' (listed with its selector and output serializer); an upload also requests the
image's analysis (``uploads.image_upload``), which ``patients`` cannot do without importing this app, so the
route is served from here (URL name ``api:patient-image-list``, as before).
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from clinics import audit, ratelimit
from clinics.api.base import ClinicGenericAPIView
from clinics.api.docs import error_response
from clinics.middleware import client_ip
from clinics.services import ServiceError
from core.errors import error_body
from patients.api import ImageOutput, PatientObjectMixin
from patients.intake import IntakeError
from patients.models import Image, Modality, Patient
from patients.selectors import image_list

from .uploads import idempotency_key_validate, image_upload, image_upload_once

logger = logging.getLogger(__name__)


class ImageUploadInput(serializers.Serializer):
    file = serializers.FileField(allow_empty_file=True, use_url=False)
    modality = serializers.ChoiceField(choices=Modality.choices)
    visit = serializers.UUIDField(required=False)


def intake_error_response(exc: IntakeError) -> Response:
    return Response(error_body(exc.code, exc.message), status=exc.status)


def _audit_rejection(request: Request, patient: Patient, code: str) -> None:
    audit.record(
        action="image.rejected",
        clinic_id=request.access.clinic.id,
        object_type="patient",
        object_id=patient.pk,
        outcome="denied",
        details={"code": code},
    )


def _store_one(
    request: Request, patient: Patient, upload: Any, modality: str, visit_id: object, key: str | None
) -> tuple[Image, bool]:
    """One uploaded file stored and queued (``image_upload``, or ``image_upload_once`` with a key), as both upload
    routes do it: returns the image and whether this request stored it; a repeat of a key is audited. Raises what
    the upload raises (``IntakeError``, ``ServiceError``)."""
    fields = {
        "patient": patient,
        "stream": upload,
        "filename": upload.name,
        "size": upload.size,
        "modality": modality,
        "visit_id": visit_id,
    }
    if key is None:
        return image_upload(**fields), True
    image, created = image_upload_once(idempotency_key=key, **fields)
    if not created:  # a retry of an upload already stored: the same image, nothing stored twice
        audit.record(
            action="image.upload_repeated",
            clinic_id=request.access.clinic.id,
            object_type="image",
            object_id=image.pk,
            details={"patient_id": str(patient.pk)},
        )
    return image, created


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
        _audit_rejection(self.request, patient, exc.code)
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
        valid = data.validated_data
        try:  # the analysis is queued once the upload has committed
            image, created = _store_one(request, patient, valid["file"], valid["modality"], valid.get("visit"), key)
        except IntakeError as exc:
            return self.reject(patient, exc)
        return Response(ImageOutput(image).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class ImageBatchUploadInput(serializers.Serializer):
    file = serializers.ListField(child=serializers.FileField(allow_empty_file=True, use_url=False))
    modality = serializers.ChoiceField(choices=Modality.choices)
    visit = serializers.UUIDField(required=False)
    idempotency_key = serializers.ListField(child=serializers.CharField(), required=False)


class ImageBatchResult(serializers.Serializer):
    index = serializers.IntegerField(help_text="The file's position in the request, from 0")
    filename = serializers.CharField()
    status = serializers.IntegerField(help_text="What the single-file upload would have answered for this file")
    image = ImageOutput(required=False, help_text="The stored image (status 201, or 200 for a repeated key)")
    error = serializers.DictField(required=False, help_text="`{code, message, details}` when it was not stored")


class ImageBatchOutput(serializers.Serializer):
    stored = serializers.IntegerField()
    rejected = serializers.IntegerField()
    results = ImageBatchResult(many=True)


class PatientImageBatchView(PatientObjectMixin, ClinicGenericAPIView):
    """Several files in one request, each handled exactly as the single-file upload handles it, in its own
    transaction: a rejected file stores nothing and does not stop the others; each stored one is analysed."""

    parser_classes = [MultiPartParser]
    serializer_class = ImageBatchOutput

    @extend_schema(
        summary="Upload several images in one request",
        description=(
            "Multipart form: `file` repeated (1 to `UPLOAD_BATCH_MAX_FILES`, default 20; together at most "
            "`UPLOAD_BATCH_MAX_BYTES`, default twice `IMAGE_MAX_BYTES`), `modality`, optional `visit`, and optionally "
            "`idempotency_key` repeated once per file in the same order (the rules of the single upload's "
            "`Idempotency-Key`). Every file gets its own result with the status the single upload would have "
            "answered. The response is 201 when every file was stored (or was a repeat), 207 when at least one was "
            "not; the upload limit counts each file."
        ),
        request=ImageBatchUploadInput,
        responses={
            201: ImageBatchOutput,
            207: ImageBatchOutput,
            400: error_response("Fields wrong for the whole request (no file, too many files, keys not one per file)"),
            404: error_response("No such patient"),
            413: error_response("`file_too_large`: the request or one of its files is over the limit, nothing stored"),
        },
    )
    def post(self, request: Request, pk: str) -> Response:
        patient = self.get_object()
        fields = request.data
        if getattr(request._request, "upload_too_large", False):
            _audit_rejection(request, patient, "file_too_large")
            return intake_error_response(
                IntakeError(
                    "file_too_large",
                    f"The request is larger than the batch limit ({settings.UPLOAD_BATCH_MAX_BYTES} bytes) or one of "
                    f"its files is larger than the upload limit ({settings.IMAGE_MAX_BYTES} bytes): nothing was "
                    "stored.",
                    413,
                )
            )
        files = request.FILES.getlist("file")
        keys = fields.getlist("idempotency_key") if hasattr(fields, "getlist") else []
        # (The upload handler stops reading at the file past the limit and says so.)
        too_many = getattr(request._request, "upload_too_many_files", False)
        if too_many or len(files) > settings.UPLOAD_BATCH_MAX_FILES:
            _audit_rejection(request, patient, "too_many_files")
            raise ServiceError(
                "too_many_files",
                f"At most {settings.UPLOAD_BATCH_MAX_FILES} files per request; send the rest in another.",
                400,
            )
        if not files:
            raise ServiceError("no_file", "Send at least one file (the form field `file`, repeated).", 400)
        if keys and len(keys) != len(files):
            raise ServiceError(
                "idempotency_keys_mismatch",
                f"Send one idempotency_key per file, in the files' order ({len(files)} files, {len(keys)} keys).",
                400,
            )
        keys = [idempotency_key_validate(key) for key in keys]
        if len(set(keys)) != len(keys):  # two files under one key: the second would be answered with the first
            raise ServiceError("idempotency_key_repeated", "Each file needs its own idempotency_key.", 400)
        data = ImageBatchUploadInput(
            data={
                "file": files,
                "modality": fields.get("modality"),
                **({"visit": fields.get("visit")} if fields.get("visit") else {}),
            }
        )
        data.is_valid(raise_exception=True)
        results, stored = [], 0
        for index, upload in enumerate(files):
            result = {"index": index, "filename": upload.name or ""}
            # The request's own throttle counted the first file; every further file is one more upload.
            wait = ratelimit.hit("upload", request.access, client_ip(request._request)) if index else None
            if wait is not None:
                result.update(
                    status=429,
                    error=error_body(
                        "rate_limited", "Too many uploads: send this file again later.", {"retry_after_seconds": wait}
                    )["error"],
                )
                results.append(result)
                continue
            try:
                image, created = _store_one(
                    request,
                    patient,
                    upload,
                    data.validated_data["modality"],
                    data.validated_data.get("visit"),
                    keys[index] if keys else None,
                )
            except IntakeError as exc:
                _audit_rejection(request, patient, exc.code)
                result.update(status=exc.status, error=error_body(exc.code, exc.message)["error"])
            except ServiceError as exc:  # a signed visit, a key used for another patient...
                _audit_rejection(request, patient, exc.code)
                result.update(status=exc.status, error=error_body(exc.code, exc.message, exc.details)["error"])
            except Exception:  # noqa: BLE001 - a fault of ours (storage, database): this file's answer, not the batch's
                logger.exception("batch upload: file %d not stored", index)
                message = "This file could not be stored (a fault on our side): send it again, with the same key."
                result.update(status=503, error=error_body("upload_failed", message)["error"])
            else:
                stored += 1
                result.update(status=201 if created else 200, image=ImageOutput(image).data)
            results.append(result)
        body = {"stored": stored, "rejected": len(files) - stored, "results": results}
        response = Response(
            body, status=status.HTTP_201_CREATED if stored == len(files) else status.HTTP_207_MULTI_STATUS
        )
        waits = [r["error"]["details"]["retry_after_seconds"] for r in results if r["status"] == 429]
        if waits:
            response["Retry-After"] = str(max(waits))
        return response
