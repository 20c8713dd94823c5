"""Building one queued send's object and storing it on the clinic's PACS with a C-STORE (pynetdicom SCU)."""

from __future__ import annotations

import io
import ssl
from typing import Any

from django.conf import settings
from PIL import Image as PILImage
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE

from analysis.reports import image_snapshot, report_content
from analysis.selectors import unfamiliar_hidden, visit_findings
from patients.models import Visit
from patients.services import image_read

from .models import DicomNode, DicomSend, SendKind
from .results import build_sc, build_sr
from .services import instance_header, send_uids, visit_dicom_images


class SendFailed(Exception):
    """An attempt that did not store the object (transient: retried). ``str()`` is a short category, no data."""


def send_object(send: DicomSend) -> list[Dataset]:
    """The dataset(s) of one send: the SR, or one secondary capture per DICOM source image of the visit."""
    report = send.report
    snapshot = report_content(report) if report is not None else preliminary_snapshot(send.visit_id)
    pairs = visit_dicom_images(send.visit_id)
    headers = {str(image.pk): instance_header(instance) for image, instance in pairs}
    uids = send_uids(send)
    if send.kind == SendKind.SR:
        # An amended version replaces the SR of the version it amends; a first signed version replaces the
        # preliminary SR when one was sent.
        earlier = None
        if report is not None and report.amends_id:
            earlier = DicomSend.objects.filter(report_id=report.amends_id, kind=SendKind.SR).first()
        elif report is not None:
            earlier = DicomSend.objects.filter(visit_id=send.visit_id, preliminary=True, kind=SendKind.SR).first()
        previous = send_uids(earlier) if earlier is not None else None
        return [
            build_sr(snapshot=snapshot, headers=headers, uids=uids, previous=previous, preliminary=send.preliminary)
        ]
    findings = {item["id"]: item["findings"] for item in snapshot["images"]}
    out = []
    for number, (image, _instance) in enumerate(pairs, start=1):
        pixels = PILImage.open(io.BytesIO(image_read(image=image, variant="original")))
        pixels.load()
        out.append(
            build_sc(
                pixels=pixels,
                findings=findings.get(str(image.pk), []),
                header=headers[str(image.pk)],
                uids=uids,
                number=number,
            )
        )
    return out


def preliminary_snapshot(visit_id: object) -> dict[str, Any]:
    """What a preliminary SR says: the visit's findings as they stand (suggestions not yet reviewed are "pending"),
    and which images the AI did not assess and why, as a signed report's snapshot says it."""
    visit = Visit.objects.select_related("clinic").get(pk=visit_id)
    hide = unfamiliar_hidden()
    return {
        "version": 0,
        "clinic": {"id": str(visit.clinic_id), "name": visit.clinic.name},
        "images": [
            image_snapshot(image, findings, hide_unfamiliar=hide)
            for image, findings in visit_findings(visit, hide_unfamiliar=hide).items()
        ],
    }


def c_store(node: DicomNode, datasets: list[Dataset]) -> None:
    """Store every dataset on the node's destination in one association; raises ``SendFailed``."""
    ae = AE(ae_title=node.called_ae)
    for sop_class in {ds.SOPClassUID for ds in datasets}:
        ae.add_requested_context(sop_class, ExplicitVRLittleEndian)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = settings.DICOM_SEND_TIMEOUT_SECONDS
    tls = None
    if node.dest_tls:  # the PACS's certificate is checked: the system's CAs, or DICOM_SEND_TLS_CA_FILE
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=settings.DICOM_SEND_TLS_CA_FILE or None)
        tls = (context, node.dest_host)
    assoc = ae.associate(node.dest_host, int(node.dest_port), ae_title=node.dest_ae, tls_args=tls)
    if not assoc.is_established:
        raise SendFailed("association_rejected" if assoc.is_rejected else "unreachable")
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            code = int(getattr(status, "Status", -1)) if status else -1
            if code not in (0x0000, 0xB000, 0xB007, 0xB006):
                raise SendFailed(f"status_0x{code & 0xFFFF:04X}" if code >= 0 else "no_response")
    finally:
        if assoc.is_established:
            assoc.release()
