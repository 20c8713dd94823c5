"""Each clinic's own model, learned from its dentists' reviews, under change control.

Labels come from decisions already recorded, in the clinic in scope only (every query goes through the scoped
managers, and on PostgreSQL through row-level security): a confirmed or dentist-added finding is a positive; a
suggestion rejected as not present (or as the wrong condition) is a negative; on an image of a signed report,
a condition nobody confirmed or added is a negative. A reviewed image is one with at least one such label.

``clinic_model_train`` extracts the base model's features of the reviewed images, evaluates base and adapted
model on held-back reviewed images by 4-fold cross-validation (each image predicted by a correction fitted without
it; sensitivity, specificity, PPV per condition with 95% intervals), and fits the correction of
``analysis.ml.adapt`` on all of them. The result is a ``ClinicModel`` *candidate*: nothing changes for the clinic
until an admin activates it (``clinic_model_activate``); ``clinic_model_rollback`` goes back to the base model in
one action; ``clinic_model_shadow`` runs a candidate beside the active model and records how often they disagree.
Every step is audited.
"""

from __future__ import annotations

import hashlib
import io
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.db import transaction
from django.db.models import Max, Q
from django.utils import timezone
from PIL import Image as PILImage

from clinics import audit
from clinics.models import User
from clinics.services import ServiceError
from clinics.tenancy import require_clinic_id
from core import conditions as vocabulary
from core import crypto
from patients.keys import clinic_key
from patients.models import Image
from patients.services import image_read, image_read_model_input

from .ml import adapt, model_input
from .models import (
    ClinicModel,
    ClinicModelStatus,
    Finding,
    FindingStatus,
    RejectReason,
    Report,
)
from .registry import artifact_path, model_version_active, predictor, read_artifact

MIN_REVIEWED = 12  # fewer reviewed images than this: refused (too few to learn from and to evaluate)
FOLDS = 4
NEGATIVE_REASONS = (RejectReason.NOT_PRESENT, RejectReason.WRONG_CONDITION)


@dataclass
class Reviewed:
    image: Image
    labels: dict[str, int]  # condition code -> 1 present / 0 absent (conditions not decided are missing)


def reviewed_images(modality: str) -> list[Reviewed]:
    """The clinic's reviewed images of a modality with the labels its dentists' decisions give them."""
    codes = vocabulary.codes_for(modality)
    labels: dict[Any, dict[str, int]] = {}
    findings = Finding.objects.filter(image__modality=modality, condition__in=codes).values_list(
        "image_id", "condition", "status", "reason"
    )
    for image_id, condition, status, reason in findings:
        row = labels.setdefault(image_id, {})
        if status == FindingStatus.CONFIRMED:  # a model's confirmed suggestion, or one a dentist added and kept
            row[condition] = 1
        elif status == FindingStatus.REJECTED and reason in NEGATIVE_REASONS:
            row.setdefault(condition, 0)
    signed_visits = set(Report.objects.values_list("visit_id", flat=True))
    images = {
        image.pk: image
        for image in Image.objects.filter(modality=modality).select_related("patient").order_by("uploaded_at", "id")
    }
    for image in images.values():
        if image.visit_id in signed_visits:
            row = labels.setdefault(image.pk, {})
            for code in codes:
                row.setdefault(code, 0)
    return [Reviewed(images[pk], row) for pk, row in labels.items() if row and pk in images]


def _fold(key: object) -> int:
    return int(hashlib.sha256(str(key).encode()).hexdigest()[:8], 16) % FOLDS


def _folds(rows: list[Reviewed]) -> np.ndarray:
    """The cross-validation fold of each reviewed image: by patient, so retakes and other photos of one mouth are
    never on both sides (a near-duplicate in the training folds flatters the evaluation); by image where the clinic
    has reviewed fewer patients than folds."""
    patients = {row.image.patient_id for row in rows}
    if len(patients) >= FOLDS:
        return np.array([_fold(row.image.patient_id) for row in rows])
    return np.array([_fold(row.image.pk) for row in rows])


def _pixels(image: Image, model: Any) -> PILImage.Image:
    """The image as the model sees it: its model-input copy made for this model at upload, else the original."""
    data = image_read_model_input(image=image, spec=model_input.spec(model.meta)) or image_read(image=image)
    return PILImage.open(io.BytesIO(data)).convert("RGB")


def _targets(rows: list[Reviewed], labels: list[str]) -> np.ndarray:
    return np.array([[row.labels.get(code, np.nan) for code in labels] for row in rows], dtype=np.float32)


def _head_aad(clinic_model_id: object, clinic_id: object) -> bytes:
    return f"clinic-model-head:{clinic_model_id}:{clinic_id}".encode()


def clinic_model_train(*, modality: str = "photo", actor: User | None = None) -> ClinicModel:
    """Train, evaluate and register a candidate clinic model from the clinic's reviewed images."""
    if modality != "photo":
        raise ServiceError("modality_not_supported", "Only the photo model can be adapted to a clinic so far.", 400)
    clinic_id = require_clinic_id()
    base = model_version_active(modality)
    loaded = predictor(artifact_path(base))
    torch_model = getattr(loaded.loaded, "base", loaded.loaded)  # the PyTorch predictor under ONNX Runtime
    labels = list(loaded.labels)  # condition codes, in the model's output order
    rows = reviewed_images(modality)
    if len(rows) < MIN_REVIEWED:
        raise ServiceError(
            "not_enough_reviews",
            f"The clinic has {len(rows)} reviewed {modality} image(s); at least {MIN_REVIEWED} are needed "
            "(confirm or reject the AI's suggestions, or sign reports, to add more).",
            409,
        )
    started = time.perf_counter()
    features, base_logits = adapt.embed(torch_model, [_pixels(row.image, torch_model) for row in rows])
    targets = _targets(rows, labels)
    temperature = [float(torch_model.temperature[label]) for label in torch_model.labels]
    logit_bias = [float(torch_model.logit_bias[label]) for label in torch_model.labels]
    # the base artefact's settings and anchors (its own validation photos, fitted beside the clinic's reviews)
    options = adapt.fit_options(artifact_path(base), read_artifact(artifact_path(base)))
    # Evaluated by cross-validation over the reviewed images: each image is predicted by a model trained without
    # its fold (folds chosen by a hash of the patient id, so they are stable: ``_folds``); the model registered is
    # then trained on all of them.
    folds = _folds(rows)
    adapted_logits = np.zeros_like(base_logits)
    for fold in range(FOLDS):
        out = folds == fold
        if not out.any() or out.all():
            adapted_logits[out] = base_logits[out]
            continue
        fold_head = adapt.fit_head(
            features[~out], base_logits[~out], targets[~out], labels, temperature, logit_bias, **options
        )
        adapted_logits[out] = fold_head.logits(features[out], base_logits[out])
    head = adapt.fit_head(features, base_logits, targets, labels, temperature, logit_bias, **options)
    seconds = time.perf_counter() - started
    thresholds = [float(loaded.thresholds[code]) for code in labels]
    evaluation = {
        "method": f"{FOLDS}-fold cross-validation over the clinic's reviewed images (each predicted by a model "
        "trained without it); the registered model is trained on all of them",
        "held_back_images": len(rows),
        "thresholds": dict(zip(labels, thresholds, strict=True)),
        "base": adapt.rates(adapt.calibrated(base_logits, temperature, logit_bias), targets, thresholds, labels),
        "adapted": adapt.rates(adapt.calibrated(adapted_logits, temperature, logit_bias), targets, thresholds, labels),
    }
    counts = {
        "reviewed_images": len(rows),
        "trained_on": len(rows),
        "held_back": len(rows),
        "folds": FOLDS,
        # the base model's own validation photos the correction is fitted beside (not the clinic's, not counted)
        "anchors": int(len(options["anchors"].targets)) if "anchors" in options else 0,
        "positives": {code: int(np.nansum(targets[:, i] == 1)) for i, code in enumerate(labels)},
        "negatives": {code: int(np.nansum(targets[:, i] == 0)) for i, code in enumerate(labels)},
    }
    data = head.to_bytes()
    with transaction.atomic():
        version = (ClinicModel.objects.filter(modality=modality).aggregate(v=Max("version"))["v"] or 0) + 1
        model = ClinicModel(
            parent=base,
            modality=modality,
            version=version,
            labels=labels,
            head_sha256=hashlib.sha256(data).hexdigest(),
            data_counts=counts,
            evaluation=evaluation,
            training_seconds=round(seconds, 3),
            trained_by=actor,
        )
        model.head = crypto.encrypt(clinic_key(), data, _head_aad(model.pk, clinic_id))
        model.save()
        audit.record(
            action="clinic_model.train",
            clinic_id=clinic_id,
            object_type="clinic_model",
            object_id=model.pk,
            details={"model": model.model_id, "trained_on": counts["trained_on"], "held_back": counts["held_back"]},
        )
    return model


def clinic_head(model: ClinicModel) -> adapt.ClinicHead:
    """The decrypted head of a clinic model (checked against its digest)."""
    clinic_id = require_clinic_id()
    data = crypto.decrypt(clinic_key(), bytes(model.head), _head_aad(model.pk, clinic_id))
    if hashlib.sha256(data).hexdigest() != model.head_sha256:
        raise ServiceError("clinic_model_corrupt", "The clinic model's stored head does not match its digest.", 500)
    return adapt.ClinicHead.from_bytes(data)


def clinic_models_in_use(modality: str) -> bool:
    """Whether the clinic has an active or a shadowed model of that modality (one query)."""
    return (
        ClinicModel.objects.filter(modality=modality)
        .filter(Q(status=ClinicModelStatus.ACTIVE) | Q(shadow=True))
        .exists()
    )


def clinic_model_active(modality: str) -> ClinicModel | None:
    active = ClinicModel.objects.filter(modality=modality, status=ClinicModelStatus.ACTIVE)
    return active.select_related("parent").first()


def clinic_model_shadowed(modality: str) -> ClinicModel | None:
    return ClinicModel.objects.filter(modality=modality, shadow=True).select_related("parent").first()


@transaction.atomic
def clinic_model_activate(*, model: ClinicModel) -> ClinicModel:
    """Make a candidate the clinic's active model of its modality (the one active before is retired)."""
    model = ClinicModel.objects.select_for_update().get(pk=model.pk)
    if model.parent_id != model_version_active(model.modality).pk:
        raise ServiceError(
            "parent_not_active",
            "This clinic model was adapted from a base model that is no longer active; train a new one.",
            409,
        )
    if model.status == ClinicModelStatus.ACTIVE:
        return model
    previous = clinic_model_active(model.modality)
    if previous is not None:
        ClinicModel.objects.filter(pk=previous.pk).update(status=ClinicModelStatus.RETIRED)
    model.status = ClinicModelStatus.ACTIVE
    model.shadow = False
    model.activated_at = timezone.now()
    model.save(update_fields=["status", "shadow", "activated_at"])
    audit.record(
        action="clinic_model.activate",
        clinic_id=require_clinic_id(),
        object_type="clinic_model",
        object_id=model.pk,
        details={"model": model.model_id, "replaces": previous.model_id if previous else model.parent.model_id},
    )
    return model


@transaction.atomic
def clinic_model_rollback(*, modality: str) -> ClinicModel | None:
    """Back to the base model in one action: the active clinic model (if any) is retired. Returns it."""
    active = clinic_model_active(modality)
    if active is None:
        return None
    ClinicModel.objects.filter(pk=active.pk).update(status=ClinicModelStatus.RETIRED)
    audit.record(
        action="clinic_model.rollback",
        clinic_id=require_clinic_id(),
        object_type="clinic_model",
        object_id=active.pk,
        details={"model": active.model_id, "now": active.parent.model_id},
    )
    return active


@transaction.atomic
def clinic_model_shadow(*, model: ClinicModel, on: bool) -> ClinicModel:
    """Run a candidate beside the active model (its output recorded, never shown), or stop doing so."""
    if on and model.status == ClinicModelStatus.ACTIVE:
        raise ServiceError("already_active", "The active model cannot also run in shadow mode.", 409)
    if on:
        ClinicModel.objects.filter(modality=model.modality, shadow=True).exclude(pk=model.pk).update(shadow=False)
    ClinicModel.objects.filter(pk=model.pk).update(shadow=on)
    model.shadow = on
    audit.record(
        action="clinic_model.shadow_on" if on else "clinic_model.shadow_off",
        clinic_id=require_clinic_id(),
        object_type="clinic_model",
        object_id=model.pk,
        details={"model": model.model_id},
    )
    return model


def shadow_summary(model: ClinicModel) -> dict[str, Any]:
    """How often the shadowed model's findings differed from what was shown, over the analyses it ran on."""
    rows = list(model.shadow_analyses.exclude(shadow_disagrees=None).values_list("shadow_disagrees", flat=True))
    rate = round(sum(rows) / len(rows), 4) if rows else None
    return {"analyses": len(rows), "disagreements": sum(rows), "rate": rate}


def clinic_scores(
    model: ClinicModel, features: np.ndarray, base_logits: np.ndarray, torch_model: Any
) -> list[dict[str, float]]:
    """Calibrated scores of a clinic model for a batch, keyed by condition code."""
    head = clinic_head(model)
    temperature = [float(torch_model.temperature[label]) for label in torch_model.labels]
    logit_bias = [float(torch_model.logit_bias[label]) for label in torch_model.labels]
    probs = adapt.calibrated(head.logits(features, base_logits), temperature, logit_bias)
    return [dict(zip(head.labels, map(float, row), strict=True)) for row in probs]


def clinic_results(
    results: list[dict[str, Any]],
    pixels: list[PILImage.Image],
    loaded: Any,
    base: Any,
    floor: float,
    thresholds: dict[str, float],
) -> list[dict[str, Any]]:
    """The base model's ``results`` (predicted with every condition's map, ``min_probability=0``) turned into
    what the clinic sees: the active clinic model's scores (its findings keep the base model's location maps),
    and, when a candidate runs in shadow mode, its scores and whether the findings shown would have differed.
    Without a clinic model of that base model, the base results cut at ``floor``."""
    active = clinic_model_active(base.modality)
    shadow = clinic_model_shadowed(base.modality)
    active = active if active is not None and active.parent_id == base.pk else None
    shadow = shadow if shadow is not None and shadow.parent_id == base.pk else None
    out = [dict(r, findings=[f for f in r["findings"] if f["probability"] >= floor]) for r in results]
    if active is None and shadow is None:
        return out
    torch_model = getattr(loaded.loaded, "base", loaded.loaded)  # the PyTorch predictor under ONNX Runtime
    features, base_logits = adapt.embed(torch_model, pixels)
    active_scores = clinic_scores(active, features, base_logits, torch_model) if active else None
    shadow_scores = clinic_scores(shadow, features, base_logits, torch_model) if shadow else None
    for i, (result, shown) in enumerate(zip(results, out, strict=True)):
        if result.get("gate") and not result["gate"].get("assessable", True):
            continue
        if active_scores is not None:
            maps = {f["condition"]: f for f in result["findings"]}
            scores = active_scores[i]
            findings = [{**maps[code], "probability": p} for code, p in scores.items() if p >= floor and code in maps]
            findings.sort(key=lambda f: -f["probability"])
            shown.update(scores=scores, findings=findings, clinic_model_id=active.pk)
        if shadow_scores is not None:
            visible = {c for c, p in shown["scores"].items() if p >= thresholds.get(c, 0.5)}
            candidate = {c for c, p in shadow_scores[i].items() if p >= thresholds.get(c, 0.5)}
            shown.update(
                shadow_model_id=shadow.pk,
                shadow_scores={c: round(p, 6) for c, p in shadow_scores[i].items()},
                shadow_disagrees=visible != candidate,
            )
    return out
