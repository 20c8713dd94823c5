"""The clinic model page (clinic admins): the base model, the clinic's own adapted models with their evaluation
against the base on the clinic's held-back reviewed images, and the actions that change what dentists see --
train a candidate, activate it, roll back to the base, run a candidate in shadow mode -- plus whether findings
of unfamiliar images are shown. Every action is audited by the service it calls; each POST redirects."""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib import messages
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone

from clinics import audit
from clinics.services import ServiceError
from clinics.views_base import ClinicView
from core import conditions

from .adaptation import (
    MIN_REVIEWED,
    clinic_model_activate,
    clinic_model_rollback,
    clinic_model_shadow,
    reviewed_images,
    shadow_summary,
)
from .models import AnalysisSettings, ClinicModel, ClinicModelStatus, UnfamiliarFindings
from .queue import ADAPT_MODEL, task_send
from .registry import ModelNotAvailable, model_version_active
from .selectors import analysis_settings

MODALITY = "photo"
RATES = ("sensitivity", "specificity", "ppv")


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.0f}%"


def _interval(ci: list[float] | None) -> str:
    return "" if not ci else f"{ci[0] * 100:.0f}–{ci[1] * 100:.0f}%"


def comparison_rows(model: ClinicModel) -> list[dict[str, Any]]:
    """Per condition, base and adapted rates on the held-back images, formatted for the page."""
    rows = []
    for code in model.labels:
        base = model.evaluation.get("base", {}).get(code, {})
        adapted = model.evaluation.get("adapted", {}).get(code, {})
        row: dict[str, Any] = {
            "code": code,
            "name": conditions.get(code).name if code in conditions.CONDITIONS else code,
            "positives": base.get("positives", 0),
            "negatives": base.get("negatives", 0),
        }
        for rate in RATES:
            row[rate] = {
                "base": _percent(base.get(rate)),
                "base_ci": _interval(base.get(f"{rate}_ci")),
                "adapted": _percent(adapted.get(rate)),
                "adapted_ci": _interval(adapted.get(f"{rate}_ci")),
            }
        rows.append(row)
    return rows


class ClinicModelView(ClinicView):
    """POST ``action``: ``train``, ``activate`` / ``shadow_on`` / ``shadow_off`` (``model``: its id), ``rollback``,
    or ``unfamiliar`` (``choice``: show or hide)."""

    template_name = "analysis/clinic_model.html"

    def get(self, request: HttpRequest) -> HttpResponse:
        try:
            base = model_version_active(MODALITY)
        except ModelNotAvailable:
            base = None
        models = list(ClinicModel.objects.filter(modality=MODALITY).select_related("parent", "trained_by"))
        for model in models:
            model.rows = comparison_rows(model)  # type: ignore[attr-defined]
            model.negatives_base = model.evaluation.get("base", {}).get("any_finding_on_negatives")  # type: ignore[attr-defined]
            model.negatives_adapted = model.evaluation.get("adapted", {}).get("any_finding_on_negatives")  # type: ignore[attr-defined]
            model.shadow_stats = shadow_summary(model)  # type: ignore[attr-defined]
        audit.record(action="monitoring.view", clinic_id=self.access.clinic.id, object_type="clinic_model")
        active = next((m for m in models if m.status == ClinicModelStatus.ACTIVE), None)
        context = {
            "base": base,
            "models": models,
            "active": active,
            # made from another base model than the one in use now: the worker runs the base model alone
            "active_outdated": active is not None and base is not None and active.parent_id != base.pk,
            "reviewed": len(reviewed_images(MODALITY)),
            "min_reviewed": MIN_REVIEWED,
            "settings": analysis_settings(),
            "unfamiliar_choices": UnfamiliarFindings.choices,
            "can_manage": self.access.can("model.manage"),
        }
        return render(request, self.template_name, context)

    def post(self, request: HttpRequest) -> HttpResponse:
        action = request.POST.get("action", "")
        try:
            if action == "train":
                reviewed = len(reviewed_images(MODALITY))
                if reviewed < MIN_REVIEWED:
                    raise ServiceError(
                        "not_enough_reviews",
                        f"{reviewed} reviewed photo(s); at least {MIN_REVIEWED} are needed to train a clinic model.",
                    )
                clinic_id, user_id = str(self.access.clinic.id), str(self.access.user.pk)
                transaction.on_commit(lambda: task_send(ADAPT_MODEL, clinic_id, user_id, MODALITY))
                messages.success(
                    request, "Training queued: the new candidate appears below when it is ready (reload the page)."
                )
            elif action == "rollback":
                retired = clinic_model_rollback(modality=MODALITY)
                messages.success(
                    request,
                    f"Rolled back: {retired.model_id} retired, the base model is in use."
                    if retired
                    else "The base model is already in use.",
                )
            elif action in ("activate", "shadow_on", "shadow_off"):
                model = self._model(request.POST.get("model", ""))
                if action == "activate":
                    clinic_model_activate(model=model)
                    messages.success(request, f"{model.model_id} is now active: new analyses use it.")
                else:
                    clinic_model_shadow(model=model, on=action == "shadow_on")
                    messages.success(
                        request,
                        f"{model.model_id} runs in shadow mode beside the model in use."
                        if action == "shadow_on"
                        else f"Shadow mode of {model.model_id} stopped.",
                    )
            elif action == "unfamiliar":
                self._unfamiliar(request.POST.get("choice", ""))
                messages.success(request, "Setting saved.")
            else:
                raise ServiceError("unknown_action", "Unknown action.")
        except ServiceError as exc:
            messages.error(request, exc.message)
        return redirect("analysis:clinic-model")

    def _unfamiliar(self, choice: str) -> None:
        if choice not in UnfamiliarFindings.values:
            raise ServiceError("invalid_choice", "Choose show or hide.")
        with transaction.atomic():
            row, _ = AnalysisSettings.objects.select_for_update().get_or_create()
            before = row.unfamiliar_findings
            row.unfamiliar_findings = choice
            row.updated_at = timezone.now()
            row.save(update_fields=["unfamiliar_findings", "updated_at"])
            audit.record(
                action="analysis.settings.change",
                clinic_id=self.access.clinic.id,
                object_type="analysis_settings",
                object_id=row.pk,
                details={"unfamiliar_findings": {"before": before, "after": choice}},
            )

    @staticmethod
    def _model(raw: str) -> ClinicModel:
        """The clinic's model with this id; another clinic's, a missing one or a malformed id: 404."""
        try:
            return ClinicModel.objects.select_related("parent").get(pk=uuid.UUID(raw))
        except (ValueError, ClinicModel.DoesNotExist) as exc:
            raise Http404 from exc
