"""The list outputs build their rows directly (``clinics.api.output.DirectOutput``: speed); each must say exactly
what DRF's generic field-by-field path says, keys in the same order (FindingOutput: tests/analysis/
test_finding_output.py)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import types
from typing import Any

import pytest
from rest_framework import serializers

from analysis.api import AnalysisOutput
from analysis.models import Analysis, ClinicModel
from clinics.tenancy import clinic_scope
from patients.api import ImageOutput, PatientOutput
from patients.models import Image, Patient
from patients.selectors import patient_identity

from .conftest import World


def _same(output: serializers.Serializer, fast: dict[str, Any], generic: dict[str, Any]) -> None:
    assert fast == generic
    assert list(fast) == list(generic) == list(output.fields)  # every declared field, in order, none more


ANALYSES = [
    {},
    {"status": "not_assessable", "not_assessable_code": "blurred", "not_assessable_message": "Blurred: retake"},
    {"status": "failed", "failure_reason": "integrity", "finished_at": None, "scores": {}},
    {"unfamiliar": True, "scores": {"caries": 0.25, "ulcer": 1}, "clinic_model": True},
    {"status": "queued", "finished_at": None, "scores": None},
]


@pytest.mark.parametrize("changes", ANALYSES)
def test_an_analysis(alice: World, changes: dict[str, Any]) -> None:
    with clinic_scope(alice.clinic.id):
        analysis = Analysis.objects.select_related("model_version").get(pk=alice.analysis.pk)
        changes = dict(changes)
        if changes.pop("clinic_model", False):
            analysis.clinic_model = ClinicModel(parent=analysis.model_version, modality="photo", version=3)
        for name, value in changes.items():
            setattr(analysis, name, value)
        output = AnalysisOutput(context={"all_findings": True})
        fast = output.to_representation(analysis)
        findings = AnalysisOutput(context={"all_findings": True})
        generic = serializers.Serializer.to_representation(findings, analysis)
    _same(output, fast, generic)
    assert fast["findings"]


@pytest.mark.parametrize("refused", [None, False, True])
def test_an_image(alice: World, refused: bool | None) -> None:
    with clinic_scope(alice.clinic.id):
        if refused is None:
            Analysis.objects.filter(image=alice.image).delete()
        elif refused:
            Analysis.objects.filter(image=alice.image).update(
                status="not_assessable", not_assessable_code="too_dark", not_assessable_message="Too dark"
            )
        image = Image.objects.get(pk=alice.image.pk)
        output = ImageOutput()
        fast = output.to_representation(image)
        generic = serializers.Serializer.to_representation(ImageOutput(), image)
    _same(output, fast, generic)
    assert (fast["analysis"] is None) == (refused is None)


@pytest.mark.parametrize(
    ("restricted", "visible", "changes"),
    [
        (False, True, {}),
        (True, False, {}),
        (True, True, {"sex": "female", "legal_hold": True}),
        (False, False, {"date_of_birth": None}),
    ],
)
def test_a_patient(alice: World, restricted: bool, visible: bool, changes: dict[str, Any]) -> None:
    """Against what the record holds, written out here (not the output's own mapping): DRF's generic path reads
    the same attributes from a plain object."""
    with clinic_scope(alice.clinic.id):
        patient = Patient.objects.with_data_keys().get(pk=alice.patient.pk)
        patient.restricted = restricted
        for name, value in changes.items():
            if name == "date_of_birth":
                patient._identity = dataclasses.replace(patient_identity(patient), date_of_birth=value)
            else:
                setattr(patient, name, value)
        output = PatientOutput(context={"restricted_visible": visible})
        fast = output.to_representation(patient)
    hidden = restricted and not visible
    held = {
        "id": alice.patient.pk,
        "external_id": "alice-0001",
        "restricted": restricted,
        "given_name": "Marker",
        "family_name": "Alicesonmarker",
        "date_of_birth": changes.get("date_of_birth", dt.date(1980, 5, 17)),
        "sex": changes.get("sex", alice.patient.sex),
        "legal_hold": changes.get("legal_hold", False),
        "created_at": alice.patient.created_at,
        "updated_at": patient.updated_at,
    }
    if hidden:  # a restricted record, to a caller that may not open it: its id and practice id only
        held.update(given_name=None, family_name=None, date_of_birth=None, sex=None)
    generic = serializers.Serializer.to_representation(PatientOutput(), types.SimpleNamespace(**held))
    _same(output, fast, generic)
