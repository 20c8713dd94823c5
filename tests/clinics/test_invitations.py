"""Invitations: a clinic admin invites an address; the person joins only by accepting, with an existing account
while logged in as it or with a new account (password, and an authenticator where the role needs one)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.core import mail
from django.test import Client, TestCase
from django.urls import reverse
from django.utils import timezone

from clinics import mfa
from clinics.models import AuditEvent, Invitation, Membership, Role, User

from ..conftest import PASSWORD, World, enrol_totp, invitation_link, join_by_invitation, next_totp, user_client

NEW_PASSWORD = "a-long-enough-passphrase-2027"
pytestmark = pytest.mark.usefixtures("eager")  # the mail goes from a task: run it here, whatever the broker


def _invite(world: World, email: str, role: str = "staff") -> Any:
    admin = user_client(world.users["clinic_admin"])
    with TestCase.captureOnCommitCallbacks(execute=True):
        return admin.post(reverse("clinics:members"), {"email": email, "role": role})


def test_a_new_dentist_accepts_chooses_a_password_and_sets_up_a_second_factor(alice: World) -> None:
    assert _invite(alice, "New.Dentist@Alice.test", "dentist").status_code == 302
    page = user_client(alice.users["clinic_admin"]).get(reverse("clinics:members")).content.decode()
    assert "new.dentist@alice.test" in page and "pending" in page
    assert not User.objects.filter(email="new.dentist@alice.test").exists()  # nothing exists before acceptance
    assert "choose your name and a password" in mail.outbox[0].body

    client = Client()
    opened = client.get(invitation_link(mail.outbox, "new.dentist@alice.test"))
    assert opened.status_code == 302 and opened["Location"] == reverse("clinics:invitation-accept")
    form = client.get(opened["Location"]).content.decode()
    assert "Clinic alice" in form and "password1" in form and "authenticator" in form
    weak = client.post(
        opened["Location"], {"full_name": "Dr New", "password1": "Welcome2024!", "password2": "Welcome2024!"}
    )
    assert weak.status_code == 400 and not User.objects.filter(email="new.dentist@alice.test").exists()
    done = client.post(
        opened["Location"], {"full_name": "Dr New", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD}
    )
    assert done.status_code == 302 and done["Location"] == reverse("clinics:mfa")  # no session before the 2nd factor
    assert client.get(reverse("patients:list")).status_code == 302
    user = User.objects.get(email="new.dentist@alice.test")
    assert "<svg" in client.get(reverse("clinics:mfa")).content.decode()  # enrolment: secret and QR code
    secret = mfa.pending_secret(user)
    assert client.post(reverse("clinics:mfa"), {"code": next_totp(user, secret)}).status_code == 200  # recovery codes
    assert client.get(reverse("patients:list")).status_code == 200

    membership = Membership.unscoped.get(user=user)
    assert membership.clinic_id == alice.clinic.id and membership.role == Role.DENTIST
    assert membership.display_name == "Dr New" and membership.created_account
    invitation = Invitation.unscoped.get(email="new.dentist@alice.test")
    in_clinic = AuditEvent.unscoped.filter(clinic=alice.clinic, object_id=str(invitation.pk))
    assert list(in_clinic.values_list("action", flat=True)) == ["invitation.create", "invitation.accept"]
    global_event = AuditEvent.unscoped.get(chain="global", action="invitation.accept")
    assert global_event.details["clinic_id"] == str(alice.clinic.id) and global_event.actor_user_id == user.pk
    # the link works once
    assert Client().get(invitation_link(mail.outbox, user.email)).status_code == 400


def test_an_existing_account_accepts_while_logged_in_and_keeps_its_other_clinic(alice: World, bob: World) -> None:
    person = alice.users["staff"]
    in_alice = user_client(person)
    assert in_alice.get(reverse("clinics:home")).status_code == 200  # working in alice's clinic
    _invite(bob, person.email, "staff")
    assert "log in as usual and\naccept" in mail.outbox[0].body
    with_link = Client()
    accept_url = with_link.get(invitation_link(mail.outbox, person.email))["Location"]
    asks_login = with_link.get(accept_url).content.decode()
    assert "has a DentalScan account" in asks_login and "password1" not in asks_login
    assert with_link.post(accept_url, {"display_name": "x"}).status_code == 400  # not logged in: nothing happens
    assert not Membership.unscoped.filter(user=person, clinic=bob.clinic).exists()

    # someone else logged in with the link in hand cannot take it
    intruder = user_client(alice.users["dentist"])
    intruder.get(invitation_link(mail.outbox, person.email))
    assert intruder.post(reverse("clinics:invitation-accept"), {"display_name": "x"}).status_code == 403
    assert not Membership.unscoped.filter(clinic=bob.clinic, user=alice.users["dentist"]).exists()

    join_by_invitation(bob, person, "staff", display_name="S. at Bob")
    membership = Membership.unscoped.get(user=person, clinic=bob.clinic)
    assert membership.display_name == "S. at Bob" and not membership.created_account
    for chain in (str(bob.clinic.id), "global"):  # audited in the inviting clinic and in the global chain
        assert AuditEvent.unscoped.filter(chain=chain, action="invitation.accept", actor_user=person).count() == 1
    assert not AuditEvent.unscoped.filter(clinic=alice.clinic, action__startswith="invitation").exists()
    assert in_alice.get(reverse("clinics:home")).status_code == 200  # alice's session goes on
    bob_page = user_client(bob.users["clinic_admin"]).get(reverse("clinics:members")).content.decode()
    assert "S. at Bob" in bob_page and person.full_name not in bob_page


def test_invitations_expire_and_can_be_revoked(alice: World) -> None:
    _invite(alice, "late@alice.test")
    late = invitation_link(mail.outbox, "late@alice.test")
    Invitation.unscoped.filter(email="late@alice.test").update(expires_at=timezone.now() - timedelta(seconds=1))
    assert Client().get(late).status_code == 400
    _invite(alice, "revoked@alice.test")
    link = invitation_link(mail.outbox, "revoked@alice.test")
    client = Client()
    accept_url = client.get(link)["Location"]
    invitation = Invitation.unscoped.get(email="revoked@alice.test")
    admin = user_client(alice.users["clinic_admin"])
    assert admin.post(reverse("clinics:invitation-revoke", kwargs={"pk": invitation.pk})).status_code == 302
    refused = client.post(accept_url, {"full_name": "R", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD})
    assert refused.status_code == 400 and not User.objects.filter(email="revoked@alice.test").exists()
    assert AuditEvent.unscoped.filter(clinic=alice.clinic, action="invitation.revoke", object_id=str(invitation.pk))
    # a new invitation of the same address replaces a pending one
    _invite(alice, "twice@alice.test")
    first = invitation_link(mail.outbox, "twice@alice.test")
    _invite(alice, "twice@alice.test")
    assert Client().get(first).status_code == 400
    assert Client().get(invitation_link(mail.outbox, "twice@alice.test")).status_code == 302


def test_another_clinics_admin_cannot_revoke(alice: World, bob: World) -> None:
    _invite(alice, "kept@alice.test")
    invitation = Invitation.unscoped.get(email="kept@alice.test")
    bob_admin = user_client(bob.users["clinic_admin"])
    assert bob_admin.post(reverse("clinics:invitation-revoke", kwargs={"pk": invitation.pk})).status_code == 404
    assert Invitation.unscoped.get(pk=invitation.pk).status == "pending"


def test_the_member_page_shows_a_second_factor_only_for_accounts_the_clinic_created(alice: World, bob: World) -> None:
    enrol_totp(alice.users["dentist"])
    join_by_invitation(bob, alice.users["dentist"], "dentist", display_name="Visiting")
    bob_admin = user_client(bob.users["clinic_admin"])
    page = bob_admin.get(reverse("clinics:members")).content.decode()
    row = page[page.index(alice.users["dentist"].email) :].split("</tr>")[0]
    assert "not shown" in row and "set up" not in row and "Reset second factor" not in row
    own = user_client(alice.users["clinic_admin"]).get(reverse("clinics:members")).content.decode()
    own_row = own[own.index(alice.users["dentist"].email) :].split("</tr>")[0]
    assert "set up" in own_row and "Reset second factor" in own_row


def test_a_person_of_several_clinics_picks_one_after_log_in_and_can_switch(alice: World, bob: World) -> None:
    person = alice.users["staff"]
    join_by_invitation(bob, person, "staff")
    client = Client()
    login = client.post(reverse("clinics:login"), {"email": person.email, "password": PASSWORD, "next": "/patients/"})
    assert login.status_code == 302 and login["Location"].startswith(reverse("clinics:pick-clinic"))
    assert client.get(reverse("patients:list")).status_code == 302  # no clinic yet
    picker = client.get(login["Location"]).content.decode()
    assert "Clinic alice" in picker and "Clinic bob" in picker
    picked = client.post(reverse("clinics:pick-clinic"), {"clinic": str(bob.clinic.id), "next": "/patients/"})
    assert picked.status_code == 302 and picked["Location"] == "/patients/"
    assert "Clinic bob" in client.get(reverse("clinics:home")).content.decode()
    assert AuditEvent.unscoped.filter(clinic=bob.clinic, action="auth.clinic.select", actor_user=person).exists()
    assert client.post(reverse("clinics:switch-clinic"), {"clinic": str(alice.clinic.id)}).status_code == 302
    assert "Clinic alice" in client.get(reverse("clinics:home")).content.decode()
    assert AuditEvent.unscoped.filter(clinic=alice.clinic, action="auth.clinic.switch", actor_user=person).exists()
    # a clinic one does not belong to cannot be picked
    outsider = Client()
    outsider.post(reverse("clinics:login"), {"email": person.email, "password": PASSWORD})
    other = build_other_clinic()
    assert outsider.post(reverse("clinics:pick-clinic"), {"clinic": str(other)}).status_code == 400


def build_other_clinic() -> object:
    from clinics import services

    return services.clinic_create(name="Clinic carol", slug="carol").id


def test_operators_cannot_add_an_existing_account_directly(alice: World, bob: World) -> None:
    from clinics.services import ServiceError, member_add
    from clinics.tenancy import clinic_scope

    with clinic_scope(bob.clinic.id), pytest.raises(ServiceError) as refused:
        member_add(email=alice.users["dentist"].email, role=Role.STAFF, password=PASSWORD)
    assert refused.value.code == "invitation_required"


def test_invitation_audit_holds_ids_only(alice: World) -> None:
    _invite(alice, "once@alice.test")
    first = Invitation.unscoped.get(email="once@alice.test")
    created = AuditEvent.unscoped.get(action="invitation.create", object_id=str(first.pk))
    assert created.details["role"] == "staff"
    assert "once@alice.test" not in json.dumps(created.details)  # no address in the append-only chain


def test_invitation_revocations_are_recorded_only_when_real(alice: World) -> None:
    admin = user_client(alice.users["clinic_admin"])
    _invite(alice, "twice@alice.test")
    first = Invitation.unscoped.get(email="twice@alice.test")
    # a new invitation of the same address replaces the pending one: that revocation is recorded, with the ids
    _invite(alice, "twice@alice.test")
    second = Invitation.unscoped.filter(email="twice@alice.test").exclude(pk=first.pk).get()
    replaced = AuditEvent.unscoped.filter(action="invitation.revoke", object_id=str(first.pk)).get()
    assert replaced.clinic_id == alice.clinic.id and replaced.details == {"replaced_by": str(second.pk)}
    # revoking the already revoked one again changes nothing and records nothing
    assert admin.post(reverse("clinics:invitation-revoke", kwargs={"pk": first.pk})).status_code == 302
    assert AuditEvent.unscoped.filter(action="invitation.revoke", object_id=str(first.pk)).count() == 1
    assert admin.post(reverse("clinics:invitation-revoke", kwargs={"pk": second.pk})).status_code == 302
    assert admin.post(reverse("clinics:invitation-revoke", kwargs={"pk": second.pk})).status_code == 302
    assert AuditEvent.unscoped.filter(action="invitation.revoke", object_id=str(second.pk)).count() == 1
