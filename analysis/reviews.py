"""A dentist's decisions and edits on findings, and the visit's review note. Each change is a ``FindingDecision``
row (for findings) and an audit event, written in one transaction with the change itself; a signed visit refuses
them (409).

Concurrent reviewers: every finding and visit note carries a ``version`` that each change increments. A caller
that says which version its change was made on (``expected_version``: the API's ``If-Match``, the page's hidden
version) gets ``version_conflict`` (412) when someone else changed it in between, naming who and what, and nothing
is written: never a silent overwrite. Without ``expected_version`` the change applies to the current version (API
clients written before versions existed keep working)."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from clinics import audit
from clinics.models import User
from clinics.services import ServiceError
from clinics.tenancy import require_clinic_id
from core import conditions, teeth
from patients.models import Image, Visit

from .models import Finding, FindingDecision, FindingSource, FindingStatus, RejectReason, VisitNote
from .reports import ensure_editable

DECISIONS = ("confirm", "reject", "adjust", "undo")
NOTE_MAX = 2000
VISIT_NOTE_MAX = 4000


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


def _state(finding: Finding) -> dict[str, Any]:
    return {
        "status": finding.status,
        "reason": finding.reason,
        "condition": finding.condition,
        "box": finding.box,
        "tooth": finding.tooth,
        "surfaces": finding.surfaces,
        "note": finding.note,
    }


def clean_box(box: Any) -> list[float]:
    """A box [x, y, w, h] inside the image, normalised to 0..1."""
    try:
        x, y, w, h = (float(v) for v in box)
    except (TypeError, ValueError) as exc:
        raise ServiceError("invalid_box", "A box is four numbers: x, y, width, height (0..1).") from exc
    if not (0 <= x < 1 and 0 <= y < 1 and 0 < w <= 1 - x + 1e-9 and 0 < h <= 1 - y + 1e-9):
        raise ServiceError("invalid_box", "The box must lie inside the image (normalised 0..1).")
    return [round(x, 6), round(y, 6), round(w, 6), round(h, 6)]


def clean_tooth(tooth: Any) -> str:
    """An FDI code (``core.teeth``) or ``""`` (no tooth); anything else is ``invalid_tooth``."""
    if tooth is None or tooth == "":
        return ""
    text = str(tooth).strip()
    if text not in teeth.TEETH:
        raise ServiceError("invalid_tooth", f"{text[:20]!r} is not an FDI tooth number (11-48, primary 51-85).")
    return text


def _clean_surfaces(tooth: str, surfaces: Any) -> str:
    try:
        return teeth.clean_surfaces(tooth, "" if surfaces is None else str(surfaces))
    except teeth.InvalidTooth as exc:
        raise ServiceError("invalid_surfaces", str(exc)) from exc


def _clean_note(note: Any, limit: int = NOTE_MAX) -> str:
    text = "" if note is None else str(note).strip()
    if len(text) > limit:
        raise ServiceError("note_too_long", f"A note is at most {limit} characters.")
    return text


def _changed(before: dict[str, Any] | None, after: dict[str, Any] | None) -> list[str]:
    if not before or not after:
        return sorted(after or {})
    return sorted(k for k in after if before.get(k) != after.get(k))


def _conflict(finding: Finding, expected: int) -> ServiceError:
    """The 412 for a change made on ``expected`` while ``finding`` is at a later version: who changed what."""
    last = (
        FindingDecision.objects.filter(finding=finding).select_related("actor").order_by("-created_at", "-id").first()
    )
    changed = _changed(last.before, last.after) if last else []
    who = last.actor.email if last else "someone"
    when = timezone.localtime(last.created_at).strftime("%H:%M:%S") if last else ""
    what = ", ".join(changed) or "the finding"
    message = (
        f"{who} changed this finding ({what}) at {when}, after you opened it (your version {expected}, now "
        f"{finding.version}). Your change was not saved: look at theirs, then make yours again."
    )
    return ServiceError(
        "version_conflict",
        message,
        412,
        details={
            "current_version": finding.version,
            "your_version": expected,
            "changed_by": who,
            "changed_at": last.created_at.isoformat() if last else None,
            "decision": last.decision if last else None,
            "changed": changed,
        },
    )


def _check_version(finding: Finding, expected_version: int | None) -> None:
    if expected_version is not None and int(expected_version) != finding.version:
        raise _conflict(finding, int(expected_version))


def _record(finding: Finding, actor: User, decision: str, before: dict[str, Any] | None) -> None:
    after = _state(finding)
    FindingDecision.objects.create(
        finding=finding, actor=actor, decision=decision, reason=finding.reason, before=before, after=after
    )
    details: dict[str, Any] = {
        "reason": finding.reason,
        "condition": finding.condition,
        "image_id": str(finding.image_id),
        "version": finding.version,
    }
    if decision in ("edit", "adjust", "add", "undo"):
        details["changed"] = _changed(before, after)
    if finding.tooth:
        details["tooth"] = finding.tooth
    audit.record(
        action=f"finding.{decision}",
        clinic_id=require_clinic_id(),
        object_type="finding",
        object_id=finding.pk,
        details=details,
    )


def _apply_annotations(finding: Finding, tooth: Any, surfaces: Any, note: Any) -> None:
    if tooth is not UNSET:
        finding.tooth = clean_tooth(tooth)
        if surfaces is UNSET and finding.surfaces:
            # surfaces named for another tooth may not fit this one (an incisal edge on a molar)
            surfaces = finding.surfaces if finding.tooth else ""
    if surfaces is not UNSET:
        finding.surfaces = _clean_surfaces(finding.tooth, surfaces)
    if note is not UNSET:
        finding.note = _clean_note(note)


def finding_review(
    *,
    finding: Finding,
    decision: str,
    actor: User,
    reason: str = "",
    box: Any = None,
    condition: str = "",
    tooth: Any = UNSET,
    surfaces: Any = UNSET,
    note: Any = UNSET,
    expected_version: int | None = None,
) -> Finding:
    """Confirm, reject (with a reason), adjust (new box and/or condition; counts as confirmed) or undo (back to
    pending, before signing; AI suggestions only). ``tooth``/``surfaces``/``note`` may come with the decision."""
    if decision not in DECISIONS:
        raise ServiceError("invalid_decision", "Decision must be 'confirm', 'reject', 'adjust' or 'undo'.")
    if decision == "reject" and reason not in RejectReason.values:
        raise ServiceError(
            "reason_required", "Rejecting a finding needs a reason: " + ", ".join(RejectReason.values) + "."
        )
    with transaction.atomic():
        ensure_editable(finding.image.visit_id)  # the visit first, then the finding: the order signing locks them in
        finding = Finding.objects.select_for_update(of=("self",)).select_related("image__visit").get(pk=finding.pk)
        _check_version(finding, expected_version)
        before = _state(finding)
        if decision == "undo":
            if finding.source != FindingSource.MODEL:
                raise ServiceError(
                    "not_a_suggestion", "Only an AI suggestion goes back to pending; reject an added finding.", 409
                )
            if finding.status == FindingStatus.PENDING:
                raise ServiceError("already_pending", "This suggestion has no decision to undo.", 409)
            finding.status, finding.reason = FindingStatus.PENDING, ""
            finding.reviewed_by, finding.reviewed_at = None, None
        else:
            if decision == "adjust":
                if box is None and not condition:
                    raise ServiceError("nothing_to_adjust", "An adjustment needs a new box or condition.")
                if box is not None:
                    finding.box = clean_box(box)
                if condition:
                    if condition not in conditions.codes_for(finding.image.modality):
                        raise ServiceError("invalid_condition", f"Unknown condition {condition!r} for this image.")
                    finding.condition = condition
            finding.status = FindingStatus.REJECTED if decision == "reject" else FindingStatus.CONFIRMED
            finding.reason = reason if decision == "reject" else ""
            finding.reviewed_by, finding.reviewed_at = actor, timezone.now()
        _apply_annotations(finding, tooth, surfaces, note)
        finding.version += 1
        finding.save()
        _record(finding, actor, decision, before)
    return finding


def finding_update(
    *,
    finding: Finding,
    actor: User,
    tooth: Any = UNSET,
    surfaces: Any = UNSET,
    note: Any = UNSET,
    expected_version: int | None = None,
) -> Finding:
    """Assign a tooth (FDI code, ``""`` to clear), surfaces or a note without deciding the finding (a pending
    suggestion stays pending). Audited as ``finding.edit`` with the fields that changed."""
    if tooth is UNSET and surfaces is UNSET and note is UNSET:
        raise ServiceError("nothing_to_change", "Send a tooth, surfaces or a note.")
    with transaction.atomic():
        ensure_editable(finding.image.visit_id)  # the visit first, then the finding: the order signing locks them in
        finding = Finding.objects.select_for_update(of=("self",)).select_related("image__visit").get(pk=finding.pk)
        _check_version(finding, expected_version)
        before = _state(finding)
        _apply_annotations(finding, tooth, surfaces, note)
        if _state(finding) == before:
            return finding  # nothing changed: no new version, no audit noise
        finding.version += 1
        finding.save()
        _record(finding, actor, "edit", before)
    return finding


def finding_add(
    *, image: Image, condition: str, box: Any, actor: User, tooth: Any = UNSET, surfaces: Any = UNSET, note: Any = UNSET
) -> Finding:
    """A finding the model missed, added by a dentist (confirmed by definition)."""
    if condition not in conditions.codes_for(image.modality):
        raise ServiceError("invalid_condition", f"Unknown condition {condition!r} for this image.")
    with transaction.atomic():
        ensure_editable(image.visit_id)
        finding = Finding(
            image=image,
            source=FindingSource.CLINICIAN,
            condition=condition,
            box=clean_box(box),
            status=FindingStatus.CONFIRMED,
            reviewed_by=actor,
            reviewed_at=timezone.now(),
        )
        _apply_annotations(finding, tooth, surfaces, note)
        finding.save(force_insert=True)
        _record(finding, actor, "add", None)
    return finding


def visit_note_get(visit: Visit) -> VisitNote:
    """The visit's review note (an unsaved empty one, version 0, when nobody wrote one)."""
    return VisitNote.objects.filter(visit=visit).select_related("updated_by").first() or VisitNote(
        visit=visit, clinic_id=visit.clinic_id
    )


def visit_note_set(*, visit: Visit, text: str, actor: User, expected_version: int | None = None) -> VisitNote:
    """Write the visit's review note; refused on a signed visit (409) and when ``expected_version`` is stale (412)."""
    text = _clean_note(text, VISIT_NOTE_MAX)
    with transaction.atomic():
        visit = Visit.objects.select_for_update().get(pk=visit.pk)
        ensure_editable(visit.pk)
        note, _ = VisitNote.objects.select_for_update().get_or_create(visit=visit)
        if expected_version is not None and int(expected_version) != note.version:
            who = note.updated_by.email if note.updated_by_id else "someone"
            when = timezone.localtime(note.updated_at).strftime("%H:%M:%S")
            raise ServiceError(
                "version_conflict",
                f"{who} changed the visit note at {when}, after you opened it (your version {expected_version}, now "
                f"{note.version}). Your text was not saved: look at theirs, then make your change again.",
                412,
                details={
                    "current_version": note.version,
                    "your_version": int(expected_version),
                    "changed_by": who,
                    "changed_at": note.updated_at.isoformat(),
                    "changed": ["note"],
                },
            )
        if note.text == text and note.version:
            return note
        note.text, note.updated_by, note.updated_at = text, actor, timezone.now()
        note.version += 1
        note.save()
        audit.record(
            action="visit.note",
            clinic_id=require_clinic_id(),
            object_type="visit",
            object_id=visit.pk,
            details={"version": note.version, "length": len(text)},
        )
    return note
