"""``patients.Visit.locked``: the lock that signing writes and that the upload path reads (issue #19: patients
imports nothing of analysis), and the backfill of visits signed before the flag existed."""

from __future__ import annotations

import importlib

from django.apps import apps
from django.urls import reverse

from analysis.models import Amendment, Report
from analysis.reports import visit_locked
from clinics.tenancy import clinic_scope
from patients.models import Visit

from ..conftest import World, token_client


def _locked(world: World, visit_id: object) -> bool:
    with clinic_scope(world.clinic.id):
        return Visit.objects.get(pk=visit_id).locked


def test_signing_sets_the_flag_an_amendment_clears_it_and_signing_it_sets_it_again(alice: World) -> None:
    dentist = token_client(alice, "dentist")
    visit_id = alice.image.visit_id
    review = reverse("api:finding-review", kwargs={"pk": alice.finding.pk})
    assert dentist.post(review, {"decision": "confirm"}, format="json").status_code == 200
    assert not _locked(alice, visit_id)
    assert dentist.post(reverse("api:visit-report", kwargs={"pk": visit_id})).status_code == 201
    assert _locked(alice, visit_id)
    amend = reverse("api:visit-amendment", kwargs={"pk": visit_id})
    assert dentist.post(amend, {"reason": "second look"}, format="json").status_code == 201
    assert not _locked(alice, visit_id)
    assert dentist.post(reverse("api:visit-report", kwargs={"pk": visit_id})).status_code == 201
    assert _locked(alice, visit_id)
    with clinic_scope(alice.clinic.id):
        # analysis' rule reads the row, not the caller's instance (alice.image.visit predates the signatures)
        assert alice.image.visit.locked is False and visit_locked(alice.image.visit) is True


def test_backfill_locks_exactly_the_signed_visits_without_an_open_amendment(alice: World) -> None:
    migration = importlib.import_module("analysis.migrations.0008_visit_locked_backfill")
    dentist = alice.users["dentist"]
    with clinic_scope(alice.clinic.id):
        unsigned, signed, amending, amended = (Visit.objects.create(patient=alice.patient) for _ in range(4))
        for visit in (signed, amending, amended):
            Report.objects.create(visit=visit, version=1, content=b"", signed_by=dentist)
        Amendment.objects.create(visit=amending, reason="open", opened_by=dentist)
        v2 = Report.objects.create(visit=amended, version=2, content=b"", signed_by=dentist)
        Amendment.objects.create(visit=amended, reason="closed", opened_by=dentist, report=v2)
        Visit.objects.update(locked=False)  # rows written before the flag existed
    migration.lock_signed_visits(apps, None)  # as the migration runs it: no clinic in scope
    assert [_locked(alice, v.pk) for v in (unsigned, signed, amending, amended)] == [False, True, False, True]
    assert not _locked(alice, alice.image.visit_id)
