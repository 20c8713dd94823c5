"""The upload use case: store a scan and have it analysed.

``patients`` owns intake, encryption and storage (``image_ingest``) and knows nothing of models; this app owns
the models and the jobs. An upload needs both, so it is orchestrated here, by the layer above the one that
stores it: the upload page, the REST API and the demo seeding all come through ``image_upload``.
"""

from __future__ import annotations

from typing import BinaryIO

from django.db import transaction

from patients.intake import SanitizedImage
from patients.models import Image, Patient
from patients.services import image_ingest

from .ml.gate import GateResult
from .services import analysis_request, image_gate, model_input_maker


def image_upload(
    *,
    patient: Patient,
    stream: BinaryIO,
    filename: str | None,
    size: int | None,
    modality: str,
    visit_id: object = None,
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
        )
        analysis_request(image=image, gate_result=checked[0] if checked else None)
    return image
