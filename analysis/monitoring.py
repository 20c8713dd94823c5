"""Agreement in practice: how often dentists confirm or reject each condition, per model version.

Positive predictive value in practice = confirmed / (confirmed + rejected) among the model's
suggestions that a dentist decided. ``pending`` counts suggestions shown to dentists (at or above the
clinic's threshold) and not decided yet, not the candidates kept below it. Clinician-added findings that
stand (not rejected later) show what the model missed."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from django.db.models import Count

from .models import Finding, FindingSource, FindingStatus, ModelVersion
from .selectors import thresholds_for, unfamiliar_hidden


def agreement() -> list[dict[str, Any]]:
    """One row per (model version, condition) for the clinic in scope, sorted."""
    rows: dict[tuple[str, str], dict[str, Any]] = defaultdict(
        lambda: {"confirmed": 0, "rejected": 0, "pending": 0, "rejected_by_reason": {}, "added_by_clinicians": 0}
    )
    model_findings = (
        Finding.objects.filter(source=FindingSource.MODEL, analysis__isnull=False)
        .exclude(status=FindingStatus.PENDING)
        .values("analysis__model_version__name", "analysis__model_version__version", "condition", "status", "reason")
        .annotate(n=Count("id"))
    )
    hide_unfamiliar = unfamiliar_hidden()
    for model in ModelVersion.objects.filter(
        analyses__findings__source=FindingSource.MODEL, analyses__findings__status=FindingStatus.PENDING
    ).distinct():
        limits = thresholds_for(model)
        pending = Finding.objects.filter(
            source=FindingSource.MODEL, status=FindingStatus.PENDING, analysis__model_version=model
        )
        if hide_unfamiliar:  # suggestions of unfamiliar images the clinic does not show are pending for nobody
            pending = pending.exclude(analysis__unfamiliar=True)
        for condition in pending.order_by().values_list("condition", flat=True).distinct():
            shown = pending.filter(condition=condition, probability__gte=limits.get(condition, 0.5)).count()
            if shown:
                rows[(model.model_id, condition)]["pending"] += shown
    for r in model_findings:
        key = (f"{r['analysis__model_version__name']}@{r['analysis__model_version__version']}", r["condition"])
        row = rows[key]
        row[r["status"]] += r["n"]
        if r["status"] == FindingStatus.REJECTED:
            row["rejected_by_reason"][r["reason"]] = row["rejected_by_reason"].get(r["reason"], 0) + r["n"]
    added = (
        Finding.objects.filter(source=FindingSource.CLINICIAN)
        .exclude(status=FindingStatus.REJECTED)
        .values("image__analyses__model_version__name", "image__analyses__model_version__version", "condition")
        .annotate(n=Count("id", distinct=True))
    )
    for r in added:
        if r["image__analyses__model_version__name"] is None:
            continue
        key = (
            f"{r['image__analyses__model_version__name']}@{r['image__analyses__model_version__version']}",
            r["condition"],
        )
        rows[key]["added_by_clinicians"] += r["n"]
    result = []
    for (model, condition), row in sorted(rows.items()):
        decided = row["confirmed"] + row["rejected"]
        result.append(
            {
                "model": model,
                "condition": condition,
                **row,
                "decided": decided,
                "ppv": round(row["confirmed"] / decided, 4) if decided else None,
            }
        )
    return result
