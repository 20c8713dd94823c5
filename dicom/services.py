"""Writes of the DICOM app: a clinic's node settings, receiving an instance (matching it to a patient or holding it
in the inbox), assigning from the inbox, and queueing, sending and resending results. Every function runs in the
caller's clinic scope (``association_check`` alone looks across clinics, by called AE title, before any clinic is
known) and writes its audit event in the same transaction, with ids only."""

from __future__ import annotations

import datetime as dt
import io
import ipaddress
import json
import logging
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pydicom
import pydicom.errors
from celery.exceptions import Retry
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.utils import timezone
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from analysis.models import Analysis, AnalysisStatus, Report
from analysis.uploads import image_upload
from clinics import audit, context
from clinics.models import AuditOutcome, User
from clinics.services import ServiceError
from clinics.tenancy import require_clinic_id
from core import crypto
from patients.intake import IntakeError, sanitize_upload
from patients.keys import clinic_key, patient_key
from patients.models import Image, Patient, Visit
from patients.selectors import patient_identity
from patients.services import patient_create, quota_check
from patients.storage import blob_delete, blob_get, blob_put

from .models import DicomInstance, DicomNode, DicomSend, InstanceStatus, SendKind, SendStatus
from .queue import SEND, task_send
from .sopclasses import ACCEPTED_SOP_CLASSES, modality_of

logger = logging.getLogger(__name__)

AE_TITLE_RE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # printable ASCII without backslash
# C-STORE statuses (PS3.4 B.2.3, PS3.7 C): success, refusals and failures the receiver answers with.
STATUS_SUCCESS = 0x0000
STATUS_SOP_CLASS_NOT_SUPPORTED = 0x0122
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_DATASET_MISMATCH = 0xA900
STATUS_CANNOT_UNDERSTAND = 0xC000
STATUS_PROCESSING_FAILURE = 0x0110
# Intake's refusal codes (patients.intake) as C-STORE statuses; anything else it cannot read is 0xC000.
INTAKE_STATUS = {
    "file_too_large": STATUS_OUT_OF_RESOURCES,
    "image_too_large": STATUS_OUT_OF_RESOURCES,
    "quota_exceeded": STATUS_OUT_OF_RESOURCES,
    "inbox_full": STATUS_OUT_OF_RESOURCES,
    "unsupported_dicom_compression": STATUS_DATASET_MISMATCH,
    "unsupported_color_mode": STATUS_DATASET_MISMATCH,
    "multiple_frames": STATUS_DATASET_MISMATCH,
    "dicom_without_image": STATUS_DATASET_MISMATCH,
    "unsupported_dicom_image": STATUS_DATASET_MISMATCH,
}
# Text that a viewer might run or render: refused in any text element of a received instance.
ACTIVE_TEXT_RE = re.compile(rb"<\s*(script|iframe|object|embed|svg|img)\b|javascript:|vbscript:|on\w+\s*=", re.I)
TEXT_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
)
# The attributes kept (encrypted) from a received header: what a report in the same study must repeat.
HEADER_KEYWORDS = (
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
    "Modality",
    "Rows",
    "Columns",
)


class DicomRefusal(Exception):
    """An instance the receiver refuses: ``status`` is the C-STORE status to answer, ``code`` says why (audited)."""

    def __init__(self, status: int, code: str) -> None:
        super().__init__(code)
        self.status, self.code = status, code


# --- node settings ---------------------------------------------------------------------------------------------


def _ae_title(value: str, what: str) -> str:
    value = (value or "").strip()
    if not AE_TITLE_RE.match(value):
        raise ServiceError("invalid_ae_title", f"{what} must be 1 to 16 printable ASCII characters without '\\'.")
    return value


def _ip_list(values: list[str]) -> list[str]:
    out = []
    for value in values:
        try:
            out.append(str(ipaddress.ip_network(value.strip(), strict=False)))
        except ValueError as exc:
            raise ServiceError("invalid_ip", f"{value!r} is not an IP address or network.") from exc
    return out


def dicom_node_configure(
    *,
    called_ae: str,
    calling_aes: list[str],
    calling_ips: list[str] | None = None,
    dest_ae: str = "",
    dest_host: str = "",
    dest_port: int | None = None,
    dest_tls: bool = False,
    send_preliminary: bool = False,
    send_secondary_capture: bool = True,
) -> DicomNode:
    """Create or replace the clinic's DICOM settings (clinic admins)."""
    called = _ae_title(called_ae, "The called AE title")
    callers = sorted({_ae_title(ae, "Each calling AE title") for ae in calling_aes})
    if not callers:
        raise ServiceError("calling_ae_required", "Allow at least one calling AE title.")
    if dest_ae or dest_host or dest_port:
        dest_ae = _ae_title(dest_ae, "The destination AE title")
        if not dest_host.strip() or not dest_port or not 0 < int(dest_port) < 65536:
            raise ServiceError("invalid_destination", "A destination needs an AE title, a host and a port.")
    try:
        with transaction.atomic():
            node = DicomNode.objects.filter().first() or DicomNode()
            node.called_ae, node.calling_aes, node.calling_ips = called, callers, _ip_list(calling_ips or [])
            node.dest_ae, node.dest_host = dest_ae, dest_host.strip()
            node.dest_port = int(dest_port) if dest_port else None
            node.dest_tls, node.send_preliminary = dest_tls, send_preliminary
            node.send_secondary_capture, node.updated_at = send_secondary_capture, timezone.now()
            node.save()
            audit.record(
                action="dicom.node.update",
                clinic_id=require_clinic_id(),
                object_type="dicom_node",
                object_id=node.pk,
                details={"called_ae": called, "calling_aes": callers, "destination": node.has_destination},
            )
    except IntegrityError as exc:
        raise ServiceError("called_ae_taken", "Another clinic already uses this called AE title.", 409) from exc
    return node


def node_destination_string(node: DicomNode) -> str:
    return f"{node.dest_ae}@{node.dest_host}:{node.dest_port}" if node.has_destination else ""


# --- associations ----------------------------------------------------------------------------------------------


def association_check(*, called_ae: str, calling_ae: str, address: str) -> uuid.UUID | None:
    """The clinic an association is for, or None when it must be rejected: an unknown called AE title, or a caller
    the clinic did not allow (AE title, and address when the clinic lists addresses). Deliberately cross-clinic
    (``unscoped``: no clinic is known before the called AE title names one). Rejections are audited in the
    clinic's chain (a known called AE title) or the global one, with the titles and address but no patient data."""
    called, calling = called_ae.strip(), calling_ae.strip()
    node = DicomNode.unscoped.filter(called_ae=called).first()
    reason = ""
    if node is None:
        reason = "unknown_called_ae"
    elif calling not in node.calling_aes:
        reason = "calling_ae_not_allowed"
    elif node.calling_ips and not _address_allowed(address, node.calling_ips):
        reason = "address_not_allowed"
    clinic_id = node.clinic_id if node is not None else None
    actor = context.Actor(system="dicom_scp")
    details = {"called_ae": called[:16], "calling_ae": calling[:16], "address": address}
    if reason:
        details["reason"] = reason
        audit.record(
            action="dicom.association",
            clinic_id=clinic_id,
            object_type="dicom_node",
            object_id=node.pk if node else "",
            outcome=AuditOutcome.DENIED,
            details=details,
            actor=actor,
        )
        return None
    return clinic_id


def _address_allowed(address: str, networks: list[str]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(net, strict=False) for net in networks)


# --- receiving -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    instance: DicomInstance
    duplicate: bool = False


def _header(data: bytes) -> Dataset:
    try:
        return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=False)
    except (pydicom.errors.InvalidDicomError, ValueError, EOFError, OSError, KeyError, TypeError) as exc:
        raise DicomRefusal(STATUS_CANNOT_UNDERSTAND, "unreadable_header") from exc


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword, "")
    return str(value).strip() if value is not None else ""


def header_dict(ds: Dataset) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for keyword in HEADER_KEYWORDS:
        if keyword in ds:
            value = ds.get(keyword)
            out[keyword] = int(value) if keyword in ("Rows", "Columns") else str(value or "").strip()
    return out


def _active_content(ds: Dataset) -> bool:
    """Whether any text element (nested sequences included) carries markup or script a viewer could run."""
    for element in ds.iterall():
        if element.VR in TEXT_VRS and element.value is not None:
            raw = element.value if isinstance(element.value, bytes) else str(element.value).encode("utf-8", "replace")
            if ACTIVE_TEXT_RE.search(raw):
                return True
    return False


def instance_too_large(size: int, *, calling_ae: str) -> DicomRefusal:
    """The refusal (audited) of a received instance larger than ``IMAGE_MAX_BYTES``, before it is read."""
    logger.info("C-STORE of %d bytes refused: over IMAGE_MAX_BYTES", size)
    return _refuse("file_too_large", STATUS_OUT_OF_RESOURCES, calling_ae=calling_ae)


def _refuse(code: str, status: int, *, calling_ae: str, sop_class: str = "") -> DicomRefusal:
    audit.record(
        action="dicom.instance.refused",
        clinic_id=require_clinic_id(),
        object_type="dicom_instance",
        outcome=AuditOutcome.DENIED,
        details={"reason": code, "status": f"0x{status:04X}", "calling_ae": calling_ae, "sop_class": sop_class},
        actor=context.Actor(system="dicom_scp"),
    )
    return DicomRefusal(status, code)


def _header_aad(instance_id: object) -> bytes:
    return f"dicom-instance:{instance_id}:header".encode()


def _held_aad(instance_id: object) -> bytes:
    return f"dicom-instance:{instance_id}:held".encode()


def _send_aad(send_id: object) -> bytes:
    return f"dicom-send:{send_id}:uids".encode()


def instance_header(instance: DicomInstance) -> dict[str, Any]:
    key = patient_key(instance.patient) if instance.patient_id else clinic_key()
    return json.loads(crypto.decrypt(key, bytes(instance.header), _header_aad(instance.pk)))


def patient_match(header: dict[str, Any]) -> Patient | None:
    """The clinic's patient whose practice id is the DICOM Patient ID. Only an instance without a Patient ID is
    matched by family and given names and birth date (the one patient with all three): one whose Patient ID names
    nobody goes to the inbox, where the namesake is suggested (``same_name_and_birth``), since filing it under a
    patient with another practice id would be a guess, and a wrong one files a scan in the wrong record."""
    patient_id = (header.get("PatientID") or "").strip()
    if patient_id:
        return Patient.objects.filter(external_id_index=crypto.blind_index(clinic_key(), patient_id)).first()
    return same_name_and_birth(header)


def same_name_and_birth(header: dict[str, Any]) -> Patient | None:
    """The one patient of the clinic with the header's family and given names and birth date, else None."""
    family, _, rest = (header.get("PatientName") or "").partition("^")
    given = rest.split("^")[0].strip()
    birth = (header.get("PatientBirthDate") or "").strip()
    if not (family.strip() and given and re.fullmatch(r"\d{8}", birth)):
        return None
    try:
        birth_date = dt.datetime.strptime(birth, "%Y%m%d").date()
    except ValueError:
        return None
    key = clinic_key()
    candidates = Patient.objects.prefetch_related("data_keys").filter(
        family_name_index=crypto.blind_index(key, family.strip()), given_name_index=crypto.blind_index(key, given)
    )
    same = [p for p in candidates if patient_identity(p).date_of_birth == birth_date]
    return same[0] if len(same) == 1 else None


def instance_receive(*, data: bytes, calling_ae: str) -> Received:
    """Receive one instance (a Part 10 file as the receiver rebuilt it) for the clinic in scope.

    The header is checked first (SOP class, no script in any text element), then the whole file goes through the
    upload intake (``patients.intake``: transfer syntax, declared size before decoding, complete pixel data, pixels
    rebuilt without any tag). A matched instance is stored and analysed like an upload (``image_upload``); an
    unmatched one, once it has passed the same checks, is held encrypted for the inbox. A refusal raises
    ``DicomRefusal`` (the C-STORE status), is audited, and stores nothing."""
    ds = _header(data)
    sop_class = _text(ds, "SOPClassUID")
    if sop_class not in ACCEPTED_SOP_CLASSES:
        raise _refuse("sop_class_not_supported", STATUS_SOP_CLASS_NOT_SUPPORTED, calling_ae=calling_ae)
    header = header_dict(ds)
    if not all(header.get(k) for k in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")):
        raise _refuse("missing_uid", STATUS_DATASET_MISMATCH, calling_ae=calling_ae, sop_class=sop_class)
    if _active_content(ds):
        raise _refuse("active_content", STATUS_DATASET_MISMATCH, calling_ae=calling_ae, sop_class=sop_class)
    modality = modality_of(sop_class, _text(ds, "PhotometricInterpretation"))
    sop_index = crypto.blind_index(clinic_key(), header["SOPInstanceUID"])
    existing = DicomInstance.objects.filter(sop_index=sop_index).first()
    if existing is not None:
        return Received(existing, duplicate=True)
    patient = patient_match(header)
    try:
        with transaction.atomic():
            if patient is not None:
                instance = _store_matched(data, header, modality, patient, calling_ae, sop_index)
            else:
                instance = _hold_unmatched(data, header, modality, calling_ae, sop_index)
    except IntakeError as exc:
        status = INTAKE_STATUS.get(exc.code, STATUS_CANNOT_UNDERSTAND)
        raise _refuse(exc.code, status, calling_ae=calling_ae, sop_class=sop_class) from exc
    except IntegrityError:  # the same instance arrived concurrently on another association: stored once
        return Received(DicomInstance.objects.get(sop_index=sop_index), duplicate=True)
    return Received(instance)


def _store_matched(
    data: bytes, header: dict[str, Any], modality: str, patient: Patient, calling_ae: str, sop_index: str
) -> DicomInstance:
    image = image_upload(
        patient=patient,
        stream=io.BytesIO(data),
        filename=f"{modality}.dcm",
        size=len(data),
        modality=modality,
        dicom_photo=modality == "photo",
    )
    instance = DicomInstance(
        id=uuid.uuid4(),
        status=InstanceStatus.MATCHED,
        patient=patient,
        image=image,
        modality=modality,
        sop_index=sop_index,
        calling_ae=calling_ae,
    )
    instance.header = crypto.encrypt(patient_key(patient), json.dumps(header).encode(), _header_aad(instance.id))
    instance.save(force_insert=True)
    audit.record(
        action="dicom.instance.receive",
        clinic_id=require_clinic_id(),
        object_type="dicom_instance",
        object_id=instance.pk,
        details={"image_id": str(image.pk), "patient_id": str(patient.pk), "matched": True, "calling_ae": calling_ae},
    )
    return instance


def _hold_unmatched(
    data: bytes, header: dict[str, Any], modality: str, calling_ae: str, sop_index: str
) -> DicomInstance:
    # The same checks as a stored upload, so a hostile file never waits in the inbox either.
    sanitize_upload(
        io.BytesIO(data),
        modality=modality,
        size=len(data),
        max_bytes=settings.IMAGE_MAX_BYTES,
        max_pixels=settings.IMAGE_MAX_PIXELS,
        dicom_photo=modality == "photo",
    )
    if DicomInstance.objects.filter(status=InstanceStatus.UNMATCHED).count() >= settings.DICOM_INBOX_MAX_ENTRIES:
        raise IntakeError(
            "inbox_full", "The clinic's DICOM inbox is full: assign or discard the images waiting in it.", 413
        )
    key = clinic_key()
    instance = DicomInstance(
        id=uuid.uuid4(), status=InstanceStatus.UNMATCHED, modality=modality, sop_index=sop_index, calling_ae=calling_ae
    )
    instance.header = crypto.encrypt(key, json.dumps(header).encode(), _header_aad(instance.id))
    held = crypto.encrypt(key, data, _held_aad(instance.id))
    quota_check(len(held), lock=True)  # a held file counts in the clinic's storage quota, as an image does
    instance.held_bytes = len(held)
    instance.held_key = blob_put(held)
    try:
        instance.save(force_insert=True)
        audit.record(
            action="dicom.instance.receive",
            clinic_id=require_clinic_id(),
            object_type="dicom_instance",
            object_id=instance.pk,
            details={"matched": False, "calling_ae": calling_ae},
        )
    except BaseException:
        blob_delete(instance.held_key)
        raise
    return instance


def held_bytes() -> int:
    """The bytes the clinic in scope's inbox holds (for ``patients`` quota check)."""
    return DicomInstance.objects.exclude(held_key="").aggregate(total=Sum("held_bytes"))["total"] or 0


def inbox_erase_for(patient: Patient) -> list[str]:
    """For ``patients.patient_erase``: delete the clinic's inbox instances that are this patient's (their Patient ID
    is the patient's practice id, or, without one, their names and birth date are the patient's) and return their
    held files' names (removed once the erasure commits). They are encrypted with the clinic's key, not the
    patient's, so destroying the patient's key would not make them unreadable."""
    identity = patient_identity(patient)
    names: list[str] = []
    for instance in DicomInstance.objects.filter(status=InstanceStatus.UNMATCHED).exclude(held_key=""):
        header = instance_header(instance)
        patient_id = (header.get("PatientID") or "").strip()
        if patient_id:
            theirs = patient_id == identity.external_id
        else:
            namesake = same_name_and_birth(header)
            theirs = namesake is not None and namesake.pk == patient.pk
        if theirs:
            names.append(instance.held_key)
            instance.delete()
    return names


def held_blobs() -> Iterator[str]:
    """The blobs of every clinic's inbox instances waiting for a patient (for ``patients.orphans``; unscoped)."""
    yield from DicomInstance.unscoped.exclude(held_key="").values_list("held_key", flat=True).iterator()


def inbox_assign(
    *, instance: DicomInstance, actor: User, patient: Patient | None = None, create: dict[str, Any] | None = None
) -> DicomInstance:
    """Assign an inbox instance to a patient of the clinic (or to a new one made from ``create``), then store and
    analyse it like a matched instance. The held file is removed once the assignment commits."""
    if instance.status != InstanceStatus.UNMATCHED:
        raise ServiceError("not_in_inbox", "This instance is no longer waiting in the inbox.", 409)
    if (patient is None) == (create is None):
        raise ServiceError("patient_required", "Choose a patient or give the new patient's details.")
    key = clinic_key()
    header = json.loads(crypto.decrypt(key, bytes(instance.header), _header_aad(instance.pk)))
    data = crypto.decrypt(key, blob_get(instance.held_key), _held_aad(instance.pk))
    held_key = instance.held_key
    with transaction.atomic():
        locked = DicomInstance.objects.select_for_update().get(pk=instance.pk)
        if locked.status != InstanceStatus.UNMATCHED:
            raise ServiceError("not_in_inbox", "This instance is no longer waiting in the inbox.", 409)
        # the held file's bytes become the image's: released from the quota first, so they count once
        locked.held_key, locked.held_bytes = "", 0
        locked.save(update_fields=["held_key", "held_bytes"])
        if patient is None:
            patient = patient_create(**create)  # type: ignore[arg-type]
        image = image_upload(
            patient=patient,
            stream=io.BytesIO(data),
            filename=f"{instance.modality}.dcm",
            size=len(data),
            modality=instance.modality,
            dicom_photo=instance.modality == "photo",
        )
        locked.status, locked.patient, locked.image = InstanceStatus.ASSIGNED, patient, image
        locked.header = crypto.encrypt(patient_key(patient), json.dumps(header).encode(), _header_aad(locked.pk))
        locked.held_key, locked.assigned_by, locked.assigned_at = "", actor, timezone.now()
        locked.save()
        audit.record(
            action="dicom.inbox.assign",
            clinic_id=require_clinic_id(),
            object_type="dicom_instance",
            object_id=locked.pk,
            details={"patient_id": str(patient.pk), "image_id": str(image.pk), "created_patient": create is not None},
        )
        transaction.on_commit(lambda: blob_delete(held_key))
    return locked


def inbox_preview(instance: DicomInstance) -> dict[str, str]:
    """What staff see of an inbox instance to find its patient (decrypted for the page, never logged)."""
    header = instance_header(instance)
    namesake = same_name_and_birth(header)
    return {
        # a patient with the same names and birth date (its practice id differs, or the image had none): a hint
        "suggested": patient_identity(namesake).external_id if namesake is not None else "",
        "patient_id": header.get("PatientID", ""),
        "patient_name": header.get("PatientName", "").replace("^", " ").strip(),
        "birth_date": header.get("PatientBirthDate", ""),
        "study_date": header.get("StudyDate", ""),
        "modality": header.get("Modality", ""),
    }


# --- sending results back --------------------------------------------------------------------------------------


def report_signed(report: Report) -> None:
    """Called by ``analysis.reports.report_sign`` in the signing transaction: queue the structured report (and, as
    the clinic chose, the secondary capture) of this version for the clinic's PACS. Nothing when the clinic has no
    destination or the visit holds no image received over DICOM (nothing to refer back to)."""
    node = DicomNode.objects.first()
    if node is None or not node.has_destination:
        return
    if not DicomInstance.objects.filter(image__visit_id=report.visit_id).exists():
        return
    kinds = [SendKind.SR] + ([SendKind.SC] if node.send_secondary_capture else [])
    for kind in kinds:
        send_queue(visit_id=report.visit_id, report=report, kind=kind)


def analysis_finished(analysis: Analysis) -> None:
    """Called by ``analysis.services`` in the transaction that records a finished analysis: when the clinic wants a
    preliminary report, queue it once the visit's last image received over DICOM is analysed (once per visit; not
    after a signature, which sends the final report)."""
    visit_id = Image.objects.filter(pk=analysis.image_id).values_list("visit_id", flat=True).first()
    if visit_id is not None:
        preliminary_check(visit_id, finished=analysis.pk)


def preliminary_check(visit_id: object, *, finished: object = None) -> None:
    """Queue the visit's preliminary SR if the clinic wants one, the visit holds images received over DICOM, none of
    its analyses is still waiting or running (``finished``: the one being recorded now) and it is not signed.
    Called when an analysis finishes and when an association that sent images to the visit ends."""
    node = DicomNode.objects.first()
    if node is None or not node.send_preliminary or not node.has_destination:
        return
    if not DicomInstance.objects.filter(image__visit_id=visit_id).exists():
        return
    with transaction.atomic():
        # One check of a visit at a time (its row held to the end of the caller's transaction): two analyses
        # finishing together each saw the other still running and neither queued the report; now the second waits,
        # then sees the first done.
        list(Visit.objects.select_for_update(no_key=True).filter(pk=visit_id).values_list("pk", flat=True))
        busy = Analysis.objects.filter(
            image__visit_id=visit_id, status__in=[AnalysisStatus.QUEUED, AnalysisStatus.RUNNING]
        ).exclude(pk=finished)
        if busy.exists() or Report.objects.filter(visit_id=visit_id).exists():
            return
        if DicomSend.objects.filter(visit_id=visit_id, preliminary=True, kind=SendKind.SR).exists():
            return
        send_queue(visit_id=visit_id, report=None, kind=SendKind.SR, preliminary=True)


def send_queue(*, visit_id: object, report: Report | None, kind: str, preliminary: bool = False) -> DicomSend:
    """One send (idempotent per report version and kind, and per visit for a preliminary report): its object's UIDs
    fixed now, the message sent on commit."""
    existing = DicomSend.objects.filter(report=report, kind=kind).first() if report is not None else None
    if preliminary:
        existing = DicomSend.objects.filter(visit_id=visit_id, preliminary=True, kind=kind).first()
    if existing is not None:
        return existing
    send = DicomSend(id=uuid.uuid4(), visit_id=visit_id, report=report, kind=kind, preliminary=preliminary)
    uids = {"series": generate_uid(), "sop": generate_uid()}
    send.uids = crypto.encrypt(clinic_key(), json.dumps(uids).encode(), _send_aad(send.id))
    try:
        with transaction.atomic():  # a savepoint: a concurrent twin wins and is returned
            send.save(force_insert=True)
    except IntegrityError:
        query = DicomSend.objects.filter(kind=kind)
        return (query.filter(visit_id=visit_id, preliminary=True) if preliminary else query.filter(report=report)).get()
    audit.record(
        action="dicom.send.queue",
        clinic_id=require_clinic_id(),
        object_type="dicom_send",
        object_id=send.pk,
        details={"kind": kind, "report_id": str(report.pk) if report else None, "preliminary": preliminary},
    )
    clinic_id = str(require_clinic_id())
    transaction.on_commit(lambda: _enqueue(str(send.pk), clinic_id))
    return send


def _enqueue(send_id: str, clinic_id: str, *extra: str) -> None:
    """Send the task after commit. Without a broker (tasks run in-process) the attempts run now and a retry ends
    as ``Retry``: every attempt is already logged on the row. A broker that refuses the message leaves the send
    ``pending``, visible to the clinic admin, who can resend it."""
    try:
        task_send(SEND, send_id, clinic_id, *extra)
    except Retry:
        pass
    except Exception:  # noqa: BLE001 - the signature is committed; the send stays pending and visible
        logger.exception("could not queue DICOM send %s", send_id)


def send_uids(send: DicomSend) -> dict[str, str]:
    return json.loads(crypto.decrypt(clinic_key(), bytes(send.uids), _send_aad(send.pk)))


def send_record_attempt(*, send: DicomSend, ok: bool, detail: str, final: bool) -> DicomSend:
    """Log one attempt; the row becomes ``sent``, stays ``pending`` (another attempt follows) or ``failed`` (the
    last one failed: the clinic admin sees it and may resend). Audited when it ends."""
    entry = {"at": timezone.now().isoformat(), "ok": ok, "detail": detail[:120]}
    with transaction.atomic():
        locked = DicomSend.objects.select_for_update().get(pk=send.pk)
        locked.attempts += 1
        locked.attempt_log = [*locked.attempt_log, entry][-20:]
        if ok:
            locked.status, locked.sent_at = SendStatus.SENT, timezone.now()
        elif final:
            locked.status = SendStatus.FAILED
        locked.save(update_fields=["attempts", "attempt_log", "status", "sent_at"])
        if ok or final:
            audit.record(
                action="dicom.send",
                clinic_id=require_clinic_id(),
                object_type="dicom_send",
                object_id=locked.pk,
                outcome=AuditOutcome.SUCCESS if ok else AuditOutcome.FAILURE,
                details={"kind": locked.kind, "attempts": locked.attempts, "detail": detail[:120]},
            )
    return locked


def send_resend(*, send: DicomSend) -> DicomSend:
    """A clinic admin's "resend": the same object (same UIDs, so the PACS stores it once) is sent again, with a
    fresh series of attempts, whatever its state (failed, pending behind a lost message, or sent and lost there)."""
    with transaction.atomic():
        locked = DicomSend.objects.select_for_update().get(pk=send.pk)
        locked.status = SendStatus.PENDING
        locked.save(update_fields=["status"])
        audit.record(
            action="dicom.send.resend",
            clinic_id=require_clinic_id(),
            object_type="dicom_send",
            object_id=locked.pk,
            details={"kind": locked.kind, "previous_attempts": locked.attempts},
        )
        clinic_id = str(require_clinic_id())
        transaction.on_commit(lambda: _enqueue(str(locked.pk), clinic_id, "resend"))
    return locked


def visit_dicom_images(visit_id: object) -> list[tuple[Image, DicomInstance]]:
    rows = (
        DicomInstance.objects.filter(image__visit_id=visit_id)
        .select_related("image", "patient")
        .prefetch_related("patient__data_keys")
        .order_by("received_at")
    )
    return [(row.image, row) for row in rows if row.image is not None]
