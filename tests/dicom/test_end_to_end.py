"""End to end with real parts: storescu (dcmtk) sends to ``manage.py dicom_scp`` (a subprocess), a dentist signs through
the API, and a private Orthanc receives the structured report and the secondary capture, checked with highdicom and
dicom3tools' dciodvfy."""

from __future__ import annotations

import io
import subprocess
import time

import highdicom as hd
import pydicom
import pytest
from pydicom.uid import generate_uid

from analysis.models import Analysis, Finding
from clinics.models import AuditEvent
from clinics.tenancy import clinic_scope
from core import conditions
from dicom.models import DicomInstance, DicomSend, InstanceStatus, SendStatus
from dicom.services import dicom_node_configure, instance_header
from patients.models import Image

from ..conftest import build_clinic, token_client
from .conftest import needs_dicom_tools
from .factories import photo_dataset, write, xray_dataset
from .scp_process import dicom_scp, scp_log

pytestmark = [needs_dicom_tools, pytest.mark.dicom]


def storescu(port: int, called: str, calling: str, *paths) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["storescu", "-aet", calling, "-aec", called, "127.0.0.1", str(port), *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def configure(world, *, called: str, calling: list[str], orthanc=None, preliminary: bool = False) -> None:
    dest = {"send_preliminary": preliminary}
    if orthanc is not None:
        dest |= {"dest_ae": orthanc.aet, "dest_host": "127.0.0.1", "dest_port": orthanc.dicom_port}
    with clinic_scope(world.clinic.id):
        dicom_node_configure(called_ae=called, calling_aes=calling, **dest)


def wait_analysed(clinic_id, count: int, timeout: float = 240) -> list[Analysis]:
    deadline = time.monotonic() + timeout
    with clinic_scope(clinic_id):
        while time.monotonic() < deadline:
            rows = list(Analysis.objects.filter(image__dicom_instance__isnull=False))
            if len(rows) >= count and all(a.status not in ("queued", "running") for a in rows):
                return rows
            time.sleep(0.5)
    raise AssertionError("analyses did not finish")


def review_and_sign(world, visit_id) -> dict:
    """The dentist confirms the first model finding per image, rejects the others, adds one per X-ray, signs."""
    client = token_client(world, "dentist")
    decided = {"confirmed": [], "rejected": [], "added": []}
    with clinic_scope(world.clinic.id):
        images = list(Image.objects.filter(visit_id=visit_id, dicom_instance__isnull=False))
        # Each analysed image carries model findings: the model's own where it found some, else one we record for it
        # (the synthetic images are not real mouths: the gate may refuse them).
        for image in images:
            analysis = Analysis.objects.filter(image=image).first()
            if analysis is not None and analysis.status != "done":
                analysis.status = "done"
                analysis.save(update_fields=["status"])
            if not Finding.objects.filter(image=image, source="model").exists():
                for condition, p in (
                    (("caries", 0.8), ("gingivitis", 0.6))
                    if image.modality == "photo"
                    else (("filling", 0.9), ("cavity", 0.55))
                ):
                    Finding.objects.create(
                        analysis=analysis, image=image, condition=condition, probability=p, box=[0.3, 0.3, 0.2, 0.2]
                    )
        pending = [
            (f.pk, f.image_id, f.image.modality)
            for f in Finding.objects.filter(image__visit_id=visit_id, status="pending")
            .select_related("image")
            .order_by("image_id", "-probability")
        ]
        xrays = [i.pk for i in images if i.modality == "xray"]
        dicom_images = {i.pk for i in images}
    seen = set()
    for finding_id, image_id, _modality in pending:
        first = image_id not in seen
        seen.add(image_id)
        body = {"decision": "confirm"} if first else {"decision": "reject", "reason": "not_present"}
        answer = client.post(f"/api/v1/findings/{finding_id}/review/", body, format="json")
        assert answer.status_code == 200, answer.content
        if image_id in dicom_images:  # the clinic fixture's uploaded photo is in the visit too, not in the SR
            decided["confirmed" if first else "rejected"].append(str(finding_id))
    for image_id in xrays:
        answer = client.post(
            f"/api/v1/images/{image_id}/findings/", {"condition": "cavity", "box": [0.1, 0.1, 0.1, 0.1]}, format="json"
        )
        assert answer.status_code == 201, answer.content
        decided["added"].append(answer.json()["id"])
    answer = client.post(f"/api/v1/visits/{visit_id}/report/", {}, format="json")
    assert answer.status_code == 201, answer.content
    decided["report"] = answer.json()["id"]
    return decided


def _walk(items):
    for item in items:
        yield item
        yield from _walk(item.get("ContentSequence", []))


@pytest.mark.slow
def test_storescu_to_sr_in_orthanc(transactional_db, orthanc, tmp_path, _image_storage, eager) -> None:
    alice = build_clinic("alice", patient_name="Alicesonmarker")
    bob = build_clinic("bob", patient_name="Bobsonmarker")
    configure(alice, called="ALICE_PACS", calling=["SENSOR_A"], orthanc=orthanc, preliminary=True)
    configure(bob, called="BOB_PACS", calling=["SENSOR_B"])
    study = generate_uid()
    xray = xray_dataset(patient_id="alice-0001", study_uid=study)
    photo = photo_dataset(patient_id="alice-0001", study_uid=study)
    paths = [write(xray, tmp_path / "xray.dcm"), write(photo, tmp_path / "photo.dcm")]

    with dicom_scp(_image_storage) as port:
        run = storescu(port, "ALICE_PACS", "SENSOR_A", *paths)
        assert run.returncode == 0, run.stderr + scp_log(_image_storage)
        analyses = wait_analysed(alice.clinic.id, 2)

    with clinic_scope(alice.clinic.id):
        instances = list(DicomInstance.objects.select_related("image", "patient").order_by("received_at"))
        assert [i.status for i in instances] == [InstanceStatus.MATCHED] * 2
        assert {i.patient_id for i in instances} == {alice.patient.pk}
        assert sorted(i.image.modality for i in instances) == ["photo", "xray"]
        xray_image = next(i.image for i in instances if i.modality == "xray")
        assert (xray_image.bit_depth, xray_image.original_format) == (16, "DICOM")
        # UIDs are kept, encrypted: readable with the patient's key, absent from the stored bytes
        headers = {str(i.image_id): instance_header(i) for i in instances}
        assert {h["SOPInstanceUID"] for h in headers.values()} == {xray.SOPInstanceUID, photo.SOPInstanceUID}
        assert all(xray.SOPInstanceUID.encode() not in bytes(i.header) for i in instances)
        assert {a.status for a in analyses} <= {"done", "not_assessable"}
        visit_id = xray_image.visit_id
    # the sanitised image served carries no DICOM tag
    served = token_client(alice, "staff").get(f"/api/v1/images/{xray_image.pk}/file")
    assert served.status_code == 200 and b"alice-0001" not in served.content and b"DICM" not in served.content

    # the clinic asked for a preliminary report: sent by the receiver's process once both images were analysed
    deadline = time.monotonic() + 60
    while not orthanc.instances() and time.monotonic() < deadline:
        time.sleep(0.5)
    [preliminary] = orthanc.instances()
    assert preliminary["StudyInstanceUID"] == study and preliminary["VerificationFlag"] == "UNVERIFIED"
    assert preliminary["CompletionFlag"] == "COMPLETE"

    decided = review_and_sign(alice, visit_id)

    with clinic_scope(alice.clinic.id):
        sends = {(s.kind, s.preliminary): s.status for s in DicomSend.objects.all()}
        assert sends == {("sr", True): "sent", ("sr", False): SendStatus.SENT, ("sc", False): SendStatus.SENT}
    stored = orthanc.instances()
    assert {s["StudyInstanceUID"] for s in stored} == {study}
    by_class = {}
    for item in stored:
        by_class.setdefault(item["SOPClassUID"], []).append(item)
    sr_items = [i for i in by_class[pydicom.uid.Comprehensive3DSRStorage] if i["id"] != preliminary["id"]]
    assert len(sr_items) == 1 and len(by_class[pydicom.uid.SecondaryCaptureImageStorage]) == 2

    raw = orthanc.file(sr_items[0]["id"])
    (tmp_path / "sr.dcm").write_bytes(raw)
    sr = hd.sr.srread(tmp_path / "sr.dcm")
    assert sr.StudyInstanceUID == study and sr.PatientID == "alice-0001"
    # the signed SR replaces the preliminary one
    [[prior]] = [
        [ref for series in s.ReferencedSeriesSequence for ref in series.ReferencedSOPSequence]
        for s in sr.PredecessorDocumentsSequence
    ]
    assert prior.ReferencedSOPInstanceUID == preliminary["SOPInstanceUID"]
    assert sr.VerificationFlag == "VERIFIED" and sr.CompletionFlag == "COMPLETE"
    referenced = {
        ref.ReferencedSOPInstanceUID
        for ev in sr.CurrentRequestedProcedureEvidenceSequence
        for series in ev.ReferencedSeriesSequence
        for ref in series.ReferencedSOPSequence
    }
    assert referenced == {xray.SOPInstanceUID, photo.SOPInstanceUID}
    with clinic_scope(alice.clinic.id):
        condition_of = {str(f.pk): f.condition for f in Finding.objects.all()}
    groups = list(sr.content.get_planar_roi_measurement_groups()) + list(sr.content.get_image_measurement_groups())
    outcomes = {}
    for group in groups:
        if group.roi is not None:
            [source] = group.roi.ContentSequence
            assert source.ReferencedSOPSequence[0].ReferencedSOPInstanceUID in referenced
            points = group.roi.value
            assert points.shape == (5, 2) and (points >= 0).all() and (points[:, 0] <= 512).all()
        [evaluation] = [e for e in group.get_qualitative_evaluations() if e.name.value == "review-outcome"]
        finding_id = group.tracking_identifier.split()[-1]
        outcomes[finding_id] = evaluation.value.value
        snomed = conditions.get(condition_of[finding_id]).snomed
        expected = ("SCT", snomed[0]) if snomed else ("99DSCAN", condition_of[finding_id])
        assert (group.finding_type.scheme_designator, group.finding_type.value) == expected
        texts = {
            item.ConceptNameCodeSequence[0].CodeValue: getattr(item, "TextValue", None)
            for item in _walk(group)
            if "ConceptNameCodeSequence" in item
        }
        if evaluation.value.value != "added":
            assert texts.get("111001") and texts.get("111003")  # algorithm name and version
            [probability] = [m for m in group.get_measurements() if m.name.value == "122157"]
            assert 0 <= probability.value <= 1
    assert {fid: "confirmed" for fid in decided["confirmed"]}.items() <= outcomes.items()
    assert {fid: "added" for fid in decided["added"]}.items() <= outcomes.items()
    for fid in decided["rejected"]:
        assert outcomes.get(fid, "rejected") == "rejected"  # never sent as confirmed
    run = subprocess.run(["dciodvfy", str(tmp_path / "sr.dcm")], capture_output=True, text=True, timeout=60)
    errors = [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]
    assert not errors, run.stdout + run.stderr
    with clinic_scope(alice.clinic.id):
        assert AuditEvent.objects.filter(action="dicom.send", outcome="success").count() == 3
        assert AuditEvent.objects.filter(action="dicom.instance.receive").count() == 2

    # an amendment, signed: a new SR that names the one it replaces; the first stays in the PACS
    dentist = token_client(alice, "dentist")
    assert dentist.post(f"/api/v1/visits/{visit_id}/amendments/", {"reason": "typo"}, format="json").status_code == 201
    assert dentist.post(f"/api/v1/visits/{visit_id}/report/", {}, format="json").status_code == 201
    new_srs = [
        i
        for i in orthanc.instances()
        if i["SOPClassUID"] == pydicom.uid.Comprehensive3DSRStorage
        and i["id"] not in {preliminary["id"], sr_items[0]["id"]}
    ]
    assert len(new_srs) == 1
    amended = pydicom.dcmread(io.BytesIO(orthanc.file(new_srs[0]["id"])))
    [[prior]] = [
        [ref for series in s.ReferencedSeriesSequence for ref in series.ReferencedSOPSequence]
        for s in amended.PredecessorDocumentsSequence
    ]
    assert prior.ReferencedSOPInstanceUID == sr.SOPInstanceUID and amended.InstanceNumber == 2
