"""Signing against decisions and scans in flight (PostgreSQL, where they run in parallel; SQLite serialises every
write transaction). Signing holds the visit's row while it snapshots the findings: a decision, retry or scan of that
visit that started before the signature commits waits for it and is then refused, so the signed report is never
contradicted by a change written beside it. (A finding added or a retry asked in that window used to be written
beside the signature; a decision and a scan were held back only by the locks signing's joins happened to take.)"""

from __future__ import annotations

import datetime as dt
import io
import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connections, transaction

from analysis.models import Analysis, Finding, Report
from analysis.reports import report_content, report_sign
from analysis.reviews import finding_add, finding_review
from analysis.services import analysis_retry
from analysis.uploads import image_upload
from clinics.services import ServiceError
from clinics.tenancy import clinic_scope
from patients.models import Image
from patients.services import patient_create

from ..conftest import World, build_clinic, png_bytes, requires_postgres

pytestmark = [requires_postgres, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("no_seal_on_commit")]


def _in_thread(clinic_id: object, work: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """Run ``work`` in the clinic's scope on a thread of its own (its own connection); the outcome lands in the dict."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            with clinic_scope(clinic_id):
                outcome["result"] = work()
        except BaseException as exc:  # noqa: BLE001 - the test reads it
            outcome["error"] = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def _signing_held_open(world: World, release: threading.Event, signed: threading.Event) -> Callable[[], Report]:
    def sign() -> Report:
        with transaction.atomic():  # the signature is made, then its transaction waits before committing
            report = report_sign(visit=world.image.visit, signer=world.users["dentist"])
            signed.set()
            release.wait(30)
        return report

    return sign


def _race(world: World, change: Callable[[], Any]) -> dict[str, Any]:
    """Sign the visit in one transaction held open; meanwhile ``change`` starts on another connection; then the
    signature commits. Returns the change's outcome."""
    release, signed = threading.Event(), threading.Event()
    signer, signing = _in_thread(world.clinic.id, _signing_held_open(world, release, signed))
    try:
        assert signed.wait(30), signing
        changer, changing = _in_thread(world.clinic.id, change)
        changer.join(1.0)
        assert changer.is_alive(), f"the change did not wait for the signature: {changing}"
    finally:
        release.set()
        signer.join(30)
    changer.join(30)
    assert "error" not in signing, signing
    return changing


@pytest.fixture
def world() -> World:
    world = build_clinic("race")
    with clinic_scope(world.clinic.id):
        finding_review(finding=world.finding, decision="confirm", actor=world.users["dentist"])
    return world


def test_a_decision_made_while_the_report_is_signed_is_refused_not_written_beside_it(world: World) -> None:
    outcome = _race(
        world,
        lambda: finding_review(
            finding=world.finding, decision="reject", reason="not_present", actor=world.users["dentist"]
        ),
    )
    assert isinstance(outcome.get("error"), ServiceError) and outcome["error"].code == "report_signed", outcome
    with clinic_scope(world.clinic.id):
        assert Finding.objects.get(pk=world.finding.pk).status == "confirmed"
        [report] = Report.objects.filter(visit_id=world.image.visit_id)
        [image] = report_content(report)["images"]
        assert [f["status"] for f in image["findings"]] == ["confirmed"]


def test_a_scan_sent_to_a_visit_being_signed_is_refused_and_stores_nothing(world: World) -> None:
    def upload() -> Image:
        return image_upload(
            patient=world.patient,
            stream=io.BytesIO(png_bytes()),
            filename="late.png",
            size=None,
            modality="photo",
            visit_id=world.image.visit_id,
        )

    outcome = _race(world, upload)
    assert isinstance(outcome.get("error"), ServiceError) and outcome["error"].code == "visit_signed", outcome
    with clinic_scope(world.clinic.id):
        assert list(Image.objects.filter(visit_id=world.image.visit_id)) == [world.image]


def test_a_finding_added_while_the_report_is_signed_is_refused(world: World) -> None:
    outcome = _race(
        world,
        lambda: finding_add(
            image=world.image, condition="caries", box=[0.1, 0.1, 0.2, 0.2], actor=world.users["dentist"]
        ),
    )
    assert isinstance(outcome.get("error"), ServiceError) and outcome["error"].code == "report_signed", outcome
    with clinic_scope(world.clinic.id):
        assert list(Finding.objects.filter(image=world.image)) == [world.finding]


def test_a_retry_asked_while_the_report_is_signed_is_refused(world: World) -> None:
    with clinic_scope(world.clinic.id):
        Analysis.objects.filter(pk=world.analysis.pk).update(status="failed")
        failed = Analysis.objects.select_related("image").get(pk=world.analysis.pk)
    outcome = _race(world, lambda: analysis_retry(analysis=failed))
    assert isinstance(outcome.get("error"), ServiceError) and outcome["error"].code == "report_signed", outcome
    with clinic_scope(world.clinic.id):
        assert Analysis.objects.get(pk=world.analysis.pk).status == "failed"


def test_signing_holds_its_visit_not_the_clinic(world: World) -> None:
    """A scan of another patient is stored while a signature is being made: signing locks the visit's row only (it
    used to lock the joined clinic row too, which held every upload and audited insert of the clinic)."""
    with clinic_scope(world.clinic.id):
        other = patient_create(
            external_id="race-0002", given_name="Other", family_name="Patient", date_of_birth=dt.date(1990, 1, 2)
        )
    release, signed = threading.Event(), threading.Event()
    signer, signing = _in_thread(world.clinic.id, _signing_held_open(world, release, signed))
    try:
        assert signed.wait(30), signing
        uploader, uploading = _in_thread(
            world.clinic.id,
            lambda: image_upload(
                patient=other, stream=io.BytesIO(png_bytes()), filename="o.png", size=None, modality="photo"
            ),
        )
        uploader.join(15)
        assert not uploader.is_alive() and "error" not in uploading, uploading
    finally:
        release.set()
        signer.join(30)
    assert "error" not in signing, signing
