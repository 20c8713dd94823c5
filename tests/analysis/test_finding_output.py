"""FindingOutput builds its dict directly (speed); it must say exactly what DRF's field-by-field path says."""

from __future__ import annotations

import pytest
from django.urls import reverse
from rest_framework import serializers

from analysis.api import FindingOutput
from analysis.models import Finding
from clinics.tenancy import clinic_scope

from ..conftest import World, token_client

CASES = [
    {},
    {"probability": None, "box": None, "tooth": "", "surfaces": ""},
    {"tooth": "36", "surfaces": "MOD", "suggested_tooth": "37", "suggested_tooth_probability": 0.7, "note": "x"},
    {"status": "rejected", "reason": "false_positive", "reviewer": "dentist", "version": 3},
    {"source": "clinician", "probability": None, "box": [0, 0, 1, 1]},
]


@pytest.mark.parametrize("changes", CASES)
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


@pytest.mark.parametrize("changes", CASES)
def test_a_page_of_the_list_shows_each_analysis_as_its_detail_does(alice: World, changes: dict) -> None:
    """The list builds its findings from rows (``finding_rows_attach``), the detail from model instances: the same
    JSON, findings in the same order, hidden ones hidden alike."""
    with clinic_scope(alice.clinic.id):
        changes = dict(changes)
        if changes.pop("reviewer", None):
            changes["reviewed_by"] = alice.users["dentist"]
        Finding.objects.filter(pk=alice.finding.pk).update(**changes)
        for condition, probability in (("calculus", 0.97), ("gingivitis", 0.05), ("ulcer", 0.6)):
            Finding.objects.create(
                analysis=alice.analysis,
                image=alice.image,
                condition=condition,
                probability=probability,
                box=[0.2, 0.2, 0.4, 0.4],
                tooth="11" if condition == "ulcer" else "",
            )
    client = token_client(alice, "dentist")
    listed = client.get(reverse("api:analysis-list")).json()["results"]
    detail = client.get(reverse("api:analysis-detail", kwargs={"pk": alice.analysis.pk})).json()
    (row,) = [a for a in listed if a["id"] == str(alice.analysis.pk)]
    assert row == detail
    assert len(detail["findings"]) >= 2
