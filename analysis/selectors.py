"""Reads for analyses and findings, in the caller's clinic scope."""

from __future__ import annotations

from django.db.models import Prefetch, QuerySet

from .models import Analysis, ConditionThreshold, Finding, FindingSource, FindingStatus, ModelVersion


def thresholds_for(model: ModelVersion) -> dict[str, float]:
    """The clinic's operating point per condition; the model card's thresholds by default."""
    chosen = dict(model.thresholds)
    for row in ConditionThreshold.objects.filter(modality=model.modality):
        chosen[row.condition] = row.threshold
    return chosen


def is_shown(finding: Finding, thresholds: dict[str, float]) -> bool:
    if finding.source == FindingSource.CLINICIAN or finding.status != FindingStatus.PENDING:
        return True
    return finding.probability is not None and finding.probability >= thresholds.get(finding.condition, 0.5)


def analysis_list(*, status: str | None = None, visit: object = None) -> QuerySet[Analysis]:
    analyses = (
        Analysis.objects.select_related("model_version")
        .prefetch_related(Prefetch("findings", queryset=Finding.objects.select_related("reviewed_by")))
        .order_by("-created_at", "id")
    )
    if status:
        analyses = analyses.filter(status=status)
    if visit:
        analyses = analyses.filter(image__visit_id=visit)
    return analyses


def analysis_get(pk: object) -> Analysis:
    return analysis_list().select_related("image__patient").get(pk=pk)


def finding_get(pk: object) -> Finding:
    return Finding.objects.select_related("analysis__model_version", "image__patient", "reviewed_by").get(pk=pk)
