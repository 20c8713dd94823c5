"""The dentist's screens: a visit's review (findings drawn on the images, decisions, signing), the
clinic's operating points per condition, and agreement in practice per model version."""

from __future__ import annotations

import base64
import math
import uuid
from typing import Any

from django.contrib import messages
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone

from clinics import audit
from clinics.views_base import ClinicView
from core import conditions, teeth
from patients.keys import patient_key
from patients.models import Image, Visit
from patients.selectors import patient_identity

from .adaptation import clinic_model_active
from .models import (
    Amendment,
    Analysis,
    AnalysisSettings,
    AnalysisStatus,
    ConditionThreshold,
    ModelModality,
    ModelVersion,
    RejectReason,
    Report,
)
from .monitoring import agreement
from .registry import ModelNotAvailable, model_version_active
from .report_wording import group_by_tooth
from .reports import finding_dict, report_content, visit_locked
from .reviews import visit_note_get
from .selectors import (
    analysis_settings,
    thresholds_for,
    unfamiliar_hidden,
    visit_findings,
    visit_previous_signed,
)
from .services import heatmap_raw
from .views_models import comparison_rows

FINDING_PLACEHOLDER = uuid.UUID(int=0)
ACTIVE_STATUSES = (AnalysisStatus.QUEUED, AnalysisStatus.RUNNING)


def _no_store(response: HttpResponse) -> HttpResponse:
    response["Cache-Control"] = "no-store"
    return response


PREVIEW_SIZE = 1024  # patients.intake.PREVIEW_SIZE: the preview's longest side


def _finding_data(finding: Any, threshold: float | None, key: Any = None) -> dict[str, Any]:
    data = {**finding_dict(finding), "threshold": threshold}
    raw = heatmap_raw(finding, key()) if key is not None and finding.heatmap else None
    if raw:
        # the photo model's class-activation map over the whole image (rows x cols, 0-255), drawn as a second overlay
        data["heatmap"] = {"rows": raw[0], "cols": raw[1], "data": base64.b64encode(raw[2:]).decode()}
    return data


def _preview_size(width: int, height: int) -> list[int]:
    scale = min(1.0, PREVIEW_SIZE / max(width, height, 1))
    return [max(1, round(width * scale)), max(1, round(height * scale))]


def previous_visit_data(visit: Visit, images: list[dict[str, Any]], notation: str) -> dict[str, Any] | None:
    """The patient's previous signed visit beside this one: for each image here, the signed image of that visit with
    the same modality and the nearest view (closest aspect ratio, then closest position), its findings as signed
    (rejected ones left out) and the same findings per tooth. None when the patient has no earlier signed visit."""
    report = visit_previous_signed(visit)
    if report is None:
        return None
    content = report_content(report)
    existing = set(
        str(pk) for pk in Image.objects.filter(pk__in=[i["id"] for i in content["images"]]).values_list("pk", flat=True)
    )
    earlier = [(n, i) for n, i in enumerate(content["images"], start=1) if i["id"] in existing]
    matches: dict[str, Any] = {}
    for index, image in enumerate(images):
        same = [(n, i) for n, i in earlier if i["modality"] == image["modality"]]
        if not same:
            continue
        aspect = math.log(image["width"] / max(image["height"], 1))
        number, prior = min(
            same,
            key=lambda item: (
                round(abs(math.log(item[1]["width"] / max(item[1]["height"], 1)) - aspect), 2),
                abs(item[0] - 1 - index),
            ),
        )
        kept = [f for f in prior["findings"] if f.get("status") != "rejected"]
        grouped = group_by_tooth(kept, notation)
        matches[image["id"]] = {
            "id": prior["id"],
            "number": number,
            "width": prior["width"],
            "height": prior["height"],
            "preview_url": reverse("patients:image", kwargs={"pk": prior["id"]}) + "?variant=preview",
            "findings": [
                {"condition": f["condition"], "box": f.get("box"), "source": f.get("source"), "tooth": f.get("tooth")}
                for f in kept
            ],
            "teeth": [
                {
                    "heading": t["heading"],
                    "problems": [i["name"] for i in t["problems"]],
                    "status": [i["name"] for i in t["status"]],
                }
                for t in grouped["teeth"]
            ],
            "unassigned": [i["name"] for i in grouped["unassigned"]],
        }
    return {
        "visit_id": str(report.visit_id),
        "date": report.visit.visit_date.isoformat(),
        "version": report.version,
        "signed_by": report.signed_by.email,
        "review_url": reverse("analysis:review", kwargs={"pk": report.visit_id}),
        "matches": matches,
    }


def teeth_data(notation: str) -> dict[str, dict[str, Any]]:
    """FDI code -> its label in the clinic's notation, its name, and (Palmer) the grid form, for the screens."""
    return {
        fdi: {
            "label": tooth.label(notation),
            "name": tooth.name,
            "grid": teeth.palmer_grid(fdi),
            "primary": tooth.primary,
        }
        for fdi, tooth in teeth.TEETH.items()
    }


def review_data(
    visit: Visit, *, can_review: bool, can_add: bool, can_sign: bool, can_retry: bool = False
) -> dict[str, Any]:
    """Everything the review screen starts from (rendered as a JSON blob, never executed)."""
    latest = Report.objects.filter(visit=visit).select_related("signed_by").order_by("-version").first()
    amendment = Amendment.objects.filter(visit=visit, report__isnull=True).first()
    analyses_by_image: dict[Any, list[Analysis]] = {}
    for analysis in (
        Analysis.objects.filter(image__visit=visit)
        .select_related("model_version", "clinic_model__parent")
        .order_by("created_at")
    ):
        analyses_by_image.setdefault(analysis.image_id, []).append(analysis)

    thresholds: dict[str, dict[str, float]] = {}  # modality -> condition -> clinic operating point
    cache: dict[Any, dict[str, float]] = {}  # model version id -> its thresholds, shared with visit_findings

    def thresholds_of(model: ModelVersion) -> dict[str, float]:
        if model.pk not in cache:
            cache[model.pk] = thresholds_for(model)
        return cache[model.pk]

    images = []
    keys: list[bytes] = []

    def key() -> bytes:  # the patient's data key, unwrapped once and only when a heatmap needs it
        if not keys:
            keys.append(patient_key(visit.patient))
        return keys[0]

    settings = analysis_settings()
    hide_unfamiliar = unfamiliar_hidden(settings)
    findings_by_image = visit_findings(visit, hide_unfamiliar=hide_unfamiliar, thresholds=cache)
    # ``Visit.locked`` as the view read it from its row in this request (``visit_locked`` would read it again)
    locked = visit.locked
    if locked and latest is not None:
        # A signed visit shows what was signed, not what the clinic's thresholds would show today.
        signed = {f["id"] for image in report_content(latest)["images"] for f in image["findings"]}
        findings_by_image = {image: [f for f in fs if str(f.pk) in signed] for image, fs in findings_by_image.items()}
    for image in findings_by_image:  # each of the visit's images, in upload order
        analyses = analyses_by_image.get(image.pk, [])
        for analysis in analyses:
            thresholds.setdefault(image.modality, {}).update(thresholds_of(analysis.model_version))
        findings = []
        for finding in findings_by_image.get(image, []):
            limits = thresholds_of(finding.analysis.model_version) if finding.analysis_id else {}
            findings.append(
                _finding_data(finding, limits.get(finding.condition, 0.5) if finding.analysis_id else None, key)
            )
        images.append(
            {
                "id": str(image.pk),
                "modality": image.modality,
                "modality_label": image.get_modality_display(),
                "width": image.width,
                "height": image.height,
                "preview_url": reverse("patients:image", kwargs={"pk": image.pk}) + "?variant=preview",
                "preview_size": _preview_size(image.width, image.height),
                "original_url": reverse("patients:image", kwargs={"pk": image.pk}) + "?variant=original",
                "bit_depth": image.bit_depth,
                # 16-bit X-rays: the raw values and the window intake used for the preview (the viewer's start)
                "pixels_url": (
                    reverse("patients:image", kwargs={"pk": image.pk}) + "?variant=pixels16"
                    if image.bit_depth == 16
                    else None
                ),
                "window": [image.window_low, image.window_high] if image.window_low is not None else None,
                "add_url": reverse("api:image-finding-add", kwargs={"pk": image.pk}),
                "analyses": [
                    {
                        "id": str(a.pk),
                        "retry_url": reverse("api:analysis-retry", kwargs={"pk": a.pk}),
                        "status": a.status,
                        "model": a.clinic_model.model_id if a.clinic_model_id else a.model_version.model_id,
                        "failure_reason": a.failure_reason,
                        "not_assessable": (
                            {"code": a.not_assessable_code, "message": a.not_assessable_message}
                            if a.status == AnalysisStatus.NOT_ASSESSABLE
                            else None
                        ),
                        "unfamiliar": a.unfamiliar,
                    }
                    for a in analyses
                ],
                "findings": findings,
            }
        )
    for modality in {image["modality"] for image in images} - set(thresholds):
        try:
            thresholds[modality] = thresholds_of(model_version_active(modality))
        except ModelNotAvailable:
            thresholds[modality] = {}
    notation = settings.tooth_notation
    note = visit_note_get(visit)
    return {
        "previous": previous_visit_data(visit, images, notation),
        "visit": {"id": str(visit.pk), "date": visit.visit_date.isoformat()},
        "visit_note": {
            "text": note.text,
            "version": note.version,
            "updated_by": note.updated_by.email if note.updated_by_id else None,
        },
        "tooth_notation": notation,
        "notation_name": dict(teeth.NOTATIONS)[notation].split(":")[0],
        "teeth": teeth_data(notation),
        "chart_rows": {
            "permanent": [list(row) for row in teeth.chart_rows(primary=False)],
            "primary": [list(row) for row in teeth.chart_rows(primary=True)],
        },
        "surfaces": teeth.SURFACES,
        "locked": locked,
        "amendment_open": amendment is not None,
        "report": (
            {
                "version": latest.version,
                "signed_by": latest.signed_by.email,
                "signed_at": latest.signed_at.isoformat(),
            }
            if latest
            else None
        ),
        "images": images,
        "hide_unfamiliar": hide_unfamiliar,
        "thresholds": thresholds,
        "colours": {"conditions": conditions.colours(), "fallback": conditions.FALLBACK_COLOUR},
        "condition_names": {c.code: c.name for c in conditions.CONDITIONS.values()},
        "analysing": any(a["status"] in ACTIVE_STATUSES for image in images for a in image["analyses"]),
        "urls": {
            "finding_review": reverse("api:finding-review", kwargs={"pk": FINDING_PLACEHOLDER}),
            "finding_detail": reverse("api:finding-detail", kwargs={"pk": FINDING_PLACEHOLDER}),
            "visit_note": reverse("api:visit-note", kwargs={"pk": visit.pk}),
            "finding_placeholder": str(FINDING_PLACEHOLDER),
            "report": reverse("api:visit-report", kwargs={"pk": visit.pk}),
            "amend": reverse("api:visit-amendment", kwargs={"pk": visit.pk}),
            "analyses": reverse("api:analysis-list") + f"?visit={visit.pk}&page_size=200",
            "printable": reverse("analysis:report", kwargs={"pk": visit.pk}),
        },
        "reject_reasons": [[value, str(label)] for value, label in RejectReason.choices],
        "conditions": {modality: list(conditions.codes_for(modality)) for modality in conditions.MODALITIES},
        "can_review": can_review,
        "can_add": can_add,
        "can_sign": can_sign,
        "can_retry": can_retry,
    }


class VisitReviewView(ClinicView):
    """One visit: every image with its findings; decisions for dentists, read-only for others."""

    def get(self, request: HttpRequest, pk: str) -> HttpResponse:
        visit = get_object_or_404(Visit.objects.select_related("patient"), pk=pk)
        can_review = self.access.can("finding.review")
        data = review_data(
            visit,
            can_review=can_review,
            can_add=self.access.can("finding.add"),
            can_retry=self.access.can("image.upload"),
            can_sign=self.access.can("report.sign"),
        )
        audit.record(action="analysis.view", clinic_id=self.access.clinic.id, object_type="visit", object_id=visit.pk)
        context = {
            "visit": visit,
            "identity": patient_identity(visit.patient),
            "data": data,
            "can_review": can_review,
            "can_add": data["can_add"],
            "can_sign": data["can_sign"],
            "reject_reasons": RejectReason.choices,
        }
        return _no_store(render(request, "analysis/review.html", context))


class VisitChartView(ClinicView):
    """A visit's findings grouped by tooth, on an odontogram and as a list: problems (pathology and anatomy), the
    tooth's status (restorations and implants: earlier treatment, not problems), undecided AI suggestions, and the
    findings not yet linked to a tooth. Rejected findings are left out."""

    def get(self, request: HttpRequest, pk: str) -> HttpResponse:
        visit = get_object_or_404(Visit.objects.select_related("patient"), pk=pk)
        notation = analysis_settings().tooth_notation
        findings = []
        for number, (_image, shown) in enumerate(visit_findings(visit).items(), start=1):
            findings += [{**finding_dict(f), "image_number": number} for f in shown]
        grouped = group_by_tooth(findings, notation)
        marked = {t["fdi"]: t for t in grouped["teeth"]}
        arches = []
        for primary in (False, True):
            rows = []
            for row in teeth.chart_rows(primary=primary):
                cells = []
                for fdi in row:
                    tooth = teeth.get(fdi)
                    group = marked.get(fdi)
                    cells.append(
                        {
                            "fdi": fdi,
                            "label": tooth.label(notation),
                            "name": tooth.name,
                            "problems": len(group["problems"]) if group else 0,
                            "status": ", ".join(i["name"] for i in group["status"]) if group else "",
                            "pending": len(group["pending"]) if group else 0,
                        }
                    )
                rows.append(cells)
            if primary and not any(t["fdi"] in marked for t in (c for r in rows for c in r)):
                continue  # primary teeth only when one is charted
            arches.append({"primary": primary, "rows": rows})
        audit.record(action="chart.view", clinic_id=self.access.clinic.id, object_type="visit", object_id=visit.pk)
        context = {
            "visit": visit,
            "identity": patient_identity(visit.patient),
            "grouped": grouped,
            "arches": arches,
            "notation_name": dict(teeth.NOTATIONS)[notation].split(":")[0],
            "locked": visit_locked(visit),
        }
        return _no_store(render(request, "analysis/chart.html", context))


def _threshold_rows() -> tuple[list[dict[str, Any]], list[str]]:
    """Per modality and condition of the active models: model-card default and clinic value."""
    rows: list[dict[str, Any]] = []
    unavailable: list[str] = []
    for modality, label in ModelModality.choices:
        try:
            model = model_version_active(modality)
        except ModelNotAvailable:
            unavailable.append(str(label))
            continue
        custom = {row.condition: row.threshold for row in ConditionThreshold.objects.filter(modality=modality)}
        shown = [c for c in model.labels if c in model.thresholds] or list(model.thresholds)
        for condition in shown:
            default = model.thresholds.get(condition, 0.5)
            rows.append(
                {
                    "modality": modality,
                    "modality_label": str(label),
                    "model": model.model_id,
                    "condition": condition,
                    "default": default,
                    "current": custom.get(condition, default),
                    "custom": condition in custom,
                }
            )
    return rows, unavailable


class ThresholdsView(ClinicView):
    """The clinic's operating point per condition (clinic admins): below it a suggestion is not shown."""

    template_name = "analysis/thresholds.html"

    def _render(self, request: HttpRequest, *, error: str = "", status: int = 200) -> HttpResponse:
        rows, unavailable = _threshold_rows()
        context = {
            "rows": rows,
            "unavailable": unavailable,
            "error": error,
            "can_manage": self.access.can("thresholds.manage"),
        }
        return render(request, self.template_name, context, status=status)

    def get(self, request: HttpRequest) -> HttpResponse:
        return self._render(request)

    def post(self, request: HttpRequest) -> HttpResponse:
        modality = request.POST.get("modality", "")
        condition = request.POST.get("condition", "")
        action = request.POST.get("action", "set")
        rows, _ = _threshold_rows()
        row = next((r for r in rows if r["modality"] == modality and r["condition"] == condition), None)
        if row is None:
            return self._render(request, error="Choose a condition of an active model.", status=400)
        if action not in ("set", "reset"):
            return self._render(request, error="Unknown action.", status=400)
        value: float | None = None
        if action == "set":
            raw = request.POST.get("threshold", "").strip().rstrip("%").strip()
            try:
                value = float(raw)
            except ValueError:
                value = None
            if value is not None and request.POST.get("unit") == "percent":
                value = value / 100
            if value is None or value != value or not 0 < value < 1:  # value != value: NaN
                return self._render(
                    request, error=f"The threshold for {condition} must be a number between 0 and 1.", status=400
                )
            value = round(value, 4)
        with transaction.atomic():
            previous = ConditionThreshold.objects.select_for_update().filter(modality=modality, condition=condition)
            before = previous.first()
            if value is None:
                previous.delete()
            else:
                ConditionThreshold.objects.update_or_create(
                    modality=modality, condition=condition, defaults={"threshold": value}
                )
            audit.record(
                action="thresholds.update",
                clinic_id=self.access.clinic.id,
                object_type="threshold",
                object_id=f"{modality}/{condition}",
                details={
                    "modality": modality,
                    "condition": condition,
                    "model": row["model"],
                    "previous": before.threshold if before else None,
                    "threshold": value,
                    "default": row["default"],
                    "reset": value is None,
                },
            )
        if value is None:
            messages.success(request, f"{condition}: back to the model card's default ({row['default']:.0%}).")
        else:
            messages.success(request, f"{condition}: suggestions below {value:.0%} are no longer shown.")
        return redirect("analysis:thresholds")


class ReviewSettingsView(ClinicView):
    """How the clinic's people read tooth numbers (FDI, Universal or Palmer): clinic admins change it; findings keep
    FDI codes whatever it says, so changing it rewrites nothing."""

    def _render(self, request: HttpRequest, *, error: str = "", status: int = 200) -> HttpResponse:
        context = {
            "settings": analysis_settings(),
            "notations": teeth.NOTATIONS,
            "examples": {code: teeth.to_notation("16", code) for code in teeth.NOTATION_CODES},
            "error": error,
            "can_manage": self.access.can("thresholds.manage"),
        }
        return render(request, "analysis/review_settings.html", context, status=status)

    def get(self, request: HttpRequest) -> HttpResponse:
        return self._render(request)

    def post(self, request: HttpRequest) -> HttpResponse:
        choice = request.POST.get("tooth_notation", "")
        if choice not in teeth.NOTATION_CODES:
            return self._render(request, error="Choose FDI, Universal or Palmer.", status=400)
        with transaction.atomic():
            row, _ = AnalysisSettings.objects.select_for_update().get_or_create()
            before = row.tooth_notation
            row.tooth_notation, row.updated_at = choice, timezone.now()
            row.save(update_fields=["tooth_notation", "updated_at"])
            audit.record(
                action="analysis.settings.change",
                clinic_id=self.access.clinic.id,
                object_type="analysis_settings",
                object_id=row.pk,
                details={"tooth_notation": {"before": before, "after": choice}},
            )
        messages.success(request, f"Tooth numbers are now shown in {dict(teeth.NOTATIONS)[choice].split(':')[0]}.")
        return redirect("analysis:review-settings")


class AgreementPageView(ClinicView):
    """How often dentists confirm each condition's suggestions (PPV in practice), per model version."""

    def get(self, request: HttpRequest) -> HttpResponse:
        rows = agreement()
        labels = dict(RejectReason.choices)
        for row in rows:
            row["ppv_percent"] = None if row["ppv"] is None else round(row["ppv"] * 100, 1)
            row["reasons"] = [
                (str(labels.get(reason, reason or "unspecified")), n)
                for reason, n in sorted(row["rejected_by_reason"].items(), key=lambda item: -item[1])
            ]
        audit.record(action="monitoring.view", clinic_id=self.access.clinic.id, object_type="agreement")
        active = clinic_model_active("photo")
        context = {"rows": rows, "clinic_model": active, "clinic_rows": comparison_rows(active) if active else []}
        return render(request, "analysis/agreement.html", context)
