"""Each clinic's own model: learned only from that clinic's reviewed images, evaluated against the base model on
held-back reviewed images, a candidate until an admin activates it, rolled back in one action, run in shadow
mode beside the active model; every step audited."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from PIL import Image as PILImage

from analysis.adaptation import (
    MIN_REVIEWED,
    clinic_model_activate,
    clinic_model_rollback,
    clinic_model_shadow,
    clinic_model_train,
    reviewed_images,
)
from analysis.models import Analysis, ClinicModel, Finding
from analysis.registry import model_register
from analysis.services import analysis_execute
from clinics.models import AuditEvent
from clinics.services import ServiceError
from clinics.tenancy import clinic_scope
from patients.services import image_ingest, patient_create
from tests.ml.conftest import random_artifact  # noqa: F401 - fixture

from ..conftest import World, fixture_model_version, user_client


@pytest.fixture
def base_model(random_artifact: Path, db: object):  # noqa: F811, ANN201
    return model_register(artifact_dir=random_artifact)


def _photo(seed: int, reddish: bool) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, size=(48, 64, 3)).astype(np.float64)
    if reddish:  # the "diseased" images share a cast the clinic's reviews can teach
        arr[..., 0] = 200 + arr[..., 0] / 5
        arr[..., 1] /= 3
    out = io.BytesIO()
    PILImage.fromarray(arr.astype(np.uint8)).save(out, "PNG")
    return out.getvalue()


def reviewed_clinic(world: World, model, n: int = 20, seed: int = 0) -> list:  # noqa: ANN001
    """n photos of the world's patient, each with a caries suggestion: confirmed on the reddish half, rejected
    as not present on the rest."""
    images = []
    with clinic_scope(world.clinic.id):
        for i in range(n):
            diseased = i % 2 == 0
            image = image_ingest(
                patient=world.patient,
                stream=io.BytesIO(_photo(seed + i, diseased)),
                filename=f"p{i}.png",
                size=None,
                modality="photo",
            )
            analysis = Analysis.objects.create(
                image=image, model_version=model, status="done", input_sha256=image.sha256
            )
            Finding.objects.create(
                analysis=analysis,
                image=image,
                condition="caries",
                probability=0.8,
                status="confirmed" if diseased else "rejected",
                reason="" if diseased else "not_present",
                reviewed_by=world.users["dentist"],
            )
            images.append(image)
    return images


def test_labels_come_from_the_clinic_s_own_decisions(alice: World, bob: World, base_model) -> None:  # noqa: ANN001
    mine = reviewed_clinic(alice, base_model, n=6)
    reviewed_clinic(bob, base_model, n=8, seed=100)
    with clinic_scope(alice.clinic.id):
        rows = {r.image.pk: r.labels for r in reviewed_images("photo")}
    assert set(rows) <= {i.pk for i in mine} | {alice.image.pk}
    assert {rows[i.pk]["caries"] for i in mine} == {0, 1}
    # a suggestion nobody decided on teaches nothing
    assert alice.image.pk not in rows


def test_too_few_reviews_is_refused_with_a_clear_message(alice: World, base_model) -> None:  # noqa: ANN001
    reviewed_clinic(alice, base_model, n=MIN_REVIEWED - 2)
    with clinic_scope(alice.clinic.id), pytest.raises(ServiceError) as refused:
        clinic_model_train(modality="photo")
    assert refused.value.code == "not_enough_reviews"
    with pytest.raises(CommandError, match="at least"):
        call_command("adapt_model", clinic=str(alice.clinic.id), modality="photo", json=True)


def test_train_evaluate_activate_rollback_and_shadow(alice: World, base_model) -> None:  # noqa: ANN001
    images = reviewed_clinic(alice, base_model, n=20)
    out = io.StringIO()
    call_command("adapt_model", clinic=str(alice.clinic.id), modality="photo", json=True, stdout=out)
    result = json.loads(out.getvalue())
    assert result["model"].startswith("photo-test@0.0.1+clinic.") and result["activated"] is False
    # cross-validated: every reviewed image is held back once (predicted by a model trained without it)
    assert result["trained_on"] == result["held_back"] == 20
    assert set(result["base"]["caries"]) >= {"sensitivity", "specificity", "ppv"}
    assert set(result["adapted"]) == set(result["base"]) == {"caries", "gingivitis", "calculus", "ulcer"}
    with clinic_scope(alice.clinic.id):
        candidate = ClinicModel.objects.get()
        assert candidate.status == "candidate" and candidate.parent_id == base_model.pk
        assert not bytes(candidate.head).startswith(b"PK")  # encrypted, not the plain npz
        assert candidate.data_counts["positives"]["caries"] == candidate.data_counts["negatives"]["caries"] == 10
        # a candidate changes nothing for the clinic
        fresh = _rerun(images[1], base_model)
        assert fresh.status == "done" and fresh.clinic_model_id is None
        base_scores = fresh.scores

        clinic_model_activate(model=candidate)
        again = _rerun(images[1], base_model)
        assert again.clinic_model_id == candidate.pk and again.scores != base_scores
        assert set(again.scores) == set(base_scores)

        retired = clinic_model_rollback(modality="photo")
        assert retired.pk == candidate.pk
        assert ClinicModel.objects.get(pk=candidate.pk).status == "retired"
        assert _rerun(images[1], base_model).clinic_model_id is None

        clinic_model_shadow(model=candidate, on=True)
        shadowed = _rerun(images[1], base_model)
        assert shadowed.clinic_model_id is None and shadowed.shadow_model_id == candidate.pk
        assert set(shadowed.shadow_scores) == set(base_scores) and shadowed.shadow_disagrees is not None
    actions = set(AuditEvent.unscoped.filter(object_id=str(candidate.pk)).values_list("action", flat=True))
    assert {"clinic_model.train", "clinic_model.activate", "clinic_model.rollback", "clinic_model.shadow_on"} <= actions


def _rerun(image, model) -> Analysis:  # noqa: ANN001
    Analysis.objects.filter(image=image).delete()
    analysis = Analysis.objects.create(image=image, model_version=model, input_sha256="x" * 64)
    analysis_execute(analysis_id=analysis.pk)
    return Analysis.objects.get(pk=analysis.pk)


def test_one_clinic_s_model_never_sees_another_clinic_s_images(alice: World, bob: World, base_model) -> None:  # noqa: ANN001
    mine = {str(i.pk) for i in reviewed_clinic(alice, base_model, n=14)}
    theirs = {str(i.pk) for i in reviewed_clinic(bob, base_model, n=14, seed=500)}
    first = AuditEvent.unscoped.order_by("-id").values_list("id", flat=True).first()
    with clinic_scope(alice.clinic.id):
        model = clinic_model_train(modality="photo")
    assert model.data_counts["reviewed_images"] == 14
    read = set(
        AuditEvent.unscoped.filter(id__gt=first, action__startswith="image.").values_list("object_id", flat=True)
    )
    assert read and read <= mine and not read & theirs
    with clinic_scope(bob.clinic.id):
        assert not ClinicModel.objects.exists()  # alice's model is not bob's


def test_only_admins_change_the_clinic_model_and_the_page_shows_the_comparison(alice: World, base_model) -> None:  # noqa: ANN001
    reviewed_clinic(alice, base_model, n=16)
    with clinic_scope(alice.clinic.id):
        candidate = clinic_model_train(modality="photo")
    dentist = user_client(alice.users["dentist"])
    refused = dentist.post(reverse("analysis:clinic-model"), {"action": "activate", "model": candidate.pk})
    assert refused.status_code == 403
    admin = user_client(alice.users["clinic_admin"])
    page = admin.get(reverse("analysis:clinic-model"))
    assert page.status_code == 200 and candidate.model_id.encode() in page.content and b"Sensitivity" in page.content
    answer = admin.post(reverse("analysis:clinic-model"), {"action": "activate", "model": candidate.pk})
    assert answer.status_code == 302
    agreement = admin.get(reverse("analysis:agreement"))
    assert b"clinic-model-comparison" in agreement.content and candidate.model_id.encode() in agreement.content
    with clinic_scope(alice.clinic.id):
        assert ClinicModel.objects.get(pk=candidate.pk).status == "active"
    assert b'data-testid="clinic-model-outdated"' not in admin.get(reverse("analysis:clinic-model")).content
    # the base model was replaced since: the clinic model no longer runs, and the page says so
    with clinic_scope(alice.clinic.id):
        parent = ClinicModel.objects.get(pk=candidate.pk).parent_id
        ClinicModel.objects.filter(pk=candidate.pk).update(parent=fixture_model_version())
    outdated = admin.get(reverse("analysis:clinic-model")).content
    assert b'data-testid="clinic-model-outdated"' in outdated and b"Clinic model in use" not in outdated
    with clinic_scope(alice.clinic.id):
        ClinicModel.objects.filter(pk=candidate.pk).update(parent=parent)
    assert admin.post(reverse("analysis:clinic-model"), {"action": "rollback"}).status_code == 302
    with clinic_scope(alice.clinic.id):
        assert ClinicModel.objects.get(pk=candidate.pk).status == "retired"
    assert admin.post(reverse("analysis:clinic-model"), {"action": "unfamiliar", "choice": "hide"}).status_code == 302
    assert AuditEvent.unscoped.filter(action="analysis.settings.change", clinic_id=alice.clinic.id).exists()


def test_a_finding_a_dentist_added_then_rejected_is_not_a_positive(alice: World, base_model) -> None:  # noqa: ANN001
    [image] = reviewed_clinic(alice, base_model, n=1, seed=7)  # a reddish photo with caries confirmed
    with clinic_scope(alice.clinic.id):
        Finding.objects.create(
            image=image,
            source="clinician",
            condition="calculus",
            status="rejected",
            reason="not_present",
            reviewed_by=alice.users["dentist"],
        )
        [row] = [r for r in reviewed_images("photo") if r.image.pk == image.pk]
    assert row.labels["caries"] == 1 and row.labels["calculus"] == 0


def test_cross_validation_keeps_each_patients_photos_in_one_fold(alice: World, base_model) -> None:  # noqa: ANN001
    from analysis.adaptation import FOLDS, Reviewed, _folds

    with clinic_scope(alice.clinic.id):
        others = [
            patient_create(
                external_id=f"fold-{n}", given_name="Fold", family_name=f"P{n}", date_of_birth=dt.date(1990, 1, n + 1)
            )
            for n in range(FOLDS + 2)
        ]
        images = [
            image_ingest(patient=p, stream=io.BytesIO(_photo(n, False)), filename="r.png", size=None, modality="photo")
            for n, p in enumerate(others * 3)  # three photos (retakes) of each patient
        ]
    folds = _folds([Reviewed(image, {"caries": 0}) for image in images])
    by_patient: dict = {}
    for image, fold in zip(images, folds, strict=True):
        by_patient.setdefault(image.patient_id, set()).add(int(fold))
    assert all(len(f) == 1 for f in by_patient.values()) and len({int(f) for f in folds}) > 1
