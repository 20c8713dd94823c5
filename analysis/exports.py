"""The analysis app's part of a patient's export (GDPR Art. 15/20): for every image its analyses and
findings with every review decision, and for every visit its signed report versions (the snapshot as
signed) and amendments. Registered by ``AnalysisConfig.ready`` with ``patients.exports``, whose
``clinical_record`` gives it to ``patients.services.patient_export`` to merge into ``patient.json``."""

from __future__ import annotations

from typing import Any

from patients.models import Patient

from .models import Amendment, Analysis, Finding, FindingDecision, Report, VisitNote
from .reports import finding_dict, report_content


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def patient_clinical_record(patient: Patient) -> dict[str, dict[str, dict[str, list[dict[str, Any]]]]]:
    """``{"images": {image id: {"analyses": [...], "findings": [...]}}, "visits": {visit id: {"reports": [...],
    "amendments": [...]}}}``; every finding the clinic holds, shown or not, model's or clinician's."""
    images: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for analysis in (
        Analysis.objects.filter(image__patient=patient).select_related("model_version").order_by("created_at")
    ):
        images.setdefault(str(analysis.image_id), {"analyses": [], "findings": []})["analyses"].append(
            {
                "id": str(analysis.pk),
                "model": analysis.model_version.model_id,
                "status": analysis.status,
                "input_sha256": analysis.input_sha256,
                "scores": analysis.scores,
                "failure_reason": analysis.failure_reason,
                "created_at": _iso(analysis.created_at),
                "finished_at": _iso(analysis.finished_at),
            }
        )
    decisions: dict[object, list[dict[str, Any]]] = {}
    for decision in (
        FindingDecision.objects.filter(finding__image__patient=patient).select_related("actor").order_by("id")
    ):
        decisions.setdefault(decision.finding_id, []).append(
            {
                "decision": decision.decision,
                "reason": decision.reason,
                "before": decision.before,
                "after": decision.after,
                "by": decision.actor.email,
                "at": _iso(decision.created_at),
            }
        )
    for finding in (
        Finding.objects.filter(image__patient=patient)
        .select_related("analysis__model_version", "reviewed_by")
        .order_by("created_at")
    ):
        images.setdefault(str(finding.image_id), {"analyses": [], "findings": []})["findings"].append(
            {
                **finding_dict(finding),
                "analysis": str(finding.analysis_id) if finding.analysis_id else None,
                "created_at": _iso(finding.created_at),
                "reviewed_at": _iso(finding.reviewed_at),
                "decisions": decisions.get(finding.pk, []),
            }
        )
    visits: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for report in (
        Report.objects.filter(visit__patient=patient).select_related("visit__patient", "signed_by").order_by("version")
    ):
        report.visit.patient = patient  # the caller's instance: its data keys are already loaded
        visits.setdefault(str(report.visit_id), {"reports": [], "amendments": []})["reports"].append(
            {
                "id": str(report.pk),
                "version": report.version,
                "signed_by": report.signed_by.email,
                "signed_at": _iso(report.signed_at),
                "amends": str(report.amends_id) if report.amends_id else None,
                "amendment_reason": report.amendment_reason,
                "content": report_content(report),
            }
        )
    for amendment in Amendment.objects.filter(visit__patient=patient).select_related("opened_by").order_by("opened_at"):
        visits.setdefault(str(amendment.visit_id), {"reports": [], "amendments": []})["amendments"].append(
            {
                "id": str(amendment.pk),
                "reason": amendment.reason,
                "opened_by": amendment.opened_by.email,
                "opened_at": _iso(amendment.opened_at),
                "closed_by_report": str(amendment.report_id) if amendment.report_id else None,
            }
        )
    for note in VisitNote.objects.filter(visit__patient=patient).select_related("updated_by"):
        visits.setdefault(str(note.visit_id), {"reports": [], "amendments": []})["note"] = [
            {
                "text": note.text,
                "version": note.version,
                "updated_by": note.updated_by.email if note.updated_by_id else None,
                "updated_at": _iso(note.updated_at),
            }
        ]
    return {"images": images, "visits": visits}
