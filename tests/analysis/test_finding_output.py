"""FindingOutput builds its dict directly (speed); it must say exactly what DRF's field-by-field path says."""

from __future__ import annotations

import pytest
from rest_framework import serializers

from analysis.api import FindingOutput
from analysis.models import Finding
from clinics.tenancy import clinic_scope

from ..conftest import World


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"probability": None, "box": None, "tooth": "", "surfaces": ""},
        {"tooth": "36", "surfaces": "MOD", "suggested_tooth": "37", "suggested_tooth_probability": 0.7, "note": "x"},
        {"status": "rejected", "reason": "false_positive", "reviewer": "dentist", "version": 3},
        {"source": "clinician", "probability": None, "box": [0, 0, 1, 1]},
    ],
)
def test_the_fast_output_equals_the_generic_one(alice: World, changes: dict) -> None:
    with clinic_scope(alice.clinic.id):
        finding = Finding.objects.select_related("reviewed_by").get(pk=alice.finding.pk)
        changes = dict(changes)
        if changes.pop("reviewer", None):
            finding.reviewed_by = alice.users["dentist"]
        for name, value in changes.items():
            setattr(finding, name, value)
        output = FindingOutput(context={"tooth_notation": "universal"})
        fast = output.to_representation(finding)
        generic = serializers.Serializer.to_representation(output, finding)
    assert fast == generic
    assert list(fast) == list(generic)  # same keys in the same order
    assert list(fast) == list(FindingOutput().fields)  # every declared field, none more
