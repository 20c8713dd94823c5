"""Restricted records and emergency ("break-glass") access: reason required, time-boxed, audited,
admins notified, expires by itself; shown on the clinic's audit page."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
from datetime import timedelta
from typing import Any

from django.core import mail
from django.urls import reverse
from django.utils import timezone

from analysis.models import Analysis
from clinics.models import AuditEvent
from clinics.tenancy import clinic_scope
from patients.models import BreakGlassGrant, Patient
from patients.services import image_ingest, patient_create

from ..conftest import World, key_client, png_bytes, token_client, user_client


def _restrict(world: World) -> None:
    with clinic_scope(world.clinic.id):
        Patient.objects.filter(pk=world.patient.pk).update(restricted=True)


def test_only_dentists_and_admins_restrict_a_record(alice: World) -> None:
    url = reverse("patients:restrict", kwargs={"pk": alice.patient.pk})
    assert user_client(alice.users["staff"]).post(url, {"restricted": "1"}).status_code == 403
    assert user_client(alice.users["dentist"]).post(url, {"restricted": "1"}).status_code == 302
    assert Patient.unscoped.get(pk=alice.patient.pk).restricted
    assert AuditEvent.unscoped.filter(action="patient.restrict", object_id=str(alice.patient.pk)).exists()


def test_a_restricted_record_is_closed_to_staff_everywhere(alice: World) -> None:
    _restrict(alice)
    staff = user_client(alice.users["staff"])
    page = staff.get(reverse("patients:detail", kwargs={"pk": alice.patient.pk}))
    assert page.status_code == 403 and b"Open emergency access" in page.content
    assert alice.patient_name.encode() not in page.content
    assert staff.get(reverse("patients:image", kwargs={"pk": alice.image.pk})).status_code == 403
    assert staff.get(reverse("analysis:review", kwargs={"pk": alice.image.visit_id})).status_code == 403
    api = token_client(alice, "staff")
    for name, pk in (
        ("api:patient-detail", alice.patient.pk),
        ("api:image-file", alice.image.pk),
        ("api:analysis-detail", alice.analysis.pk),
    ):
        response = api.get(reverse(name, kwargs={"pk": pk}))
        assert response.status_code == 403 and response.json()["error"]["code"] == "restricted_patient", name
    # An integration's API key cannot read it, nor open emergency access.
    key = key_client(alice)
    assert key.get(reverse("api:patient-detail", kwargs={"pk": alice.patient.pk})).status_code == 403
    glass = reverse("api:patient-break-glass", kwargs={"pk": alice.patient.pk})
    assert key.post(glass, {"reason": "integration wants in"}, format="json").status_code == 403
    # Dentists and admins work as before.
    assert (
        user_client(alice.users["dentist"]).get(reverse("patients:detail", kwargs={"pk": alice.patient.pk})).status_code
        == 200
    )
    assert (
        token_client(alice, "clinic_admin")
        .get(reverse("api:patient-detail", kwargs={"pk": alice.patient.pk}))
        .status_code
        == 200
    )
    assert AuditEvent.unscoped.filter(action="patient.restricted.denied", outcome="denied").exists()


def _pk_routes() -> dict[str, str]:
    """Every named route whose path takes a ``pk``: name -> path."""
    from django.urls import URLResolver, get_resolver

    def walk(resolver: URLResolver, prefix: str, namespace: str | None) -> Any:
        for entry in resolver.url_patterns:
            if isinstance(entry, URLResolver):
                yield from walk(entry, prefix + str(entry.pattern), entry.namespace or namespace)
            elif entry.name:
                yield (f"{namespace}:{entry.name}" if namespace else entry.name), prefix + str(entry.pattern)

    return {name: path for name, path in walk(get_resolver(), "", None) if "<uuid:pk>" in path}


def test_every_route_of_one_object_is_either_guarded_or_said_not_to_be_a_patients_record() -> None:
    from patients.restricted import NOT_PATIENT_ROUTES, PATIENT_ROUTES

    routes = _pk_routes()
    undecided = sorted(set(routes) - set(PATIENT_ROUTES) - set(NOT_PATIENT_ROUTES))
    assert not undecided, f"routes neither guarded nor exempted: {undecided}"
    assert not set(PATIENT_ROUTES) & set(NOT_PATIENT_ROUTES)
    assert set(PATIENT_ROUTES) <= set(routes)  # no stale entry


def test_a_restricted_record_is_closed_on_its_chart_note_findings_and_retry(alice: World) -> None:
    """Routes that once missed the guard: each answered a staff member (and an API key) for a restricted record."""
    _restrict(alice)
    visit = alice.image.visit_id
    staff = user_client(alice.users["staff"])
    page = staff.get(reverse("analysis:chart", kwargs={"pk": visit}))
    assert page.status_code == 403 and alice.patient_name.encode() not in page.content
    finding = reverse("api:finding-detail", kwargs={"pk": alice.finding.pk})
    note = reverse("api:visit-note", kwargs={"pk": visit})
    retry = reverse("api:analysis-retry", kwargs={"pk": alice.analysis.pk})
    for client in (token_client(alice, "staff"), key_client(alice)):
        for response in (
            client.get(finding),  # (changing a finding is a dentist's: staff and keys never pass the role check)
            client.get(note),
            client.post(retry),
        ):
            assert response.status_code == 403, response.content
            assert response.json()["error"]["code"] == "restricted_patient", (response.request, response.content)
    denied = AuditEvent.unscoped.filter(action="patient.restricted.denied").values_list("details__route", flat=True)
    assert {"analysis:chart", "api:finding-detail", "api:visit-note", "api:analysis-retry"} <= set(denied)
    # A dentist still reads them.
    assert user_client(alice.users["dentist"]).get(reverse("analysis:chart", kwargs={"pk": visit})).status_code == 200
    assert token_client(alice, "dentist").get(finding).status_code == 200


def test_break_glass_needs_a_reason_notifies_admins_is_audited_and_expires(
    alice: World, django_capture_on_commit_callbacks: Any
) -> None:
    _restrict(alice)
    staff = user_client(alice.users["staff"])
    detail = reverse("patients:detail", kwargs={"pk": alice.patient.pk})
    glass = reverse("patients:break-glass", kwargs={"pk": alice.patient.pk})
    assert staff.post(glass, {"reason": "  "}).status_code == 400
    assert not BreakGlassGrant.unscoped.exists()
    with django_capture_on_commit_callbacks(execute=True):
        response = staff.post(glass, {"reason": "Patient in pain, dentist in surgery"})
    assert response.status_code == 302 and response["Location"] == detail
    grant = BreakGlassGrant.unscoped.get()
    assert timedelta(minutes=59) < grant.expires_at - timezone.now() <= timedelta(minutes=60)
    # The clinic admins were told at once, without the patient's name or the reason.
    assert len(mail.outbox) == 1 and mail.outbox[0].to == [alice.users["clinic_admin"].email]
    assert str(alice.patient.pk) in mail.outbox[0].body
    assert alice.patient_name not in mail.outbox[0].body and "pain" not in mail.outbox[0].body
    # Access works now, and each use is recorded.
    page = staff.get(detail)
    assert page.status_code == 200 and b"emergency access until" in page.content
    assert staff.get(reverse("patients:image", kwargs={"pk": alice.image.pk})).status_code == 200
    uses = AuditEvent.unscoped.filter(action="breakglass.use", details__grant=str(grant.pk))
    assert uses.count() == 2
    opened = AuditEvent.unscoped.get(action="breakglass.open")
    assert opened.actor_user_id == alice.users["staff"].pk and opened.details["grant"] == str(grant.pk)
    # The admins see it, with the reason and the number of uses, on the audit page.
    audit_page = user_client(alice.users["clinic_admin"]).get(reverse("clinics:audit"))
    assert b"Patient in pain, dentist in surgery" in audit_page.content
    assert audit_page.context["grants"][0].uses == 2
    assert b'data-testid="reason-altered"' not in audit_page.content
    # the reason's digest is sealed in the trail: a reason edited in the database afterwards shows
    assert opened.details["reason_sha256"] == hashlib.sha256(b"Patient in pain, dentist in surgery").hexdigest()
    BreakGlassGrant.unscoped.filter(pk=grant.pk).update(reason="Routine check")
    edited = user_client(alice.users["clinic_admin"]).get(reverse("clinics:audit"))
    assert b'data-testid="reason-altered"' in edited.content
    # It expires by itself.
    BreakGlassGrant.unscoped.filter(pk=grant.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert staff.get(detail).status_code == 403


def test_break_glass_through_the_api(alice: World, bob: World) -> None:
    _restrict(alice)
    api = token_client(alice, "staff")
    url = reverse("api:patient-break-glass", kwargs={"pk": alice.patient.pk})
    short = api.post(url, {"reason": "x"}, format="json")
    assert short.status_code == 400
    opened = api.post(url, {"reason": "Emergency, no dentist on site"}, format="json")
    assert opened.status_code == 201, opened.content
    assert opened.json()["patient"] == str(alice.patient.pk)
    assert api.get(reverse("api:patient-detail", kwargs={"pk": alice.patient.pk})).status_code == 200
    # Another clinic's member cannot even learn the record exists.
    other = token_client(bob, "staff").post(url, {"reason": "Emergency, no dentist on site"}, format="json")
    assert other.status_code == 404


def test_unrestricted_records_need_no_emergency_access(alice: World) -> None:
    url = reverse("patients:break-glass", kwargs={"pk": alice.patient.pk})
    staff = user_client(alice.users["staff"])
    assert staff.post(url, {"reason": "Just checking something"}).status_code == 409
    assert staff.get(reverse("patients:detail", kwargs={"pk": alice.patient.pk})).status_code == 200


def test_lists_leave_out_restricted_clinical_data(alice: World) -> None:
    with clinic_scope(alice.clinic.id):  # an open record beside the restricted one
        other = patient_create(
            external_id="open-1", given_name="Open", family_name="Record", date_of_birth=dt.date(1990, 1, 2)
        )
        image = image_ingest(
            patient=other, stream=io.BytesIO(png_bytes()), filename="a.png", size=None, modality="photo"
        )
        open_analysis = Analysis.objects.create(
            image=image, model_version=alice.analysis.model_version, status="done", input_sha256=image.sha256
        )
    _restrict(alice)
    url = reverse("api:analysis-list")
    staff, key, dentist = (
        c.get(url).json() for c in (token_client(alice, "staff"), key_client(alice), token_client(alice, "dentist"))
    )
    restricted, shown = str(alice.analysis.pk), str(open_analysis.pk)
    for page in (staff, key):
        assert [a["id"] for a in page["results"]] == [shown] and page["count"] == 1
    assert {a["id"] for a in dentist["results"]} == {restricted, shown} and dentist["count"] == 2
    filtered = key_client(alice).get(url, {"status": "done"}).json()
    assert [a["id"] for a in filtered["results"]] == [shown] and filtered["count"] == 1
