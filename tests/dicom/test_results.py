"""What the SR says of a finding's tooth (no PACS needed)."""

from __future__ import annotations

from core import teeth
from dicom.results import finding_sites


def test_a_finding_with_a_tooth_names_its_snomed_ct_body_structure() -> None:
    (site,) = finding_sites({"tooth": "36", "condition": "cavity"})
    location = site.value  # the anatomic location's coded concept
    assert location.scheme_designator == "SCT"
    assert location.value == teeth.get("36").snomed
    assert "36" in location.meaning or "first molar" in location.meaning.lower()


def test_a_finding_without_a_tooth_has_no_site() -> None:
    assert finding_sites({"tooth": None, "condition": "cavity"}) == []
    assert finding_sites({"condition": "cavity"}) == []
