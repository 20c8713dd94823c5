"""Signing visit reports, amendments, and the report snapshot (the one source for the HTML report,
the PDF, the FHIR export and the API)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

from django.db import transaction
from django.utils import timezone

from clinics import audit
from clinics.models import User
from clinics.services import ServiceError
from clinics.tenancy import require_clinic_id
from core import crypto
from patients.keys import patient_key
from patients.models import Image, Visit
from patients.selectors import patient_identity

from .models import Amendment, Analysis, AnalysisStatus, Finding, FindingStatus, Report, VisitNote
from .selectors import analysis_settings, unfamiliar_hidden, visit_findings
from .webhooks import webhook_emit

# Called with each newly signed report version inside the signing transaction, by apps above this one that act on a
# signature (the DICOM app sends the report back to the practice's PACS); this app imports none of them.
_signed_callbacks: list[Callable[[Report], None]] = []


def report_signed_register(callback: Callable[[Report], None]) -> None:
    """Have ``callback(report)`` called in the transaction that signs each report version (registered once, in the
    caller's ``AppConfig.ready``). What it writes commits or rolls back with the signature."""
    if callback not in _signed_callbacks:
        _signed_callbacks.append(callback)


def visit_locked(visit: Visit) -> bool:
    """A visit is read-only once signed, until a dentist opens an amendment: ``Visit.locked``, which this
    module alone writes (``report_sign`` sets it, ``amendment_open`` clears it) and ``patients`` reads for
    uploads. Read from the row, not from ``visit``: the caller's instance may predate a signature."""
    return Visit.objects.filter(pk=visit.pk, locked=True).exists()


def ensure_editable(visit_id: object) -> None:
    """Refuse a change to a signed visit, and hold the visit's row (``FOR NO KEY UPDATE``) until the caller's
    transaction ends: signing locks the row ``FOR UPDATE``, so a decision in flight is in the signed report or is
    refused, never written beside it (a plain read would let a decision that read "not signed" commit after the
    signature's snapshot). Call it inside the transaction that makes the change."""
    rows = Visit.objects.select_for_update(no_key=True).filter(pk=visit_id).values_list("locked", flat=True)
    if any(rows):
        raise ServiceError("report_signed", "This visit's report is signed; open an amendment to change it.", 409)


def _content_aad(report_id: object) -> bytes:
    return f"report:{report_id}:content".encode()


def report_content(report: Report) -> dict[str, Any]:
    key = patient_key(report.visit.patient)
    return json.loads(crypto.decrypt(key, bytes(report.content), _content_aad(report.pk)))


def finding_dict(finding: Finding) -> dict[str, Any]:
    model = finding.analysis.model_version.model_id if finding.analysis_id else None
    return {
        "id": str(finding.pk),
        "condition": finding.condition,
        "probability": finding.probability,
        "box": finding.box,
        "status": finding.status,
        "source": finding.source,
        "reason": finding.reason,
        "model": model,
        "reviewed_by": finding.reviewed_by.email if finding.reviewed_by_id else None,
        "tooth": finding.tooth or None,
        "surfaces": finding.surfaces,
        "suggested_tooth": finding.suggested_tooth or None,
        "suggested_tooth_probability": finding.suggested_tooth_probability,
        "note": finding.note,
        "version": finding.version,
    }


def _analysis_state(image: Image) -> tuple[str, dict[str, str] | None]:
    """``done`` when a model analysed the image, ``not_assessable`` when the image gate refused it (with the
    reason), ``failed`` when its analysis failed, ``none`` when no model ran (none installed for the modality):
    the report must not read as "nothing found" when nothing looked."""
    rows = list(
        Analysis.objects.filter(image=image).values_list("status", "not_assessable_code", "not_assessable_message")
    )
    statuses = {status for status, _, _ in rows}
    if AnalysisStatus.DONE in statuses:
        return "done", None
    for status, code, message in rows:
        if status == AnalysisStatus.NOT_ASSESSABLE:
            return "not_assessable", {"code": code, "message": message}
    return ("failed" if AnalysisStatus.FAILED in statuses else "none"), None


def report_snapshot(
    visit: Visit, *, report_id: str, version: int, signer: User, signed_at: str, amends: Report | None, reason: str
) -> dict[str, Any]:
    identity = patient_identity(visit.patient)
    hide = unfamiliar_hidden()  # the clinic's setting, read once for the visit's images
    return {
        "report_id": report_id,
        "version": version,
        "status": "signed",
        "signed_at": signed_at,
        "signed_by": {"id": str(signer.pk), "name": signer.full_name or signer.email, "email": signer.email},
        "amends": str(amends.pk) if amends else None,
        "amendment_reason": reason,
        "clinic": {"id": str(visit.clinic_id), "name": visit.clinic.name},
        "patient": {
            "id": str(visit.patient_id),
            "external_id": identity.external_id,
            "given_name": identity.given_name,
            "family_name": identity.family_name,
            "date_of_birth": identity.date_of_birth.isoformat(),
            "sex": visit.patient.sex,
        },
        "visit": {"id": str(visit.pk), "date": visit.visit_date.isoformat(), "note": _visit_note_text(visit)},
        # how the clinic read tooth numbers when this was signed (findings keep FDI codes)
        "tooth_notation": analysis_settings().tooth_notation,
        "images": [
            image_snapshot(image, findings, hide_unfamiliar=hide)
            for image, findings in visit_findings(visit, hide_unfamiliar=hide).items()
        ],
    }


def _visit_note_text(visit: Visit) -> str:
    return VisitNote.objects.filter(visit=visit).values_list("text", flat=True).first() or ""


def image_snapshot(image: Image, findings: list, *, hide_unfamiliar: bool | None = None) -> dict[str, Any]:
    """One image of a report's snapshot: its findings and whether (and why not) the AI assessed it.
    ``suggestions_hidden``: the AI found the image unlike those it learned from and the clinic hides the suggestions
    of such images, so nothing the AI raised on it is shown or reported (never to be read as "nothing found").
    ``hide_unfamiliar``: the clinic's setting when the caller has read it already."""
    state, refusal = _analysis_state(image)
    item = {
        "id": str(image.pk),
        "modality": image.modality,
        "width": image.width,
        "height": image.height,
        "analysis": state,
        "findings": [finding_dict(f) for f in findings],
    }
    if refusal is not None:
        item["not_assessable"] = refusal
    if state == "done" and (unfamiliar_hidden() if hide_unfamiliar is None else hide_unfamiliar):
        unfamiliar = Analysis.objects.filter(image=image, status=AnalysisStatus.DONE, unfamiliar=True).exists()
        item["suggestions_hidden"] = unfamiliar
    return item


def report_sign(*, visit: Visit, signer: User) -> Report:
    """Sign the visit's report (dentists only, checked by the permission map)."""
    with transaction.atomic():
        # The visit's row only (``of``): a FOR UPDATE on the joined clinic row held every insert that points at the
        # clinic (audit events, images) until the signature committed, and could deadlock with an upload holding the
        # clinic's quota lock while it waited for the visit.
        visit = Visit.objects.select_for_update(of=("self",)).select_related("patient", "clinic").get(pk=visit.pk)
        ensure_editable(visit.pk)
        if Analysis.objects.filter(
            image__visit=visit, status__in=[AnalysisStatus.QUEUED, AnalysisStatus.RUNNING]
        ).exists():
            raise ServiceError("analysis_pending", "Some images of this visit are still being analysed.", 409)
        pending = sum(f.status == FindingStatus.PENDING for fs in visit_findings(visit).values() for f in fs)
        if pending:
            raise ServiceError("findings_pending", f"{pending} suggestion(s) still need a decision.", 409)
        previous = Report.objects.filter(visit=visit).order_by("-version").first()
        amendment = Amendment.objects.filter(visit=visit, report__isnull=True).first()
        report_id = uuid.uuid4()
        signed_at = timezone.now()
        version = (previous.version + 1) if previous else 1
        snapshot = report_snapshot(
            visit,
            report_id=str(report_id),
            version=version,
            signer=signer,
            signed_at=signed_at.isoformat(),
            amends=previous if amendment else None,
            reason=amendment.reason if amendment else "",
        )
        content = crypto.encrypt(patient_key(visit.patient), json.dumps(snapshot).encode(), _content_aad(report_id))
        report = Report.objects.create(
            id=report_id,
            visit=visit,
            version=version,
            content=content,
            signed_by=signer,
            signed_at=signed_at,
            amends=previous if amendment else None,
            amendment_reason=amendment.reason if amendment else "",
        )
        if amendment:
            amendment.report = report
            amendment.save(update_fields=["report"])
        visit.locked = True  # signed, and the amendment (if any) is closed by this version
        visit.save(update_fields=["locked"])
        audit.record(
            action="report.sign",
            clinic_id=require_clinic_id(),
            object_type="report",
            object_id=report.pk,
            details={
                "visit_id": str(visit.pk),
                "version": version,
                "amends": str(report.amends_id) if report.amends_id else None,
            },
        )
        webhook_emit(
            event="report.signed", payload={"report_id": str(report.pk), "visit_id": str(visit.pk), "version": version}
        )
        for callback in _signed_callbacks:
            callback(report)
    return report


def amendment_open(*, visit: Visit, actor: User, reason: str) -> Amendment:
    if not reason.strip():
        raise ServiceError("reason_required", "An amendment needs a reason.")
    with transaction.atomic():
        visit = Visit.objects.select_for_update().get(pk=visit.pk)
        if not Report.objects.filter(visit=visit).exists():
            raise ServiceError("not_signed", "The report is not signed yet: change it directly.", 409)
        if not visit_locked(visit):
            raise ServiceError("amendment_open", "An amendment is already open for this visit.", 409)
        amendment = Amendment.objects.create(visit=visit, reason=reason.strip()[:500], opened_by=actor)
        visit.locked = False  # open again until the amendment is signed
        visit.save(update_fields=["locked"])
        audit.record(
            action="report.amend",
            clinic_id=require_clinic_id(),
            object_type="visit",
            object_id=visit.pk,
            details={"amendment_id": str(amendment.pk)},
        )
    return amendment
