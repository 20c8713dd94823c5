"""One vocabulary of conditions: every shipped model's labels map onto the platform's codes at registration, and
each code has its colour on screen, its words in the report glossary, its FHIR coding and one agreement row."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.urls import reverse

from analysis.fhir import condition_code
from analysis.models import Analysis, ConditionThreshold, Finding, FindingDecision, ModelVersion
from analysis.monitoring import agreement
from analysis.registry import CodedPredictor, ModelNotAvailable, model_register, read_artifact, shipped_artifacts
from analysis.report_wording import render_html_context
from clinics.rls import app_role_grants_sql
from clinics.tenancy import clinic_scope
from core import conditions
from tests.conftest import APP_ROLE, World, user_client

SHIPPED = [path for modality in conditions.MODALITIES for path in shipped_artifacts(modality)]


def test_every_shipped_model_is_found() -> None:
    assert {p.parent.name for p in SHIPPED} == {"photo", "xray"}
    assert len(SHIPPED) >= 2


@pytest.mark.parametrize("artifact", SHIPPED, ids=lambda p: f"{p.parent.name}-{p.name}")
def test_every_label_of_every_shipped_model_maps_to_a_code_of_its_modality(artifact: Path) -> None:
    meta = read_artifact(artifact)
    codes = meta["condition_codes"]
    assert set(codes) == set(meta["labels"])
    assert all(conditions.get(code).modality == meta["modality"] for code in codes.values())
    # every condition the platform reports on that modality is covered by the model (none silently dropped)
    assert sorted(codes.values()) == sorted(conditions.codes_for(meta["modality"]))


def test_codes_are_lowercase_snake_case_with_a_known_kind() -> None:
    for code, condition in conditions.CONDITIONS.items():
        assert conditions.CODE_PATTERN.match(code) and condition.code == code
        assert condition.kind in conditions.KINDS and condition.modality in conditions.MODALITIES
    assert conditions.get("filling").kind == "restoration" and conditions.get("cavity").kind == "pathology"


def _copy(artifact: Path, tmp_path: Path, **changes: Any) -> Path:
    target = tmp_path / artifact.name
    shutil.copytree(artifact, target, ignore=shutil.ignore_patterns("plots", "*.md"))
    meta = json.loads((target / "model.json").read_text())
    meta.update(changes)
    (target / "model.json").write_text(json.dumps(meta))
    return target


@pytest.mark.django_db
def test_registration_refuses_a_model_with_an_unmapped_label(tmp_path: Path) -> None:
    xray = shipped_artifacts("xray")[-1]
    meta = json.loads((xray / "model.json").read_text())
    partial = {k: v for k, v in meta["condition_codes"].items() if k != "Implant"}
    with pytest.raises(ModelNotAvailable, match="'Implant' has no entry in condition_codes"):
        model_register(artifact_dir=_copy(xray, tmp_path, condition_codes=partial, version="9.9.1"))
    wrong = {**meta["condition_codes"], "Implant": "caries"}  # a photo condition
    with pytest.raises(ModelNotAvailable, match="a photo condition"):
        model_register(artifact_dir=_copy(xray, tmp_path / "b", condition_codes=wrong, version="9.9.2"))
    unknown = {**meta["condition_codes"], "Implant": "Implant"}
    with pytest.raises(ModelNotAvailable, match="not a condition code"):
        model_register(artifact_dir=_copy(xray, tmp_path / "c", condition_codes=unknown, version="9.9.3"))
    assert not ModelVersion.objects.filter(version__startswith="9.9.").exists()


@pytest.mark.django_db
def test_registration_stores_codes_and_the_loaded_model_speaks_them() -> None:
    model = model_register(artifact_dir=shipped_artifacts("xray")[-1], activate=False)
    assert model.labels == ["cavity", "filling", "impacted_tooth", "implant"]
    assert set(model.thresholds) == set(model.labels)

    class Loaded:  # what analysis.ml's X-ray predictor returns, in its own labels
        labels = ["Cavity", "Fillings", "Impacted Tooth", "Implant"]
        thresholds = {"Cavity": 0.47, "Fillings": 0.52, "Impacted Tooth": 0.49, "Implant": 0.53}

        def predict(self, images: list, **options: Any) -> list[dict]:
            return [
                {
                    "scores": {"Cavity": 0.9, "Fillings": 0.2, "Impacted Tooth": 0.0, "Implant": 0.1},
                    "findings": [{"condition": "Impacted Tooth", "probability": 0.7, "box": [0, 0, 1, 1]}],
                }
                for _ in images
            ]

    coded = CodedPredictor(Loaded(), read_artifact(shipped_artifacts("xray")[-1])["condition_codes"])
    [result] = coded.predict([object()])
    assert result["scores"] == {"cavity": 0.9, "filling": 0.2, "impacted_tooth": 0.0, "implant": 0.1}
    assert result["findings"][0]["condition"] == "impacted_tooth"
    assert coded.labels == model.labels
    assert coded.thresholds == {"cavity": 0.47, "filling": 0.52, "impacted_tooth": 0.49, "implant": 0.53}


@pytest.mark.parametrize("artifact", SHIPPED, ids=lambda p: f"{p.parent.name}-{p.name}")
def test_each_label_has_colour_glossary_and_fhir_coding(artifact: Path) -> None:
    meta = read_artifact(artifact)
    for label, code in meta["condition_codes"].items():
        condition = conditions.get(code)
        assert conditions.colour(code) == condition.colour != conditions.FALLBACK_COLOUR
        report = {"images": [{"id": "i", "modality": meta["modality"], "findings": [_confirmed(code)]}]}
        content = render_html_context(report)
        [shown] = content["images"][0]["findings"]
        assert shown["explanation"] == condition.explanation and shown["colour"] == condition.colour, label
        glossary = content["explanations"]
        if condition.kind == conditions.RESTORATION:  # earlier treatment: the tooth's status, not a problem
            assert glossary == [] and shown["restoration"], label
        else:
            assert [entry["condition"] for entry in glossary] == [code], label
            assert glossary[0]["explanation"] == condition.explanation and glossary[0]["colour"] == condition.colour
        coded = condition_code(code)
        if condition.snomed:
            assert coded["coding"][0]["code"] == condition.snomed[0]
        else:
            assert coded == {"text": condition.fhir_text}


def _confirmed(code: str) -> dict[str, Any]:
    return {"id": "f", "condition": code, "status": "confirmed", "box": [0.1, 0.1, 0.2, 0.2], "source": "model"}


@pytest.mark.django_db
def test_review_page_sends_every_code_with_its_colour_and_name(alice: World) -> None:
    page = user_client(alice.users["dentist"]).get(reverse("analysis:review", kwargs={"pk": alice.image.visit_id}))
    assert page.status_code == 200
    payload = page.context["data"]
    assert payload["colours"]["conditions"] == conditions.colours()
    assert payload["condition_names"]["impacted_tooth"] == "Impacted tooth"
    assert payload["conditions"] == {m: list(conditions.codes_for(m)) for m in conditions.MODALITIES}
    assert '<script id="review-data" type="application/json">' in page.content.decode()


@pytest.mark.django_db
def test_an_ai_cavity_and_a_dentists_cavity_are_one_agreement_row(alice: World) -> None:
    xray = model_register(artifact_dir=shipped_artifacts("xray")[-1], activate=False)
    with clinic_scope(alice.clinic.id):
        analysis = Analysis.objects.create(image=alice.image, model_version=xray, status="done", input_sha256="0" * 64)
        for code in xray.labels:  # the AI's suggestion, confirmed, and the dentist's own finding of the same code
            Finding.objects.create(
                analysis=analysis, image=alice.image, condition=code, probability=0.9, status="confirmed"
            )
            Finding.objects.create(image=alice.image, source="clinician", condition=code, status="confirmed")
        rows = {row["condition"]: row for row in agreement() if row["model"] == xray.model_id}
    assert set(rows) == set(conditions.codes_for("xray"))
    assert all(row["confirmed"] == 1 and row["added_by_clinicians"] == 1 for row in rows.values())


@pytest.mark.django_db(transaction=True)
@contextmanager
def as_table_owner() -> Iterator[None]:
    """Migrations are run by the role that owns the tables (``manage.py migrate``), not by the application role the
    suite works as on PostgreSQL; step back to the login role for them."""
    if connection.vendor != "postgresql":
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_user")
        app_role = cursor.fetchone()[0]
        cursor.execute("RESET ROLE")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('role', %s, false)", [app_role])


def test_migration_rewrites_stored_names_to_codes(transactional_db: None, alice: World) -> None:
    # transactional: on SQLite, unapplying later migrations rebuilds tables, which cannot happen inside the
    # transaction a plain test runs in. Rows are written with the models as they were at 0005 (the schema then).
    old = ("analysis", "0005_report_amends_restrict")
    with as_table_owner():
        executor = MigrationExecutor(connection)
        executor.migrate([old])
        state = executor.loader.project_state(old).apps
    try:
        clinic = {"clinic_id": alice.clinic.id}
        with clinic_scope(alice.clinic.id):
            legacy = state.get_model("analysis", "ModelVersion")._base_manager.create(
                name="xray-legacy",
                version="1.0.0",
                modality="xray",
                artifact_dir="/nonexistent",
                weights_sha256="0" * 64,
                labels=["Cavity", "Fillings", "Impacted Tooth", "Implant"],
                thresholds={"Cavity": 0.4, "Impacted Tooth": 0.5},
            )
            analysis = state.get_model("analysis", "Analysis")._base_manager.create(
                image_id=alice.image.pk,
                model_version=legacy,
                status="done",
                input_sha256="0" * 64,
                scores={"Fillings": 0.8},
                **clinic,
            )
            finding = state.get_model("analysis", "Finding")._base_manager.create(
                analysis=analysis, image_id=alice.image.pk, condition="Impacted Tooth", **clinic
            )
            state.get_model("analysis", "FindingDecision")._base_manager.create(
                finding=finding,
                actor_id=alice.users["dentist"].pk,
                decision="confirm",
                before={"condition": "Impacted Tooth", "status": "pending"},
                after={"condition": "Impacted Tooth", "status": "confirmed"},
                **clinic,
            )
            threshold = state.get_model("analysis", "ConditionThreshold")._base_manager
            threshold.create(modality="xray", condition="Cavity", threshold=0.6, **clinic)
            threshold.create(modality="xray", condition="Fillings", threshold=0.7, **clinic)
            threshold.create(modality="xray", condition="filling", threshold=0.65, **clinic)
    finally:
        with as_table_owner():
            executor = MigrationExecutor(connection)
            executor.loader.build_graph()
            executor.migrate(executor.loader.graph.leaf_nodes())
            if connection.vendor == "postgresql":  # tables made again by the migrations get the suite's grants again
                with connection.cursor() as cursor:
                    for statement in app_role_grants_sql(APP_ROLE, allow_truncate=True):
                        cursor.execute(statement)
    legacy = ModelVersion.objects.get(pk=legacy.pk)
    assert legacy.labels == ["cavity", "filling", "impacted_tooth", "implant"]
    assert legacy.thresholds == {"cavity": 0.4, "impacted_tooth": 0.5}
    with clinic_scope(alice.clinic.id):
        assert Analysis.objects.get(pk=analysis.pk).scores == {"filling": 0.8}
        assert Finding.objects.get(pk=finding.pk).condition == "impacted_tooth"
        decision = FindingDecision.objects.get(finding_id=finding.pk)
        assert decision.before["condition"] == decision.after["condition"] == "impacted_tooth"
        limits = dict(ConditionThreshold.objects.filter(modality="xray").values_list("condition", "threshold"))
        assert limits == {"cavity": 0.6, "filling": 0.65}  # the clinic's own value for the code wins
        stored = set(Finding.objects.values_list("condition", flat=True))
    assert stored <= set(conditions.CONDITIONS)
