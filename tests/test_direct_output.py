"""The list outputs build their rows directly (``clinics.api.output.DirectOutput``: speed); each must say exactly
what DRF's generic field-by-field path says, keys in the same order (FindingOutput: tests/analysis/
test_finding_output.py)."""

from __future__ import annotations

import dataclasses
import datetime as dt
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
    with clinic_scope(alice.clinic.id):
        patient = Patient.objects.with_data_keys().get(pk=alice.patient.pk)
        patient.restricted = restricted
        identity = patient_identity(patient)
        for name, value in changes.items():
            if name == "date_of_birth":
                patient._identity = dataclasses.replace(identity, **{name: value})
            else:
                setattr(patient, name, value)
        output = PatientOutput(context={"restricted_visible": visible})
        fast = output.to_representation(patient)
        identity = patient_identity(patient)
        hidden = restricted and not visible
        generic = serializers.Serializer.to_representation(
            PatientOutput(),
            {
                "id": patient.pk,
                "external_id": identity.external_id,
                "restricted": patient.restricted,
                "given_name": None if hidden else identity.given_name,
                "family_name": None if hidden else identity.family_name,
                "date_of_birth": None if hidden else identity.date_of_birth,
                "sex": None if hidden else patient.sex,
                "legal_hold": patient.legal_hold,
                "created_at": patient.created_at,
                "updated_at": patient.updated_at,
            },
        )
    _same(output, fast, generic)
    assert (fast["given_name"] is None) == hidden
    if not hidden and "date_of_birth" not in changes:
        assert fast["date_of_birth"] == dt.date(1980, 5, 17).isoformat()
