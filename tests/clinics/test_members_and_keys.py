from __future__ import annotations

import pytest
from django.core import mail
from django.db.models import ProtectedError
from django.test import Client, TestCase
from django.urls import reverse

from clinics.models import ApiKey, AuditEvent, Membership, Role, User, UserToken
from clinics.tenancy import clinic_scope

from ..conftest import (
    PASSWORD,
    World,
    build_clinic,
    invitation_link,
    key_client,
    requires_postgres,
    token_client,
    user_client,
)


def _invite_and_open(admin: Client, email: str, role: str = "staff") -> tuple[Client, str]:
    """The admin invites ``email``; the person opens the mailed link. Returns their browser and the accept URL."""
    from config.celery import app

    saved, app.conf.task_always_eager = app.conf.task_always_eager, True
    try:
        with TestCase.captureOnCommitCallbacks(execute=True):
            assert admin.post(reverse("clinics:members"), {"email": email, "role": role}).status_code == 302
    finally:
        app.conf.task_always_eager = saved
    person = Client()
    opened = person.get(invitation_link(mail.outbox, email.lower()))
    assert opened.status_code == 302
    return person, opened["Location"]


def test_admin_invites_a_member_who_accepts_and_can_log_in(alice: World) -> None:
    # Issue 24: the admin no longer creates the account with a password; the person accepts the invitation and
    # chooses their own (this test used to post an initial password to the members form).
    admin = user_client(alice.users["clinic_admin"])
    person, accept_url = _invite_and_open(admin, "New.Hygienist@Alice.test")
    done = person.post(
        accept_url,
        {"full_name": "N H", "password1": "a-long-enough-passphrase", "password2": "a-long-enough-passphrase"},
    )
    assert done.status_code == 302
    with clinic_scope(alice.clinic.id):
        membership = Membership.objects.get(user__email="new.hygienist@alice.test")
    assert membership.role == Role.STAFF and membership.display_name == "N H"
    login = Client().post(
        reverse("clinics:login"), {"email": "new.hygienist@alice.test", "password": "a-long-enough-passphrase"}
    )
    assert login.status_code == 302
    assert AuditEvent.unscoped.filter(action="invitation.accept", clinic=alice.clinic).exists()


def test_weak_passwords_are_refused(alice: World) -> None:
    # Issue 24: the password is now chosen by the invited person when accepting, and checked there.
    admin = user_client(alice.users["clinic_admin"])
    person, accept_url = _invite_and_open(admin, "weak@alice.test")
    for weak in ("short1", "password1234", "123456789012"):
        response = person.post(accept_url, {"full_name": "", "password1": weak, "password2": weak})
        assert response.status_code == 400, weak
    with clinic_scope(alice.clinic.id):
        assert not Membership.objects.filter(user__email="weak@alice.test").exists()
    assert not User.objects.filter(email="weak@alice.test").exists()


def test_role_change_and_deactivation_take_effect_at_once(alice: World) -> None:
    admin = user_client(alice.users["clinic_admin"])
    staff_api = token_client(alice, "staff")
    staff_web = user_client(alice.users["staff"])
    assert staff_web.get(reverse("clinics:audit")).status_code == 403
    member_url = reverse("clinics:member-update", kwargs={"pk": alice.memberships["staff"].pk})
    admin.post(member_url, {"role": "clinic_admin"})
    assert staff_web.get(reverse("clinics:audit")).status_code == 200
    admin.post(member_url, {"is_active": "0"})
    # Deactivation ends the person's sessions at once: the next page asks for a log-in.
    response = staff_web.get(reverse("clinics:home"))
    assert response.status_code == 302 and response["Location"].startswith(reverse("clinics:login"))
    assert staff_api.get(reverse("api:patient-list")).status_code == 401
    assert not UserToken.objects.filter(user=alice.users["staff"], revoked_at=None).exists()
    event = AuditEvent.unscoped.filter(action="member.update").latest("id")
    assert event.details["after"] == {"role": "clinic_admin", "is_active": False}


def test_the_last_admin_cannot_be_removed(alice: World) -> None:
    admin = user_client(alice.users["clinic_admin"])
    url = reverse("clinics:member-update", kwargs={"pk": alice.memberships["clinic_admin"].pk})
    admin.post(url, {"role": "staff"})
    with clinic_scope(alice.clinic.id):
        assert Membership.objects.get(pk=alice.memberships["clinic_admin"].pk).role == Role.CLINIC_ADMIN


def test_api_key_is_shown_once_stored_hashed_and_revocable(alice: World) -> None:
    admin = user_client(alice.users["clinic_admin"])
    response = admin.post(reverse("clinics:api-keys"), {"name": "Imaging bridge", "scopes": ["patient.view"]})
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    html = response.content.decode()
    start = html.index("dsk_")
    secret = html[start : html.index("<", start)].strip()
    with clinic_scope(alice.clinic.id):
        key = ApiKey.objects.get(name="Imaging bridge")
    assert key.scopes == ["patient.view"] and secret not in key.secret_hash
    assert secret not in admin.get(reverse("clinics:api-keys")).content.decode()
    client = Client(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert client.get(reverse("api:patient-list")).status_code == 200
    create = client.post(reverse("api:patient-list"), {}, content_type="application/json")
    assert create.status_code == 403  # scope limited to reading
    admin.post(reverse("clinics:api-key-revoke", kwargs={"pk": key.pk}))
    assert client.get(reverse("api:patient-list")).status_code == 401


def test_api_keys_cannot_be_granted_admin_scopes(alice: World) -> None:
    admin = user_client(alice.users["clinic_admin"])
    response = admin.post(reverse("clinics:api-keys"), {"name": "Greedy", "scopes": ["audit.view"]})
    assert response.status_code == 200 and b"dsk_" not in response.content
    with clinic_scope(alice.clinic.id):
        assert not ApiKey.objects.filter(name="Greedy").exists()


def test_home_page_shows_the_clinic_and_role(alice: World) -> None:
    page = user_client(alice.users["dentist"]).get(reverse("clinics:home")).content.decode()
    assert "Clinic alice" in page and "dentist" in page
    assert PASSWORD not in page


def test_a_person_the_audit_trail_points_at_is_never_deleted(alice: World) -> None:
    staff = alice.users["staff"]
    user_client(staff).get(reverse("patients:detail", kwargs={"pk": alice.patient.pk}))
    assert AuditEvent.unscoped.filter(actor_user=staff).exists()
    with pytest.raises(ProtectedError):
        staff.delete()
    with pytest.raises(ProtectedError):
        User.objects.filter(pk=staff.pk).delete()
    assert User.objects.filter(pk=staff.pk).exists()
    with clinic_scope(alice.clinic.id):
        assert Membership.objects.filter(user=staff).exists()


def test_api_key_expiry(alice: World) -> None:
    from datetime import timedelta

    from django.utils import timezone

    admin = user_client(alice.users["clinic_admin"])
    form = admin.get(reverse("clinics:api-keys")).content.decode()
    assert 'name="expires_in_days"' in form and "in a year" in form
    response = admin.post(
        reverse("clinics:api-keys"), {"name": "Lab bridge", "scopes": ["patient.view"], "expires_in_days": "30"}
    )
    html = response.content.decode()
    secret = html[html.index("dsk_") : html.index("<", html.index("dsk_"))].strip()
    with clinic_scope(alice.clinic.id):
        key = ApiKey.objects.get(name="Lab bridge")
    assert timedelta(days=29, hours=23) < key.expires_at - timezone.now() <= timedelta(days=30)
    event = AuditEvent.unscoped.filter(action="apikey.create", object_id=str(key.pk)).get()
    assert event.details["expires_at"] == key.expires_at.isoformat()
    client = Client(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert client.get(reverse("api:patient-list")).status_code == 200
    ApiKey.unscoped.filter(pk=key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))  # its day came
    refused = client.get(reverse("api:patient-list"))
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "authentication_failed"
    assert "expired" in admin.get(reverse("clinics:api-keys")).content.decode()
    assert key_client(alice).get(reverse("api:patient-list")).status_code == 200


@requires_postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("no_seal_on_commit")
def test_two_admins_demoting_each_other_at_once_leave_one_admin() -> None:
    import threading

    from django.db import connections, transaction

    from clinics.services import ServiceError, member_update

    world = build_clinic("two-admins")
    with clinic_scope(world.clinic.id):
        second = Membership.objects.get(pk=world.memberships["dentist"].pk)
        member_update(membership=second, role=Role.CLINIC_ADMIN)
    first = world.memberships["clinic_admin"]
    held, release, outcome = threading.Event(), threading.Event(), {}

    def demote(membership: Membership, hold: bool) -> None:
        try:
            with clinic_scope(world.clinic.id), transaction.atomic():
                member_update(membership=Membership.objects.get(pk=membership.pk), role=Role.STAFF)
                if hold:
                    held.set()
                    release.wait(30)
        except ServiceError as exc:
            outcome[membership.pk] = exc.code
        finally:
            held.set()
            connections.close_all()

    one = threading.Thread(target=demote, args=(second, True))
    one.start()
    assert held.wait(30)
    other = threading.Thread(target=demote, args=(first, False))
    other.start()
    other.join(1.0)
    release.set()
    one.join(30)
    other.join(30)
    assert outcome == {first.pk: "last_admin"}
    with clinic_scope(world.clinic.id):
        assert Membership.objects.filter(role=Role.CLINIC_ADMIN, is_active=True).count() == 1
