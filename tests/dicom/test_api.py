"""The DICOM API and pages: node settings, the inbox (assign to a patient or a new one), sent results with resend."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command
from pydicom.uid import generate_uid

from analysis.models import Analysis
from clinics.models import AuditEvent
from clinics.tenancy import clinic_scope
from dicom.models import DicomInstance, DicomNode, DicomSend, InstanceStatus
from dicom.services import instance_receive, send_queue

from ..conftest import tasks_on_commit, token_client, user_client
from .factories import xray_dataset


def receive_unmatched(world, patient_id: str = "P-404") -> DicomInstance:  # noqa: ANN001
    buffer = io.BytesIO()
    ds = xray_dataset(patient_id=patient_id, name="Unknown^Person", birth="19610203", study_uid=generate_uid())
    ds.save_as(buffer, enforce_file_format=True)
    with clinic_scope(world.clinic.id):
        return instance_receive(data=buffer.getvalue(), calling_ae="SENSOR").instance


def test_node_settings_api(alice, bob) -> None:  # noqa: ANN001
    admin = token_client(alice, "clinic_admin")
    assert admin.get("/api/v1/dicom/node/").json()["called_ae"] == ""
    body = {
        "called_ae": "ALICE",
        "calling_aes": ["SENSOR"],
        "dest_ae": "PACS",
        "dest_host": "pacs.lan",
        "dest_port": 104,
    }
    answer = admin.put("/api/v1/dicom/node/", body, format="json")
    assert answer.status_code == 200 and answer.json()["dest_port"] == 104
    taken = token_client(bob, "clinic_admin").put("/api/v1/dicom/node/", {**body, "calling_aes": ["B"]}, format="json")
    assert taken.status_code == 409 and taken.json()["error"]["code"] == "called_ae_taken"
    bad = admin.put("/api/v1/dicom/node/", {**body, "called_ae": "BAD\\AE"}, format="json")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_ae_title"
    with clinic_scope(alice.clinic.id):
        assert AuditEvent.objects.filter(action="dicom.node.update").count() == 1


def test_inbox_assign_to_a_new_patient_through_the_api(alice, bob, eager, django_capture_on_commit_callbacks) -> None:  # noqa: ANN001
    held = receive_unmatched(alice)
    staff = token_client(alice, "staff")
    [item] = staff.get("/api/v1/dicom/inbox/").json()["results"]
    assert item["id"] == str(held.pk) and item["dicom"]["patient_id"] == "P-404"
    assert token_client(bob, "staff").get("/api/v1/dicom/inbox/").json()["results"] == []
    new = {"external_id": "P-404", "given_name": "Person", "family_name": "Unknown", "date_of_birth": "1961-02-03"}
    other = token_client(bob, "staff").post(
        f"/api/v1/dicom/inbox/{held.pk}/assign/", {"new_patient": new}, format="json"
    )
    assert other.status_code == 404
    with django_capture_on_commit_callbacks(execute=True):  # the analysis is sent once the assignment commits
        answer = staff.post(f"/api/v1/dicom/inbox/{held.pk}/assign/", {"new_patient": new}, format="json")
    assert answer.status_code == 200, answer.content
    with clinic_scope(alice.clinic.id):
        instance = DicomInstance.objects.get(pk=held.pk)
        assert instance.status == InstanceStatus.ASSIGNED and str(instance.patient_id) == answer.json()["patient"]
        assert Analysis.objects.get(image=instance.image).status in ("done", "not_assessable")
    again = staff.post(f"/api/v1/dicom/inbox/{held.pk}/assign/", {"new_patient": new}, format="json")
    assert again.status_code == 404  # no longer in the inbox


def test_inbox_page_assigns_by_practice_id(alice, eager) -> None:  # noqa: ANN001
    held = receive_unmatched(alice)
    client = user_client(alice.users["staff"])
    page = client.get("/dicom/inbox/")
    assert page.status_code == 200 and b"P-404" in page.content and page["Cache-Control"] == "no-store"
    answer = client.post("/dicom/inbox/", {"instance": str(held.pk), "patient": "alice-0001", "action": "assign"})
    assert answer.status_code == 302
    with clinic_scope(alice.clinic.id):
        assert DicomInstance.objects.get(pk=held.pk).patient_id == alice.patient.pk


def test_admin_sees_sends_and_resends(alice, django_capture_on_commit_callbacks) -> None:  # noqa: ANN001
    with clinic_scope(alice.clinic.id):
        send = send_queue(visit_id=alice.image.visit_id, report=None, kind="sr")
        DicomSend.objects.filter(pk=send.pk).update(
            status="failed", attempts=8, attempt_log=[{"at": "x", "ok": False, "detail": "unreachable"}]
        )
    admin = token_client(alice, "clinic_admin")
    [row] = admin.get("/api/v1/dicom/sends/").json()["results"]
    assert (row["status"], row["attempts"], row["last_error"]) == ("failed", 8, "unreachable")
    page = user_client(alice.users["clinic_admin"]).get("/dicom/settings/")
    assert page.status_code == 200 and b"unreachable" in page.content and b"Resend" in page.content
    with django_capture_on_commit_callbacks() as callbacks:
        answer = admin.post(f"/api/v1/dicom/sends/{send.pk}/resend/", format="json")
    assert answer.status_code == 202 and answer.json()["status"] == "pending" and len(tasks_on_commit(callbacks)) == 1
    with clinic_scope(alice.clinic.id):
        assert AuditEvent.objects.filter(action="dicom.send.resend").count() == 1


def test_dicom_node_command(alice, bob) -> None:  # noqa: ANN001
    out = io.StringIO()
    call_command(
        "dicom_node",
        "--clinic",
        "alice",
        "--called-ae",
        "ALICE_PACS",
        "--allow-calling",
        "XRAY_PC,PANO",
        "--send-to",
        "PACS@192.168.1.20:104",
        stdout=out,
    )
    assert "results to PACS@192.168.1.20:104" in out.getvalue()
    with clinic_scope(alice.clinic.id):
        node = DicomNode.objects.get()
        assert (node.called_ae, node.calling_aes, node.dest_port) == ("ALICE_PACS", ["PANO", "XRAY_PC"], 104)
    with pytest.raises(CommandError, match="Another clinic"):
        call_command("dicom_node", "--clinic", str(bob.clinic.id), "--called-ae", "ALICE_PACS", "--allow-calling", "B")
    with pytest.raises(CommandError, match="AE@HOST:PORT"):
        call_command("dicom_node", "--clinic", "bob", "--called-ae", "BOB", "--allow-calling", "B", "--send-to", "x")
