"""The objects sent back to the practice's PACS, built with highdicom from a signed report's snapshot:

- a Comprehensive 3D SR holding a TID 1500 measurement report: per finding its SNOMED CT code (the platform's
  private code where the vocabulary has none), its box as an image region (a closed polyline, pixel coordinates) on
  the source instance it was found on (TID 1410; a finding without a box refers to the whole image, TID 1501), the
  model's probability, the algorithm's name and version, and the dentist's decision (confirmed or added; pending in
  a preliminary SR; a rejected suggestion is left out);
  an amended version lists the previous SR as its predecessor;
- a secondary-capture image per source image with the reviewed (confirmed and added) findings burned in.

The tooth of a finding (``"tooth"``, FDI) is sent as its finding site, the tooth's SNOMED CT concept.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import highdicom as hd
import numpy as np
from PIL import Image as PILImage
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import ComprehensiveSRStorage, generate_uid

from analysis.report_images import annotate
from core import conditions, teeth

MANUFACTURER = "DentalScan"
PRIVATE_SCHEME = "99DSCAN"  # the platform's own codes (PS3.16 8.2: private schemes start with 99)
REVIEW_OUTCOME = hd.sr.CodedConcept("review-outcome", PRIVATE_SCHEME, "Dentist review outcome")
OUTCOMES = {
    "confirmed": hd.sr.CodedConcept("confirmed", PRIVATE_SCHEME, "Confirmed by dentist"),
    "added": hd.sr.CodedConcept("added", PRIVATE_SCHEME, "Added by dentist"),
    "pending": hd.sr.CodedConcept("pending", PRIVATE_SCHEME, "Not reviewed (preliminary)"),
}
NO_FINDING = hd.sr.CodedConcept("no-finding", PRIVATE_SCHEME, "No finding reported")
# An image the AI did not look at: never "no finding". The reason is a second evaluation (the image gate's code, or
# why no model ran), the words the review page and the PDF use.
NOT_ASSESSED = hd.sr.CodedConcept("not-assessed", PRIVATE_SCHEME, "Not assessed by the AI")
NOT_ASSESSED_REASON = hd.sr.CodedConcept("not-assessed-reason", PRIVATE_SCHEME, "Reason not assessed by the AI")
ANALYSIS_STATES = {  # a snapshot image's "analysis" other than "done" -> (code, meaning) when no gate reason is given
    "failed": ("analysis-failed", "The analysis failed"),
    "none": ("no-model", "No model analysed this image"),
    "suggestions-hidden": ("unfamiliar-image", "Unlike the images the AI learned from: suggestions not shown"),
}
PROCEDURE = hd.sr.CodedConcept("ai-review", PRIVATE_SCHEME, "AI-assisted dental image review")
UNITLESS = hd.sr.CodedConcept("1", "UCUM", "no units")
SR_SERIES_NUMBER = 990
SC_SERIES_NUMBER = 991


def stable_uid(*parts: str) -> str:
    """A UID derived from ``parts`` (pydicom's hash of them under its prefix): the same object built again (a retry,
    an admin's resend) carries the same UIDs, so the PACS stores it once."""
    return generate_uid(entropy_srcs=["dentalscan", *parts])


def finding_code(condition: str) -> hd.sr.CodedConcept:
    """The finding type: the condition's SNOMED CT concept, else the platform's private code."""
    known = conditions.get(condition) if conditions.is_code(condition) else None
    if known is not None and known.snomed:
        return hd.sr.CodedConcept(known.snomed[0], "SCT", known.snomed[1])
    name = known.name if known is not None else condition
    return hd.sr.CodedConcept(condition[:16], PRIVATE_SCHEME, name)


def outcome_of(finding: dict[str, Any]) -> str:
    """The review outcome of a finding the SR carries (never a rejected one: ``build_sr`` leaves those out, an added
    finding the dentist rejected later included)."""
    if finding.get("source") == "clinician":
        return "added"
    return finding.get("status") if finding.get("status") in OUTCOMES else "pending"


def finding_sites(finding: dict[str, Any]) -> list[hd.sr.FindingSite]:
    """The tooth as its SNOMED CT body structure (the concept FHIR's ``bodySite`` carries, ``core.teeth``) when the
    finding has one (``"tooth"``, FDI); none otherwise."""
    fdi = str(finding.get("tooth") or "")
    if not fdi:
        return []
    tooth = teeth.get(fdi)
    meaning = tooth.snomed_display[:64]  # a DICOM code meaning is at most 64 characters
    return [hd.sr.FindingSite(anatomic_location=hd.sr.CodedConcept(tooth.snomed, "SCT", meaning))]


def evidence_dataset(header: dict[str, Any]) -> Dataset:
    """The source instance as the SR's evidence: the attributes it was received with (kept encrypted)."""
    ds = Dataset()
    for keyword, value in header.items():
        setattr(ds, keyword, value)
    for keyword in ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime"):
        if keyword not in ds:
            setattr(ds, keyword, "")
    for keyword in ("StudyID", "AccessionNumber", "ReferringPhysicianName"):
        if keyword not in ds:
            setattr(ds, keyword, "")
    return ds


def _model_name_version(model: str | None) -> tuple[str, str] | None:
    if not model:
        return None
    name, _, version = model.partition("@")
    return name, version or "unknown"


def _region(box: list[float], header: dict[str, Any]) -> hd.sr.ImageRegion:
    cols, rows = float(header["Columns"]), float(header["Rows"])
    x, y, w, h = box
    x0, y0 = max(0.0, x * cols), max(0.0, y * rows)
    x1, y1 = min(cols, (x + w) * cols), min(rows, (y + h) * rows)
    points = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], dtype=np.float32)
    source = hd.sr.SourceImageForRegion(header["SOPClassUID"], header["SOPInstanceUID"])
    return hd.sr.ImageRegion(graphic_type=hd.sr.GraphicTypeValues.POLYLINE, graphic_data=points, source_image=source)


def _group(finding: dict[str, Any], header: dict[str, Any]) -> Any:
    # one tracking UID per finding, in every SR that reports it (TID 1500 follows a finding across reports by it)
    tracking = hd.sr.TrackingIdentifier(
        uid=stable_uid("finding", str(finding["id"])), identifier=f"finding {finding['id']}"
    )
    model = _model_name_version(finding.get("model"))
    algorithm = hd.sr.AlgorithmIdentification(name=model[0], version=model[1]) if model else None
    measurements = []
    if finding.get("probability") is not None:
        measurements.append(
            hd.sr.Measurement(
                name=codes.DCM.Probability, value=float(finding["probability"]), unit=UNITLESS, algorithm_id=algorithm
            )
        )
    evaluations = [hd.sr.QualitativeEvaluation(REVIEW_OUTCOME, OUTCOMES[outcome_of(finding)])]
    common = {
        "tracking_identifier": tracking,
        "finding_type": finding_code(finding["condition"]),
        "algorithm_id": algorithm,
        "finding_sites": finding_sites(finding) or None,
        "measurements": measurements or None,
        "qualitative_evaluations": evaluations,
    }
    if finding.get("box"):
        return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            referenced_region=_region(finding["box"], header), **common
        )
    return hd.sr.MeasurementsAndQualitativeEvaluations(source_images=[_source(header)], **common)


def _source(header: dict[str, Any]) -> hd.sr.SourceImageForMeasurementGroup:
    """The source instance a group of the whole image refers to."""
    return hd.sr.SourceImageForMeasurementGroup(header["SOPClassUID"], header["SOPInstanceUID"])


def _not_assessed_group(image: dict[str, Any], header: dict[str, Any]) -> Any | None:
    """For an image of the snapshot the AI did not assess (``"analysis"`` other than ``done``; a snapshot without the
    key predates it and was assessed), a group saying so, with the reason; None for an assessed image."""
    state = image.get("analysis", "done")
    if state == "done" and image.get("suggestions_hidden"):
        state = "suggestions-hidden"  # looked at, but what it raised is not shown: not "no finding" either
    if state == "done":
        return None
    refusal = image.get("not_assessable") or {}
    code, meaning = ANALYSIS_STATES.get(state, ("not-assessed", "Not assessed by the AI"))
    if refusal.get("code"):  # the gate's reason: its code (a long one is a Long Code Value), its message's first clause
        code, meaning = str(refusal["code"]), str(refusal.get("message") or refusal["code"]).split(":")[0].strip()
    reason = hd.sr.CodedConcept(code, PRIVATE_SCHEME, meaning[:64])
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=stable_uid("not-assessed", header["SOPInstanceUID"]), identifier="not assessed by the AI"
        ),
        source_images=[_source(header)],
        finding_type=NOT_ASSESSED,
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(NOT_ASSESSED_REASON, reason)],
    )


def build_sr(
    *,
    snapshot: dict[str, Any],
    headers: dict[str, dict[str, Any]],
    uids: dict[str, str],
    previous: dict[str, str] | None = None,
    preliminary: bool = False,
) -> Dataset:
    """The SR of one report version. ``headers`` maps an image id of the snapshot to its source instance's header;
    images not received over DICOM are left out (nothing to refer to). ``previous`` names the SR this one amends."""
    groups = []
    evidence: list[Dataset] = []
    for image in snapshot["images"]:
        header = headers.get(image["id"])
        if header is None:
            continue
        evidence.append(evidence_dataset(header))
        # Every image has its entry: "not assessed by the AI" (with why), its findings, or "no finding" when the AI
        # assessed it and nothing is reported.
        not_assessed = _not_assessed_group(image, header)
        if not_assessed is not None:
            groups.append(not_assessed)
        # A suggestion the dentist rejected is not a finding: left out, as FHIR leaves it out (a viewer shows a
        # group's finding type and region, not our private review code).
        findings = [finding for finding in image["findings"] if finding.get("status") != "rejected"]
        groups.extend(_group(finding, header) for finding in findings)
        if not_assessed is None and not findings:
            groups.append(
                hd.sr.MeasurementsAndQualitativeEvaluations(
                    tracking_identifier=hd.sr.TrackingIdentifier(
                        uid=stable_uid("no-finding", header["SOPInstanceUID"]), identifier="no finding"
                    ),
                    source_images=[_source(header)],
                    finding_type=NO_FINDING,
                )
            )
    if not evidence:
        raise ValueError("no image of this report was received over DICOM")
    signer = snapshot.get("signed_by", {}).get("name") or "Unknown"
    person = hd.sr.ObserverContext(
        observer_type=codes.DCM.Person,
        observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(name=_person_name(signer)),
    )
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=stable_uid("device", str(snapshot.get("clinic", {}).get("id", ""))),
            name=MANUFACTURER,
            manufacturer_name=MANUFACTURER,
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(
            observer_person_context=None if preliminary else person, observer_device_context=device
        ),
        procedure_reported=PROCEDURE,
        imaging_measurements=groups,
    )
    previous_versions = None
    if previous:
        first = evidence[0]
        prior = Dataset()
        prior.StudyInstanceUID = first.StudyInstanceUID
        prior.SeriesInstanceUID = previous["series"]
        prior.SOPInstanceUID = previous["sop"]
        prior.SOPClassUID = ComprehensiveSRStorage
        prior.PatientID, prior.PatientName = first.PatientID, first.PatientName
        prior.PatientBirthDate, prior.PatientSex = first.PatientBirthDate, first.PatientSex
        previous_versions = [prior]
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report,
        series_instance_uid=uids["series"],
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=uids["sop"],
        instance_number=max(1, int(snapshot.get("version", 1))),
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=not preliminary,
        is_verified=not preliminary,
        verifying_observer_name=None if preliminary else _person_name(signer),
        verifying_organization=None if preliminary else snapshot.get("clinic", {}).get("name", "")[:64] or "Clinic",
        institution_name=snapshot.get("clinic", {}).get("name", "")[:64] or None,
        previous_versions=previous_versions,
        series_description="AI findings, dentist-reviewed" if not preliminary else "AI findings, preliminary",
    )
    now = dt.datetime.now()
    sr.ContentDate, sr.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    return sr


def _person_name(name: str) -> str:
    parts = name.strip().split()
    if len(parts) >= 2:
        return f"{parts[-1]}^{' '.join(parts[:-1])}"[:64]
    return (parts[0] if parts else "Unknown")[:63] + "^"  # one component: the family name


def build_sc(
    *, pixels: PILImage.Image, findings: list[dict[str, Any]], header: dict[str, Any], uids: dict[str, str], number: int
) -> Dataset:
    """A secondary capture of one source image with its reviewed findings burned in, in the source's study."""
    burned = annotate(pixels, findings)
    arr = np.asarray(burned.convert("RGB"), dtype=np.uint8)
    birth = header.get("PatientBirthDate") or None
    sc = hd.sc.SCImage(
        pixel_array=arr,
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        study_instance_uid=header["StudyInstanceUID"],
        series_instance_uid=uids["series"],
        series_number=SC_SERIES_NUMBER,
        # the send's UID for the first image, one derived from it and the source image for the others
        sop_instance_uid=uids["sop"] if number == 1 else stable_uid(uids["sop"], header["SOPInstanceUID"]),
        instance_number=number,
        manufacturer=MANUFACTURER,
        patient_id=header.get("PatientID") or None,
        patient_name=header.get("PatientName") or None,
        patient_birth_date=birth,
        patient_sex=header.get("PatientSex") or None,
        accession_number=header.get("AccessionNumber") or None,
        study_id=header.get("StudyID") or None,
        study_date=header.get("StudyDate") or None,
        study_time=header.get("StudyTime") or None,
        referring_physician_name=header.get("ReferringPhysicianName") or None,
        patient_orientation=("A", "F"),
    )
    sc.BurnedInAnnotation = "YES"
    sc.SeriesDescription = "AI findings, dentist-reviewed (burned in)"
    return sc
