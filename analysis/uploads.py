"""The upload use case: store a scan and have it analysed.

``patients`` owns intake, encryption and storage (``image_ingest``) and knows nothing of models; this app owns
the models and the jobs. An upload needs both, so it is orchestrated here, by the layer above the one that
stores it: the upload page, the REST API and the demo seeding all come through ``image_upload``.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import BinaryIO

from django.db import IntegrityError, transaction
from django.utils import timezone

from clinics.services import ServiceError
from patients.intake import SanitizedImage
from patients.models import Image, Patient
from patients.services import image_blobs_remove, image_ingest

from .ml.gate import GateResult
from .models import UploadIdempotencyKey
from .services import analysis_request, image_gate, model_input_maker

# A client-chosen key: up to 64 characters of [A-Za-z0-9_-] (a UUID fits).
IDEMPOTENCY_KEY_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# How long a key is remembered: a retry after that stores the file again.
IDEMPOTENCY_KEY_TTL = dt.timedelta(hours=24)


def image_upload(
    *,
    patient: Patient,
    stream: BinaryIO,
    filename: str | None,
    size: int | None,
    modality: str,
    visit_id: object = None,
    dicom_photo: bool = False,
) -> Image:
    """Sanitise, encrypt and store one upload with the active model's input copy (``image_ingest``), and
    request its analysis. One transaction: the analysis message leaves (ids only) once both have committed, and
    a rejection (``patients.intake.IntakeError``, raised to the caller) stores and queues nothing.

    The image gate's model-free checks run on the decoded pixels while they are in memory: an image the AI
    cannot judge (blurred, too dark, a radiograph sent as a photo...) is stored all the same, and its analysis
    is recorded at once as ``not_assessable`` with the reason instead of being queued."""
    checked: list[GateResult | None] = []

    def inspect(sanitized: SanitizedImage) -> None:
        if sanitized.pixels is not None:
            checked.append(image_gate(sanitized.pixels, modality, colour_hint=sanitized.colour_hint))

    image: Image | None = None
    try:
        with transaction.atomic():
            image = image_ingest(
                patient=patient,
                stream=stream,
                filename=filename,
                size=size,
                modality=modality,
                visit_id=visit_id,
                model_input=model_input_maker(modality),
                inspect=inspect,
                dicom_photo=dicom_photo,
            )
            analysis_request(image=image, gate_result=checked[0] if checked else None)
    except BaseException:
        if image is not None:  # its row rolled back with the analysis request: the blobs it wrote name nothing
            image_blobs_remove(image)
        raise
    return image


def idempotency_key_validate(raw: str) -> str:
    """The ``Idempotency-Key`` header's value, or ``ServiceError`` ``invalid_idempotency_key`` (400)."""
    if not IDEMPOTENCY_KEY_RE.match(raw):
        raise ServiceError(
            "invalid_idempotency_key",
            "Idempotency-Key must be 1 to 64 characters of A-Z, a-z, 0-9, '_' and '-' (a UUID fits).",
            400,
        )
    return raw


def _idempotency_claim(*, patient: Patient, key: str) -> UploadIdempotencyKey | Image:
    """Claim the key for this upload (a new row, in the caller's transaction), or the image a previous request
    with the key stored. A concurrent request with the same key waits at the insert until this transaction ends
    (the unique constraint), then finds the image it stored (or the key free again, if it stored nothing)."""
    now = timezone.now()
    UploadIdempotencyKey.objects.filter(created_at__lt=now - IDEMPOTENCY_KEY_TTL).delete()  # expired: free again
    try:
        with transaction.atomic():  # a savepoint: the failed insert must not break the caller's transaction
            return UploadIdempotencyKey.objects.create(key=key, patient=patient, created_at=now)
    except IntegrityError:
        pass
    existing = UploadIdempotencyKey.objects.select_related("image").get(key=key)
    if existing.patient_id != patient.pk:
        raise ServiceError(
            "idempotency_key_reused",
            "This Idempotency-Key was already used for another patient's upload: choose a new key per file.",
            409,
        )
    if existing.image is None:  # not reachable while the image is set in the claiming transaction; stay safe
        raise ServiceError("idempotency_key_in_use", "An upload with this Idempotency-Key is in progress.", 409)
    return existing.image


def image_upload_once(
    *,
    idempotency_key: str,
    patient: Patient,
    stream: BinaryIO,
    filename: str | None,
    size: int | None,
    modality: str,
    visit_id: object = None,
) -> tuple[Image, bool]:
    """``image_upload`` at most once per key (``Idempotency-Key``) and clinic: returns the image and whether this
    call stored it (False: a repeated request, answered with the image the first one stored; nothing is stored or
    queued again). A key used before for another patient raises ``ServiceError`` (409); a rejected upload frees
    its key (the whole transaction rolls back), so the corrected retry may use it again."""
    key = idempotency_key_validate(idempotency_key)
    with transaction.atomic():
        claimed = _idempotency_claim(patient=patient, key=key)
        if isinstance(claimed, Image):
            return claimed, False
        image = image_upload(
            patient=patient, stream=stream, filename=filename, size=size, modality=modality, visit_id=visit_id
        )
        UploadIdempotencyKey.objects.filter(pk=claimed.pk).update(image=image)
    return image, True
