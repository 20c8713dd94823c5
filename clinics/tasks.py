from __future__ import annotations

from celery import shared_task

from . import audit, context
from .models import AuditOutcome
from .tenancy import clinic_scope


@shared_task(name="clinics.audit_chain_verify", soft_time_limit=600, time_limit=660)
def audit_chain_verify_task(clinic_id: str) -> dict[str, object]:
    """Verify one clinic's audit chain in the background and record the result in that chain."""
    context.actor_var.set(context.Actor(system="audit_chain_verify"))
    with clinic_scope(clinic_id) as scoped_id:
        report = audit.verify_chain(audit.chain_key(scoped_id))
        audit.record(
            action="audit.verify",
            clinic_id=scoped_id,
            object_type="audit_trail",
            outcome=AuditOutcome.SUCCESS if report.problem is None else AuditOutcome.FAILURE,
            details={"events": report.events, "problem": str(report.problem) if report.problem else None},
        )
    return {"intact": report.problem is None, "events": report.events}
