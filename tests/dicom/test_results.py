"""What the SR says of a finding's tooth (no PACS needed)."""

from __future__ import annotations

from core import teeth
from dicom.results import finding_code, finding_sites


def test_a_finding_with_a_tooth_names_its_snomed_ct_body_structure() -> None:
    (site,) = finding_sites({"tooth": "36", "condition": "cavity"})
    location = site.value  # the anatomic location's coded concept
    assert location.scheme_designator == "SCT"
    assert location.value == teeth.get("36").snomed
    assert "36" in location.meaning or "first molar" in location.meaning.lower()


def test_a_finding_without_a_tooth_has_no_site() -> None:
    assert finding_sites({"tooth": None, "condition": "cavity"}) == []
    assert finding_sites({"condition": "cavity"}) == []


def _header(n: int) -> dict:
    from pydicom.uid import DigitalIntraOralXRayImageStorageForPresentation, generate_uid

    return {
        "SOPClassUID": DigitalIntraOralXRayImageStorageForPresentation,
        "SOPInstanceUID": generate_uid(),
        "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.1",
        "SeriesInstanceUID": generate_uid(),
        "PatientID": "P-1",
        "PatientName": "Test^Ada",
        "PatientBirthDate": "19800101",
        "PatientSex": "F",
        "Rows": 100,
        "Columns": 120,
        "InstanceNumber": str(n),
    }


def _entries(sr) -> dict[str, list[tuple[str, list[str]]]]:  # noqa: ANN001
    """Per source image (SOP Instance UID) each whole-image group's finding type and evaluation values (the review
    outcome left out), and under "roi" the finding types of the groups with a region; read back with highdicom."""
    import highdicom as hd

    report = hd.sr.Comprehensive3DSR.from_dataset(sr).content
    [measurement_report] = [hd.sr.MeasurementReport.from_sequence([item]) for item in report]
    out: dict[str, list[tuple[str, list[str]]]] = {}
    for group in measurement_report.get_image_measurement_groups():
        values = [evaluation.value.value for evaluation in group.get_qualitative_evaluations()]
        values = [v for v in values if v not in ("confirmed", "rejected", "added", "pending")]
        for source in group.source_images:
            out.setdefault(source.referenced_sop_instance_uid, []).append((group.finding_type.value, values))
    for group in measurement_report.get_planar_roi_measurement_groups():  # a finding's box: its own region
        out.setdefault("roi", []).append((group.finding_type.value, []))
    return out


def test_the_sr_says_not_assessed_with_the_reason_never_no_finding() -> None:
    """An image the gate refused, one whose analysis failed, one assessed with nothing found and one with a finding
    (and a rejected suggestion): the SR gives each its own entry, only the assessed one without findings reads "no
    finding", and the rejected suggestion is not a finding."""
    from dicom.results import build_sr

    refused, failed, clear, found = (_header(n) for n in range(1, 5))
    snapshot = {
        "version": 1,
        "clinic": {"id": "c", "name": "Clinic"},
        "signed_by": {"name": "Dr Test"},
        "images": [
            {
                "id": "refused",
                "analysis": "not_assessable",
                "not_assessable": {"code": "too_dark", "message": "The radiograph is too dark to assess: check it."},
                "findings": [],
            },
            {"id": "failed", "analysis": "failed", "findings": []},
            {"id": "clear", "analysis": "done", "findings": []},
            {
                "id": "found",
                "analysis": "done",
                "findings": [
                    {
                        "id": "f1",
                        "condition": "cavity",
                        "status": "confirmed",
                        "box": [0.1, 0.1, 0.2, 0.2],
                        "probability": 0.9,
                        "model": "xray@1.2.0",
                        "source": "model",
                    },
                    {  # added by the dentist, then rejected
                        "id": "f3",
                        "condition": "filling",
                        "status": "rejected",
                        "box": [0.3, 0.3, 0.1, 0.1],
                        "source": "clinician",
                    },
                    {
                        "id": "f2",
                        "condition": "implant",
                        "status": "rejected",
                        "reason": "not_present",
                        "box": [0.5, 0.5, 0.2, 0.2],
                        "probability": 0.6,
                        "model": "xray@1.2.0",
                        "source": "model",
                    },
                ],
            },
        ],
    }
    headers = {"refused": refused, "failed": failed, "clear": clear, "found": found}
    sr = build_sr(snapshot=snapshot, headers=headers, uids={"series": "1.2.3.4", "sop": "1.2.3.5"})
    entries = _entries(sr)
    assert entries[refused["SOPInstanceUID"]] == [("not-assessed", ["too_dark"])]
    assert entries[failed["SOPInstanceUID"]] == [("not-assessed", ["analysis-failed"])]
    assert entries[clear["SOPInstanceUID"]] == [("no-finding", [])]
    assert found["SOPInstanceUID"] not in entries  # its one entry is the finding's region
    assert [kind for kind, _ in entries["roi"]] == [finding_code("cavity").value]  # the rejected ones left out


def _uids(ds) -> set[str]:  # noqa: ANN001
    return {str(element.value) for element in ds.iterall() if element.VR == "UI" and element.value}


def test_building_the_same_objects_again_gives_the_same_uids() -> None:
    """A retry or an admin's resend stores the same objects: the SR's tracking and device UIDs, and every secondary
    capture's SOP Instance UID, are derived, not drawn anew."""
    import numpy as np
    from PIL import Image as PILImage

    from dicom.results import build_sc, build_sr

    headers = {"a": _header(1), "b": _header(2)}
    snapshot = {
        "version": 1,
        "clinic": {"id": "c", "name": "Clinic"},
        "signed_by": {"name": "Dr Test"},
        "images": [
            {"id": "a", "analysis": "done", "findings": [{"id": "f1", "condition": "cavity", "status": "confirmed"}]},
            {"id": "b", "analysis": "done", "findings": []},
        ],
    }
    uids = {"series": "1.2.3.4", "sop": "1.2.3.5"}
    first, again = (build_sr(snapshot=snapshot, headers=headers, uids=uids) for _ in range(2))
    assert _uids(first) == _uids(again)
    pixels = PILImage.fromarray(np.zeros((100, 120, 3), dtype=np.uint8))
    built = [
        [build_sc(pixels=pixels, findings=[], header=headers[k], uids=uids, number=n).SOPInstanceUID for k, n in pairs]
        for pairs in ([("a", 1), ("b", 2)], [("a", 1), ("b", 2)])
    ]
    assert built[0] == built[1] and built[0][0] == "1.2.3.5" and len(set(built[0])) == 2
