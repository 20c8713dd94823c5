"""A dentist's decisions on findings. Each decision is a ``FindingDecision`` row and an audit event,
written in one transaction with the change itself; a signed visit refuses them (409)."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from clinics import audit
from clinics.models import User
from clinics.services import ServiceError
from clinics.tenancy import require_clinic_id
from core import conditions
from patients.models import Image

from .models import Finding, FindingDecision, FindingSource, FindingStatus, RejectReason
from .reports import ensure_editable

DECISIONS = ("confirm", "reject", "adjust")


def _state(finding: Finding) -> dict[str, Any]:
    return {"status": finding.status, "reason": finding.reason, "condition": finding.condition, "box": finding.box}


def clean_box(box: Any) -> list[float]:
    """A box [x, y, w, h] inside the image, normalised to 0..1."""
    try:
        x, y, w, h = (float(v) for v in box)
    except (TypeError, ValueError) as exc:
        raise ServiceError("invalid_box", "A box is four numbers: x, y, width, height (0..1).") from exc
    if not (0 <= x < 1 and 0 <= y < 1 and 0 < w <= 1 - x + 1e-9 and 0 < h <= 1 - y + 1e-9):
        raise ServiceError("invalid_box", "The box must lie inside the image (normalised 0..1).")
    return [round(x, 6), round(y, 6), round(w, 6), round(h, 6)]


def _record(finding: Finding, actor: User, decision: str, before: dict[str, Any] | None) -> None:
    FindingDecision.objects.create(
        finding=finding, actor=actor, decision=decision, reason=finding.reason, before=before, after=_state(finding)
    )
    audit.record(
        action=f"finding.{decision}",
        clinic_id=require_clinic_id(),
        object_type="finding",
        object_id=finding.pk,
        details={"reason": finding.reason, "condition": finding.condition, "image_id": str(finding.image_id)},
    )


def finding_review(
    *, finding: Finding, decision: str, actor: User, reason: str = "", box: Any = None, condition: str = ""
) -> Finding:
    """Confirm, reject (with a reason) or adjust (new box and/or condition; counts as confirmed)."""
    if decision not in DECISIONS:
        raise ServiceError("invalid_decision", "Decision must be 'confirm', 'reject' or 'adjust'.")
    if decision == "reject" and reason not in RejectReason.values:
        raise ServiceError(
            "reason_required", "Rejecting a finding needs a reason: " + ", ".join(RejectReason.values) + "."
        )
    with transaction.atomic():
        finding = Finding.objects.select_for_update().select_related("image__visit").get(pk=finding.pk)
        ensure_editable(finding.image.visit)
        before = _state(finding)
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
        finding.save()
        _record(finding, actor, decision, before)
    return finding


def finding_add(*, image: Image, condition: str, box: Any, actor: User) -> Finding:
    """A finding the model missed, added by a dentist (confirmed by definition)."""
    if condition not in conditions.codes_for(image.modality):
        raise ServiceError("invalid_condition", f"Unknown condition {condition!r} for this image.")
    with transaction.atomic():
        ensure_editable(image.visit)
        finding = Finding.objects.create(
            image=image,
            source=FindingSource.CLINICIAN,
            condition=condition,
            box=clean_box(box),
            status=FindingStatus.CONFIRMED,
            reviewed_by=actor,
            reviewed_at=timezone.now(),
        )
        _record(finding, actor, "add", None)
    return finding
