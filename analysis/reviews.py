"""A dentist's decisions on findings. Each decision is a ``FindingDecision`` row and an audit event,
written in one transaction with the change itself."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from clinics import audit
from clinics.models import User
from clinics.services import ServiceError
from clinics.tenancy import require_clinic_id

from .models import Finding, FindingDecision, FindingStatus, RejectReason

DECISIONS = ("confirm", "reject")


def _state(finding: Finding) -> dict[str, Any]:
    return {"status": finding.status, "reason": finding.reason, "condition": finding.condition, "box": finding.box}


def finding_review(*, finding: Finding, decision: str, reason: str = "", actor: User) -> Finding:
    if decision not in DECISIONS:
        raise ServiceError("invalid_decision", "Decision must be 'confirm' or 'reject'.")
    if decision == "reject" and reason not in RejectReason.values:
        raise ServiceError(
            "reason_required", "Rejecting a finding needs a reason: " + ", ".join(RejectReason.values) + "."
        )
    with transaction.atomic():
        finding = Finding.objects.select_for_update().get(pk=finding.pk)
        before = _state(finding)
        finding.status = FindingStatus.CONFIRMED if decision == "confirm" else FindingStatus.REJECTED
        finding.reason = reason if decision == "reject" else ""
        finding.reviewed_by, finding.reviewed_at = actor, timezone.now()
        finding.save(update_fields=["status", "reason", "reviewed_by", "reviewed_at"])
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
    return finding
