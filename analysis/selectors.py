"""Reads for analyses, findings and visits, in the caller's clinic scope."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from django.db.models import Count, Exists, IntegerField, OuterRef, Prefetch, Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce

from clinics.tenancy import current_clinic_id
from patients.models import Image, Visit
from patients.restricted import restricted_patient_ids

from .models import (
    Amendment,
    Analysis,
    AnalysisSettings,
    AnalysisStatus,
    ClinicModel,
    ConditionThreshold,
    Finding,
    FindingSource,
    FindingStatus,
    ModelVersion,
    Report,
    ToothOrNone,
)


def thresholds_for(model: ModelVersion) -> dict[str, float]:
    """The clinic's operating point per condition; the model card's thresholds by default.

    A model version loaded by ``analysis_list`` (one instance shared by every analysis of the page, marked
    ``cache_thresholds``) keeps the answer for the clinic in scope, so a page of N analyses costs one
    query here instead of N."""
    cache = None
    if getattr(model, "cache_thresholds", False):
        cache = model.__dict__.setdefault("_thresholds_by_clinic", {})
        clinic_id = current_clinic_id()
        if clinic_id in cache:
            return dict(cache[clinic_id])
    chosen = dict(model.thresholds)
    for row in ConditionThreshold.objects.filter(modality=model.modality):
        chosen[row.condition] = row.threshold
    if cache is not None:
        cache[clinic_id] = dict(chosen)
    return chosen


def is_shown(finding: Finding | FindingRow, thresholds: dict[str, float], hide_unfamiliar: bool = False) -> bool:
    """A clinician's finding or a decided one always; a pending suggestion at or above the clinic's threshold,
    unless it comes from an unfamiliar image and the clinic hides those (``hide_unfamiliar``)."""
    if finding.source == FindingSource.CLINICIAN or finding.status != FindingStatus.PENDING:
        return True
    hidden = bool(hide_unfamiliar and finding.analysis_id and finding.analysis.unfamiliar)
    return suggestion_shown(finding.condition, finding.probability, thresholds, hidden=hidden)


def suggestion_shown(condition: str, probability: float | None, thresholds: dict[str, float], *, hidden: bool) -> bool:
    """Whether an AI suggestion still pending is shown: at or above the clinic's threshold for its condition,
    unless ``hidden`` (it comes from an unfamiliar image and the clinic hides those)."""
    return not hidden and probability is not None and probability >= thresholds.get(condition, 0.5)


def analysis_settings() -> AnalysisSettings:
    """The clinic's analysis settings (its defaults when it never changed them; not saved by this call)."""
    return AnalysisSettings.objects.first() or AnalysisSettings(clinic_id=current_clinic_id())


def unfamiliar_hidden(settings: AnalysisSettings | None = None) -> bool:
    """Whether the clinic hides suggestions from unfamiliar images (``settings``: its settings, when read already)."""
    return (settings or analysis_settings()).unfamiliar_findings == "hide"


def _shown_findings(
    images: list[Image], hide_unfamiliar: bool, thresholds: dict[object, dict[str, float]] | None = None
) -> dict[Image, list[Finding]]:
    """The shown findings of each image (``is_shown``), in the findings' order: one query for all the images, the
    clinic's thresholds read once per model version (into ``thresholds``, by model version id, when the caller
    keeps them for its own use)."""
    result: dict[Image, list[Finding]] = {image: [] for image in images}
    by_id = {image.pk: image for image in images}
    thresholds = {} if thresholds is None else thresholds
    findings = (
        Finding.objects.filter(image_id__in=list(by_id))
        .select_related("analysis__model_version", "reviewed_by")
        .order_by("-probability", "created_at")
    )
    for finding in findings:
        if finding.analysis_id:
            version = finding.analysis.model_version
            if version.pk not in thresholds:
                thresholds[version.pk] = thresholds_for(version)
            chosen = thresholds[version.pk]
        else:
            chosen = {}
        if is_shown(finding, chosen, hide_unfamiliar):
            result[by_id[finding.image_id]].append(finding)
    return result


def _pending_shown_counts(image_ids: list[object], hide_unfamiliar: bool) -> dict[object, int]:
    """Per image, how many of its shown findings still wait for a decision (``is_shown``), counted from one
    ``values_list`` query of the pending findings and one of their model versions: the worklist needs no more, and
    building each finding with its analysis and model version as model instances cost the page about 100 ms of CPU
    for 50 visits (bench/README.md)."""
    rows = list(
        Finding.objects.filter(image_id__in=image_ids, status=FindingStatus.PENDING).values_list(
            "image_id", "source", "condition", "probability", "analysis__model_version_id", "analysis__unfamiliar"
        )
    )
    versions = ModelVersion.objects.in_bulk({row[4] for row in rows if row[4] is not None})
    thresholds = {pk: thresholds_for(version) for pk, version in versions.items()}
    counts = dict.fromkeys(image_ids, 0)
    for image_id, source, condition, probability, version_id, unfamiliar in rows:
        if source == FindingSource.CLINICIAN or suggestion_shown(
            condition, probability, thresholds.get(version_id, {}), hidden=bool(hide_unfamiliar and unfamiliar)
        ):
            counts[image_id] += 1
    return counts


def visit_findings(
    visit: Visit,
    *,
    hide_unfamiliar: bool | None = None,
    thresholds: dict[object, dict[str, float]] | None = None,
) -> dict[Image, list[Finding]]:
    """The findings of a visit that the clinic shows (its thresholds) or that a clinician decided, for each of the
    visit's images in upload order (every image is a key, with or without findings). ``hide_unfamiliar``: the
    clinic's setting when the caller has read it already; ``thresholds``: see ``_shown_findings``."""
    images = list(Image.objects.filter(visit=visit).order_by("uploaded_at"))
    hide = unfamiliar_hidden() if hide_unfamiliar is None else hide_unfamiliar
    return _shown_findings(images, hide, thresholds)


# the fields of a finding that an analysis in a list shows (``analysis.api.FindingOutput``) or needs to choose
# which to show (``is_shown``)
LIST_FINDING_FIELDS = (
    "id",
    "clinic",
    "analysis",
    "image",
    "source",
    "condition",
    "probability",
    "box",
    "status",
    "reason",
    "reviewed_by",
    "tooth",
    "surfaces",
    "suggested_tooth",
    "suggested_tooth_probability",
    "note",
    "version",
)


def analysis_list(*, status: str | None = None, visit: object = None, findings: bool = True) -> QuerySet[Analysis]:
    """The clinic's analyses, newest first, with what ``AnalysisOutput`` reads prefetched. ``findings=False`` leaves
    the findings out: a page of the list attaches them afterwards as rows (``finding_rows_attach``)."""
    lookups: list[Prefetch] = [
        # prefetched, not joined: one ModelVersion instance per version, shared by the page's rows
        Prefetch("model_version", queryset=ModelVersion.objects.annotate(cache_thresholds=Value(True))),
        Prefetch("clinic_model", queryset=ClinicModel.objects.select_related("parent")),
    ]
    if findings:
        # what FindingOutput and is_shown read: not the heatmaps (kilobytes each), the reviewer's email only
        lookups.append(
            Prefetch(
                "findings",
                queryset=Finding.objects.select_related("reviewed_by").only(*LIST_FINDING_FIELDS, "reviewed_by__email"),
            )
        )
    analyses = Analysis.objects.prefetch_related(*lookups).order_by("-created_at", "id")
    if status:
        analyses = analyses.filter(status=status)
    if visit:
        analyses = analyses.filter(image__visit_id=visit)
    return analyses


@dataclass(slots=True)
class FindingRow(ToothOrNone):
    """A finding as a page of the analyses list shows it: what ``FindingOutput`` and ``is_shown`` read, from one
    ``values_list`` query for the whole page. Building a page's hundreds of findings as model instances (each
    foreign key set through its descriptor) was about half of that request's CPU (bench/README.md)."""

    id: uuid.UUID
    analysis_id: uuid.UUID
    source: str
    condition: str
    probability: float | None
    box: list[float] | None
    status: str
    reason: str
    reviewed_by_id: object
    reviewed_by_email: str | None
    tooth: str
    surfaces: str
    suggested_tooth: str
    suggested_tooth_probability: float | None
    note: str
    version: int
    analysis: Analysis | None = None  # set by finding_rows_attach, not a column


# the row's fields in order, as columns (the reviewer's email through the join)
_FINDING_ROW_COLUMNS = tuple(
    "reviewed_by__email" if f.name == "reviewed_by_email" else f.name
    for f in dataclasses.fields(FindingRow)
    if f.name != "analysis"
)


def finding_rows_attach(analyses: list[Analysis]) -> None:
    """Give each analysis of a page its findings as ``finding_rows`` (``FindingRow``, in the findings' own order:
    most probable first), with one query for the page."""
    owners = {a.pk: a for a in analyses}
    for analysis in analyses:
        analysis.finding_rows = []
    for values in Finding.objects.filter(analysis_id__in=list(owners)).values_list(*_FINDING_ROW_COLUMNS):
        row = FindingRow(*values)
        row.analysis = owners[row.analysis_id]
        row.analysis.finding_rows.append(row)


def analysis_get(pk: object) -> Analysis:
    return analysis_list().select_related("image__patient").get(pk=pk)


def finding_get(pk: object) -> Finding:
    return Finding.objects.select_related("analysis__model_version", "image__patient", "reviewed_by").get(pk=pk)


def visit_list(
    *,
    include_restricted: bool,
    patient: object = None,
    date: dt.date | None = None,
    since: dt.date | None = None,
    until: dt.date | None = None,
    signed: bool | None = None,
) -> QuerySet[Visit]:
    """The clinic's visits, newest first, each annotated in the same query with ``image_count``, ``signed``
    (a report version is signed: ``analysis.reports``), the latest version's ``report_version`` and
    ``signed_at``, and ``amending`` (an amendment is open). ``since`` is included, ``until`` is not (like
    the audit trail's filters). Restricted patients' visits only when ``include_restricted``."""
    latest = Report.objects.filter(visit=OuterRef("pk")).order_by("-version")
    images = Image.objects.filter(visit=OuterRef("pk")).order_by().values("visit").annotate(n=Count("pk")).values("n")
    visits = Visit.objects.annotate(
        image_count=Coalesce(Subquery(images, output_field=IntegerField()), Value(0)),
        signed=Exists(Report.objects.filter(visit=OuterRef("pk"))),
        report_version=Subquery(latest.values("version")[:1]),
        signed_at=Subquery(latest.values("signed_at")[:1]),
        amending=Exists(Amendment.objects.filter(visit=OuterRef("pk"), report__isnull=True)),
    ).order_by("-visit_date", "-created_at", "id")
    if not include_restricted:
        visits = visits.exclude(patient_id__in=restricted_patient_ids())
    if patient is not None:
        visits = visits.filter(patient_id=patient)
    if date is not None:
        visits = visits.filter(visit_date=date)
    if since is not None:
        visits = visits.filter(visit_date__gte=since)
    if until is not None:
        visits = visits.filter(visit_date__lt=until)
    if signed is not None:
        visits = visits.filter(signed=signed)
    return visits


def visits_to_review(*, include_restricted: bool, limit: int = 50) -> list[dict[str, Any]]:
    """The worklist: visits with scans whose report is not signed yet (or is being amended), newest first,
    each with its images, analyses still running or failed, and the suggestions still needing a decision."""
    visits = (
        Visit.objects.annotate(
            has_images=Exists(Image.objects.filter(visit=OuterRef("pk"))),
            signed=Exists(Report.objects.filter(visit=OuterRef("pk"))),
            amending=Exists(Amendment.objects.filter(visit=OuterRef("pk"), report__isnull=True)),
        )
        .filter(Q(signed=False) | Q(amending=True), has_images=True)
        .select_related("patient")
        .order_by("-visit_date", "-created_at")
    )
    if not include_restricted:
        visits = visits.exclude(patient_id__in=restricted_patient_ids())
    visits = list(visits[:limit])
    images: dict[object, list[Image]] = {visit.pk: [] for visit in visits}
    for image in Image.objects.filter(visit_id__in=list(images)).order_by("uploaded_at"):
        images[image.visit_id].append(image)
    pending = _pending_shown_counts([image.pk for some in images.values() for image in some], unfamiliar_hidden())
    statuses: dict[object, list[str]] = {visit.pk: [] for visit in visits}
    for visit_id, status in Analysis.objects.filter(image__visit_id__in=list(statuses)).values_list(
        "image__visit_id", "status"
    ):
        statuses[visit_id].append(status)
    rows = []
    for visit in visits:
        found = statuses[visit.pk]
        rows.append(
            {
                "visit": visit,
                "images": len(images[visit.pk]),
                "analysing": sum(s in (AnalysisStatus.QUEUED, AnalysisStatus.RUNNING) for s in found),
                "failed": sum(s == AnalysisStatus.FAILED for s in found),
                "pending": sum(pending[image.pk] for image in images[visit.pk]),
                "amending": visit.amending,
            }
        )
    return rows


def visit_previous_signed(visit: Visit) -> Report | None:
    """The latest signed version of the report of the patient's most recent earlier visit that has one (earlier: an
    earlier date, or the same date and created before), for comparing change over time; None when there is none."""
    earlier = Q(visit__visit_date__lt=visit.visit_date) | Q(
        visit__visit_date=visit.visit_date, visit__created_at__lt=visit.created_at
    )
    return (
        Report.objects.filter(earlier, visit__patient_id=visit.patient_id)
        .select_related("visit", "signed_by")
        .order_by("-visit__visit_date", "-visit__created_at", "-version")
        .first()
    )
