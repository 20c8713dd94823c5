"""FHIR export of a signed report, validated with the R4B models of ``fhir.resources``.

``fhir.resources`` 8.x models FHIR R5 at its top level; R4 itself is not shipped, so the bundle is validated with
``fhir.resources.R4B`` (4.3.0). R4B changed no element used here (Patient, Practitioner, Organization, Media,
Device, DiagnosticReport, Observation, Bundle are the same as in R4 4.0.1 for these elements).
"""

from __future__ import annotations

import copy
import json
import uuid
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle

from analysis.fhir import (
    EXT_AMENDMENT,
    EXT_FINDING_ORIGIN,
    EXT_IMAGE_REGION,
    SNOMED,
    SYSTEM_REPORT,
    condition_code,
    practice_id_system,
    report_bundle,
)
from core.conditions import CONDITIONS


def _id() -> str:
    return str(uuid.uuid4())


def _finding(condition: str, status: str = "confirmed", source: str = "model", **extra: Any) -> dict[str, Any]:
    model = source == "model"
    finding = {
        "id": _id(),
        "condition": condition,
        "probability": 0.91 if model else None,
        "box": [0.1, 0.2, 0.3, 0.25],
        "status": status,
        "source": source,
        "reason": "not_present" if status == "rejected" else "",
        "model": "photo-effnetlite0@1.0.0" if model else None,
    }
    finding.update(extra)
    return finding


def sample_report(*, amends: str | None = None) -> dict[str, Any]:
    return {
        "report_id": _id(),
        "version": 2 if amends else 1,
        "status": "signed",
        "signed_at": "2026-11-28T10:15:00+00:00",
        "signed_by": {"id": _id(), "name": "Dr Ada Example", "email": "dentist@demo.example"},
        "amends": amends,
        "amendment_reason": "Gingivitis confirmed after re-examination" if amends else "",
        "clinic": {"id": _id(), "name": "Demo Dental Clinic"},
        "patient": {
            "id": _id(),
            "external_id": "PMS-1",
            "given_name": "Ada",
            "family_name": "Lovelace",
            "date_of_birth": "1990-12-10",
            "sex": "female",
        },
        "visit": {"id": _id(), "date": "2026-11-28"},
        "images": [
            {
                "id": _id(),
                "modality": "photo",
                "width": 640,
                "height": 480,
                "findings": [
                    _finding("caries"),
                    _finding("gingivitis", source="clinician"),
                    _finding("ulcer", status="rejected"),
                    _finding("calculus", status="pending", probability=0.55),
                ],
            },
            {
                "id": _id(),
                "modality": "xray",
                "width": 800,
                "height": 400,
                "findings": [
                    _finding("cavity", model="xray-effnetlite0@2.1.0", probability=0.77),
                    _finding("impacted_tooth", model="xray-effnetlite0@2.1.0", box=None),
                    _finding("implant", status="rejected", model="xray-effnetlite0@2.1.0"),
                ],
            },
        ],
    }


def _resources(bundle: dict[str, Any], resource_type: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == resource_type]


def _validate(bundle: dict[str, Any]) -> None:
    Bundle.model_validate(bundle)
    for entry in bundle["entry"]:  # and each resource with its own class, whatever Bundle does with entries
        resource = entry["resource"]
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)


def test_bundle_validates_as_fhir_r4b_and_is_json_serialisable() -> None:
    report = sample_report()
    bundle = report_bundle(report, timestamp="2026-11-28T10:20:00+00:00")
    _validate(bundle)
    assert bundle["type"] == "collection" and bundle["timestamp"] == "2026-11-28T10:20:00+00:00"
    round_tripped = json.loads(json.dumps(bundle))
    assert round_tripped == bundle
    Bundle.model_validate_json(json.dumps(bundle))
    assert "timestamp" in report_bundle(report)  # default: now


def test_one_observation_per_confirmed_finding_only() -> None:
    report = sample_report()
    bundle = report_bundle(report)
    confirmed = {f["id"] for i in report["images"] for f in i["findings"] if f["status"] == "confirmed"}
    left_out = {f["id"] for i in report["images"] for f in i["findings"] if f["status"] != "confirmed"}
    observations = _resources(bundle, "Observation")
    assert len(observations) == len(confirmed) == 4
    assert {o["id"] for o in observations} == confirmed
    assert not {o["id"] for o in observations} & left_out
    assert all(o["status"] == "final" and o["valueBoolean"] is True for o in observations)
    [diagnostic] = _resources(bundle, "DiagnosticReport")
    assert {r["reference"] for r in diagnostic["result"]} == {f"urn:uuid:{i}" for i in confirmed}
    # The narrative says what was left out (2 rejected, 1 pending).
    assert "2 AI suggestion(s) rejected" in diagnostic["text"]["div"]
    assert "1 suggestion(s) not reviewed" in diagnostic["text"]["div"]
    assert "are not exported" in diagnostic["text"]["div"]
    assert len(_resources(bundle, "Patient")) == len(_resources(bundle, "Practitioner")) == 1
    assert len(_resources(bundle, "Media")) == 2
    assert {d["identifier"][0]["value"] for d in _resources(bundle, "Device")} == {
        "photo-effnetlite0@1.0.0",
        "xray-effnetlite0@2.1.0",
    }


def test_no_confirmed_findings_gives_report_without_results() -> None:
    report = sample_report()
    for image in report["images"]:
        for finding in image["findings"]:
            finding["status"] = "rejected"
    bundle = report_bundle(report)
    _validate(bundle)
    assert _resources(bundle, "Observation") == []
    [diagnostic] = _resources(bundle, "DiagnosticReport")
    assert "result" not in diagnostic and "confirmed no findings" in diagnostic["conclusion"]


def test_first_version_is_final_and_amendment_is_amended_with_link_to_previous() -> None:
    first = sample_report()
    [v1] = _resources(report_bundle(first), "DiagnosticReport")
    assert v1["status"] == "final" and "extension" not in v1

    second = copy.deepcopy(first)
    second.update(report_id=_id(), version=2, amends=first["report_id"], amendment_reason="Ulcer was re-checked")
    bundle = report_bundle(second)
    _validate(bundle)
    [v2] = _resources(bundle, "DiagnosticReport")
    assert v2["status"] == "amended"
    [amendment] = [e for e in v2["extension"] if e["url"] == EXT_AMENDMENT]
    parts = {e["url"]: e for e in amendment["extension"]}
    assert parts["replaces"]["valueReference"]["identifier"] == {"system": SYSTEM_REPORT, "value": first["report_id"]}
    assert parts["replaces"]["valueReference"]["type"] == "DiagnosticReport"
    assert parts["reason"]["valueString"] == "Ulcer was re-checked"
    assert "Amended report" in v2["text"]["div"] and "Ulcer was re-checked" in v2["text"]["div"]
    # Both versions share the visit-level business identifier, and keep their own report identifier.
    assert v1["identifier"][1] == v2["identifier"][1]
    assert v1["identifier"][0]["value"] == first["report_id"] and v2["identifier"][0]["value"] == second["report_id"]


def test_patient_identifier_name_gender_and_birth_date() -> None:
    report = sample_report()
    [patient] = _resources(report_bundle(report), "Patient")
    practice = patient["identifier"][0]
    assert practice["system"] == f"urn:dentalscan:clinic:{report['clinic']['id']}:patient"
    assert practice["system"] == practice_id_system(report["clinic"]["id"])
    assert practice["value"] == "PMS-1"
    assert patient["name"][0]["family"] == "Lovelace" and patient["name"][0]["given"] == ["Ada"]
    assert patient["birthDate"] == "1990-12-10" and patient["gender"] == "female"
    for sex, gender in (("male", "male"), ("other", "other"), ("unknown", "unknown"), ("", "unknown")):
        report["patient"]["sex"] = sex
        [patient] = _resources(report_bundle(report), "Patient")
        assert patient["gender"] == gender


def test_patient_without_practice_id_keeps_the_platform_identifier() -> None:
    report = sample_report()
    report["patient"]["external_id"] = ""
    bundle = report_bundle(report)
    _validate(bundle)
    [patient] = _resources(bundle, "Patient")
    assert [i["system"] for i in patient["identifier"]] == ["urn:dentalscan:patient"]


def test_diagnostic_report_fields_and_references_resolve_in_bundle() -> None:
    report = sample_report()
    bundle = report_bundle(report)
    full_urls = {e["fullUrl"] for e in bundle["entry"]}
    assert len(full_urls) == len(bundle["entry"])
    assert all(u.startswith("urn:uuid:") for u in full_urls)
    [diagnostic] = _resources(bundle, "DiagnosticReport")
    [practitioner] = _resources(bundle, "Practitioner")
    assert diagnostic["effectiveDateTime"] == "2026-11-28"
    assert diagnostic["issued"] == "2026-11-28T10:15:00+00:00"
    assert diagnostic["code"]["coding"][0] == {
        "system": "http://loinc.org",
        "code": "18748-4",
        "display": "Diagnostic imaging study",
    }
    assert diagnostic["subject"]["reference"] == f"urn:uuid:{report['patient']['id']}"
    assert diagnostic["performer"][0]["reference"] == f"urn:uuid:{practitioner['id']}"
    assert practitioner["name"][0]["text"] == "Dr Ada Example"
    assert "Tooth decay (caries)" in diagnostic["conclusion"]
    assert "Gum inflammation (gingivitis)" in diagnostic["conclusion"]
    assert "Mouth ulcer" not in diagnostic["conclusion"]  # rejected

    def references(node: Any) -> list[str]:
        if isinstance(node, dict):
            found = [node["reference"]] if isinstance(node.get("reference"), str) else []
            return found + [r for v in node.values() for r in references(v)]
        if isinstance(node, list):
            return [r for v in node for r in references(v)]
        return []

    refs = references([e["resource"] for e in bundle["entry"]])
    assert refs and set(refs) <= full_urls


def test_observation_codes_source_and_region() -> None:
    report = sample_report()
    bundle = report_bundle(report)
    photo, xray = report["images"]
    by_id = {o["id"]: o for o in _resources(bundle, "Observation")}

    caries = by_id[photo["findings"][0]["id"]]
    assert caries["code"]["coding"] == [{"system": SNOMED, "code": "80967001", "display": "Dental caries"}]
    assert caries["method"]["text"] == "AI suggestion confirmed by the dentist"
    assert "photo-effnetlite0@1.0.0" in caries["note"][0]["text"] and "0.91" in caries["note"][0]["text"]
    assert caries["device"]["reference"].startswith("urn:uuid:")
    region = {e["url"]: e for e in next(x for x in caries["extension"] if x["url"] == EXT_IMAGE_REGION)["extension"]}
    assert region["image"]["valueReference"]["reference"] == f"urn:uuid:{photo['id']}"
    assert [region[k]["valueDecimal"] for k in ("x", "y", "width", "height")] == [0.1, 0.2, 0.3, 0.25]
    origin = {e["url"]: e for e in next(x for x in caries["extension"] if x["url"] == EXT_FINDING_ORIGIN)["extension"]}
    assert origin["source"]["valueCode"] == "model"
    assert origin["model"]["valueString"] == "photo-effnetlite0@1.0.0"
    assert origin["probability"]["valueDecimal"] == 0.91
    assert caries["derivedFrom"] == [{"reference": f"urn:uuid:{photo['id']}"}]

    gingivitis = by_id[photo["findings"][1]["id"]]
    assert gingivitis["code"]["coding"][0]["code"] == "66383009"
    assert gingivitis["method"]["text"] == "Added by a clinician" and "device" not in gingivitis
    origin = {e["url"] for e in next(x for x in gingivitis["extension"] if x["url"] == EXT_FINDING_ORIGIN)["extension"]}
    assert origin == {"source"}

    cavity = by_id[xray["findings"][0]["id"]]
    assert cavity["code"]["coding"][0]["code"] == "80967001"
    impacted = by_id[xray["findings"][1]["id"]]
    assert impacted["code"]["coding"] == [{"system": SNOMED, "code": "235104008", "display": "Impacted tooth"}]
    region = next(x for x in impacted["extension"] if x["url"] == EXT_IMAGE_REGION)["extension"]
    assert [e["url"] for e in region] == ["image"]  # no box: only the image


def test_condition_without_a_snomed_concept_is_text_only() -> None:
    assert CONDITIONS["implant"].snomed is None
    assert condition_code("implant") == {"text": "Dental implant present"}


def test_snomed_concepts_come_from_the_vocabulary() -> None:
    assert {c: condition_code(c)["coding"][0]["code"] for c in CONDITIONS if CONDITIONS[c].snomed} == {
        "caries": "80967001",
        "gingivitis": "66383009",
        "calculus": "18755003",
        "ulcer": "26284000",
        "cavity": "80967001",
        "filling": "109727004",
        "impacted_tooth": "235104008",
    }


def test_a_signed_snapshot_with_an_old_model_label_still_gets_its_code() -> None:
    assert condition_code("Impacted Tooth") == condition_code("impacted_tooth")
    assert condition_code("Fillings")["coding"][0]["code"] == "109727004"


def test_http_base_url_gives_server_full_urls_and_relative_references() -> None:
    report = sample_report()
    bundle = report_bundle(report, base_url="https://fhir.example.org/r4/")
    _validate(bundle)
    [diagnostic] = _resources(bundle, "DiagnosticReport")
    entry = next(e for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    assert entry["fullUrl"] == f"https://fhir.example.org/r4/Patient/{report['patient']['id']}"
    assert diagnostic["subject"]["reference"] == f"Patient/{report['patient']['id']}"
    with pytest.raises(ValueError, match="base_url"):
        report_bundle(report, base_url="ftp://nope")


def test_naive_signed_at_is_taken_as_utc_and_narrative_escapes_text() -> None:
    report = sample_report(amends=_id())
    report["signed_at"] = "2026-11-28T10:15:00"
    report["amendment_reason"] = "<script>alert(1)</script> & more"
    bundle = report_bundle(report)
    _validate(bundle)
    [diagnostic] = _resources(bundle, "DiagnosticReport")
    assert diagnostic["issued"] == "2026-11-28T10:15:00+00:00"
    assert "<script>" not in diagnostic["text"]["div"] and "&lt;script&gt;" in diagnostic["text"]["div"]


# fhir.resources checks structure and datatypes, not code bindings: check the required ones of R4 here.
REQUIRED_BINDINGS: dict[tuple[str, str], set[str]] = {
    ("Bundle", "type"): {"document", "message", "transaction", "transaction-response", "batch", "batch-response"}
    | {"history", "searchset", "collection"},
    ("DiagnosticReport", "status"): {"registered", "partial", "preliminary", "final", "amended", "corrected"}
    | {"appended", "cancelled", "entered-in-error", "unknown"},
    ("Observation", "status"): {"registered", "preliminary", "final", "amended", "corrected", "cancelled"}
    | {"entered-in-error", "unknown"},
    ("Media", "status"): {"preparation", "in-progress", "not-done", "on-hold", "stopped", "completed"}
    | {"entered-in-error", "unknown"},
    ("Patient", "gender"): {"male", "female", "other", "unknown"},
}
DATATYPE_BINDINGS: dict[str, set[str]] = {
    "text.status": {"generated", "extensions", "additional", "empty"},
    "identifier.use": {"usual", "official", "temp", "secondary", "old"},
    "name.use": {"usual", "official", "temp", "nickname", "anonymous", "old", "maiden"},
    "telecom.system": {"phone", "fax", "email", "pager", "url", "sms", "other"},
    "telecom.use": {"home", "work", "temp", "old", "mobile"},
    "deviceName.type": {"udi-label-name", "user-friendly-name", "patient-reported-name", "manufacturer-name"}
    | {"model-name", "other"},
}


def test_required_code_bindings_of_r4() -> None:
    report = sample_report(amends=_id())
    bundle = report_bundle(report)
    assert bundle["type"] in REQUIRED_BINDINGS[("Bundle", "type")]
    seen: set[str] = set()
    for entry in bundle["entry"]:
        resource = entry["resource"]
        for (resource_type, element), allowed in REQUIRED_BINDINGS.items():
            if resource["resourceType"] == resource_type:
                assert resource[element] in allowed
        for path, allowed in DATATYPE_BINDINGS.items():
            parent, child = path.split(".")
            value = resource.get(parent)
            for item in value if isinstance(value, list) else [value] if value else []:
                if child in item:
                    assert item[child] in allowed, (resource["resourceType"], path, item[child])
                    seen.add(path)
    assert seen == set(DATATYPE_BINDINGS)


def test_the_docstring_says_the_snomed_codes_are_unverified() -> None:
    import analysis.fhir

    doc = " ".join((analysis.fhir.__doc__ or "").split())
    assert "published material" in doc and "NOT been checked against a terminology server" in doc
    for code in ("calculus", "filling", "impacted_tooth", "implant"):
        assert f"``{code}``" in doc
    assert CONDITIONS["implant"].snomed is None  # text only, as the docstring says


def test_findings_with_a_tooth_carry_its_snomed_body_site_and_the_bundle_validates() -> None:
    report = sample_report()
    report["images"][1]["findings"] = [
        _finding("cavity", model="xray-effnetlite0@2.1.0", tooth="36", surfaces="MO"),
        _finding("filling", model="xray-effnetlite0@2.1.0", tooth="85"),
        _finding("impacted_tooth", model="xray-effnetlite0@2.1.0", tooth=None),
    ]
    bundle = report_bundle(report)
    _validate(bundle)
    by_id = {o["id"]: o for o in _resources(bundle, "Observation")}
    cavity, filling, impacted = (by_id[f["id"]] for f in report["images"][1]["findings"])
    assert cavity["bodySite"]["coding"] == [
        {"system": SNOMED, "code": "866006002", "display": "Structure of permanent mandibular left first molar tooth"}
    ]
    assert cavity["bodySite"]["text"] == "Tooth 36 (FDI), lower left first molar, surfaces mesial, occlusal"
    assert filling["bodySite"]["coding"][0]["code"] == "61868007"
    assert "bodySite" not in impacted
    # every exported finding with a tooth has a SNOMED CT tooth bodySite
    teeth_of = {f["id"]: f.get("tooth") for image in report["images"] for f in image["findings"]}
    for observation in _resources(bundle, "Observation"):
        if teeth_of[observation["id"]]:
            assert observation["bodySite"]["coding"][0]["system"] == SNOMED
