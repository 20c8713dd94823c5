"""The upload use case: store a scan and have it analysed.

``patients`` owns intake, encryption and storage (``image_ingest``) and knows nothing of models; this app owns
the models and the jobs. An upload needs both, so it is orchestrated here, by the layer above the one that
stores it: the upload page, the REST API and the demo seeding all come through ``image_upload``.
"""

from __future__ import annotations

from typing import BinaryIO

from django.db import transaction

from patients.models import Image, Patient
from patients.services import image_ingest

from .services import analysis_request, model_input_maker


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
    a rejection (``patients.intake.IntakeError``, raised to the caller) stores and queues nothing."""
    with transaction.atomic():
        image = image_ingest(
            patient=patient,
            stream=stream,
            filename=filename,
            size=size,
            modality=modality,
            visit_id=visit_id,
            model_input=model_input_maker(modality),
        )
        analysis_request(image=image)
    return image
