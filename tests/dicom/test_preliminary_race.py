"""Two analyses of one visit finishing at the same moment (two workers, PostgreSQL): the visit's preliminary SR is
queued once. Each used to see the other still running, and neither queued it."""

from __future__ import annotations

import io
import threading
from typing import Any

import pytest
from django.db import connections, transaction

from analysis.models import Analysis
from clinics.tenancy import clinic_scope
from dicom.models import DicomInstance, DicomSend
from dicom.services import dicom_node_configure, preliminary_check
from patients.services import image_ingest

from ..conftest import build_clinic, png_bytes, requires_postgres

pytestmark = [requires_postgres, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("no_seal_on_commit")]


def test_two_analyses_finishing_together_queue_the_preliminary_report_once(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[str] = []
    monkeypatch.setattr("dicom.services._enqueue", lambda send_id, clinic_id, *extra: sent.append(send_id))
    world = build_clinic("prelim")
    visit_id = world.image.visit_id
    with clinic_scope(world.clinic.id):
        dicom_node_configure(
            called_ae="PRELIM_PACS",
            calling_aes=["SENSOR_P"],
            dest_ae="PACS",
            dest_host="127.0.0.1",
            dest_port=11112,
            send_preliminary=True,
        )
        second = image_ingest(
            patient=world.patient,
            stream=io.BytesIO(png_bytes()),
            filename="b.png",
            size=None,
            modality="photo",
            visit_id=visit_id,
        )
        analyses = [world.analysis, Analysis.objects.create(image=second, model_version=world.analysis.model_version)]
        Analysis.objects.filter(pk__in=[a.pk for a in analyses]).update(status="running")
        for image in (world.image, second):  # both received over DICOM
            DicomInstance.objects.create(
                status="matched",
                patient=world.patient,
                image=image,
                modality="photo",
                sop_index=str(image.pk),
                header=b"-",
                calling_ae="SENSOR_P",
            )
    first_checked, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def finish(analysis: Analysis, hold: bool) -> None:
        """A worker recording its analysis as done and checking the visit in the same transaction."""
        try:
            with clinic_scope(world.clinic.id), transaction.atomic():
                Analysis.objects.filter(pk=analysis.pk).update(status="done")
                preliminary_check(visit_id, finished=analysis.pk)
                if hold:
                    first_checked.set()
                    release.wait(30)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            first_checked.set()
            connections.close_all()

    first = threading.Thread(target=finish, args=(analyses[0], True))
    first.start()
    assert first_checked.wait(30)
    second_worker = threading.Thread(target=finish, args=(analyses[1], False))
    second_worker.start()
    second_worker.join(1.0)  # it waits for the first check's transaction (or, before, finished at once)
    release.set()
    first.join(30)
    second_worker.join(30)
    assert not errors, errors
    with clinic_scope(world.clinic.id):
        sends: Any = list(DicomSend.objects.filter(visit_id=visit_id, preliminary=True))
    assert len(sends) == 1 and sent == [str(sends[0].pk)]
