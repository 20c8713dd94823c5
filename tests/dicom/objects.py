"""A clinic's DICOM objects for the generated access tests: an inbox instance received as the receiver receives one
(a DICOM file for a patient nobody knows), and a queued send."""

from __future__ import annotations

import io
from typing import Any

from pydicom.uid import generate_uid

from clinics.tenancy import clinic_scope
from dicom.models import DicomInstance, DicomSend
from dicom.services import instance_receive, send_queue

from .factories import xray_dataset


def dicom_object(world: Any, kind: str) -> Any:
    """``kind``: "dicom_instance" (an inbox instance) or "dicom_send"; made on first use."""
    with clinic_scope(world.clinic.id):
        if kind == "dicom_send":
            return DicomSend.objects.first() or send_queue(visit_id=world.image.visit_id, report=None, kind="sr")
        existing = DicomInstance.objects.first()
        if existing is not None:
            return existing
        buffer = io.BytesIO()
        xray_dataset(patient_id="nobody", study_uid=generate_uid(), rows=32, cols=32).save_as(
            buffer, enforce_file_format=True
        )
        return instance_receive(data=buffer.getvalue(), calling_ae="MATRIX").instance
