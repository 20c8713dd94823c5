"""What this app holds about a patient, for the patient's export (GDPR Art. 15/20; registered with
``patients.exports`` by ``DicomConfig.ready``): per image, the DICOM attributes it was received with (the name, ids,
birth date, accession number and referring physician the imaging system sent, kept encrypted), and per visit, what
was sent back to the practice's PACS."""

from __future__ import annotations

from typing import Any

from patients.models import Patient

from .models import DicomInstance, DicomSend
from .services import instance_header, send_uids


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def patient_dicom_record(patient: Patient) -> dict[str, dict[str, dict[str, Any]]]:
    """``{"images": {image id: {"dicom": {...}}}, "visits": {visit id: {"dicom_sends": [...]}}}``."""
    images: dict[str, dict[str, Any]] = {}
    for instance in DicomInstance.objects.filter(patient=patient, image__isnull=False).select_related("patient"):
        images[str(instance.image_id)] = {
            "dicom": {
                "attributes": instance_header(instance),
                "calling_ae": instance.calling_ae,
                "received_at": _iso(instance.received_at),
                "assigned_at": _iso(instance.assigned_at),
            }
        }
    visits: dict[str, dict[str, Any]] = {}
    for send in DicomSend.objects.filter(visit__patient=patient).order_by("created_at"):
        visits.setdefault(str(send.visit_id), {"dicom_sends": []})["dicom_sends"].append(
            {
                "kind": send.kind,
                "preliminary": send.preliminary,
                "report": str(send.report_id) if send.report_id else None,
                "status": send.status,
                "uids": send_uids(send),
                "attempts": send.attempts,
                "created_at": _iso(send.created_at),
                "sent_at": _iso(send.sent_at),
            }
        )
    return {"images": images, "visits": visits}
