"""People in several clinics: one clinic cannot add, log out or learn about another clinic's people.

Regression test of finding 1 of the tenant-isolation review (issue 24): clinic B's admin posted clinic A's
dentist's address to the members form, the existing account joined B at once, and deactivating that membership
ended every session and API token the dentist had, in every clinic.
"""

from __future__ import annotations

import pytest
from django.urls import reverse

from clinics.models import AuditEvent, Membership, User, UserToken
from clinics.tenancy import clinic_scope

from ..conftest import World, invitation_link, join_by_invitation, token_client, user_client


@pytest.fixture
def shared_dentist(alice: World, bob: World) -> tuple[User, Membership, Membership]:
    """Alice's dentist, who also accepted bob's invitation as a dentist."""
    person = alice.users["dentist"]
    at_bob = join_by_invitation(bob, person, "dentist", display_name="Dr Shared")
    return person, Membership.unscoped.get(pk=alice.memberships["dentist"].pk), at_bob


def _in_clinic(person: User, world: World):  # noqa: ANN202 - a Client
    """A browser session of a person of several clinics, who picked ``world``'s clinic after log-in."""
    client = user_client(person)
    assert client.get(reverse("clinics:home"))["Location"].startswith(reverse("clinics:pick-clinic"))
    assert client.post(reverse("clinics:pick-clinic"), {"clinic": str(world.clinic.id)}).status_code == 302
    return client


def test_another_clinic_cannot_add_or_log_out_a_person(alice: World, bob: World) -> None:
    dentist = alice.users["dentist"]
    web = user_client(dentist)
    api = token_client(alice, "dentist")
    assert web.get(reverse("clinics:home")).status_code == 200
    bob_admin = user_client(bob.users["clinic_admin"])

    # Bob's admin names alice's dentist on the members form: the answer is the one any address gets...
    answer = bob_admin.post(reverse("clinics:members"), {"email": dentist.email, "role": "staff"})
    assert answer.status_code == 302
    # ...and the existing account has joined nothing: no membership until the person accepts.
    with clinic_scope(bob.clinic.id):
        assert not Membership.objects.filter(user=dentist).exists()
        page = bob_admin.get(reverse("clinics:members")).content.decode()
    assert dentist.email in page and "pending" in page  # the address typed, and "pending", nothing more
    assert dentist.full_name not in page

    # Whatever bob's admin does with its own members, alice's sessions and tokens of the person go on.
    for membership in Membership.unscoped.filter(clinic=bob.clinic):
        if membership.user_id != bob.users["clinic_admin"].pk:
            bob_admin.post(reverse("clinics:member-update", kwargs={"pk": membership.pk}), {"is_active": "0"})
    assert web.get(reverse("clinics:home")).status_code == 200
    assert api.get(reverse("api:patient-list")).status_code == 200
    assert UserToken.objects.filter(user=dentist, clinic=alice.clinic, revoked_at=None).exists()
    assert Membership.unscoped.get(pk=alice.memberships["dentist"].pk).is_active
    assert not AuditEvent.unscoped.filter(action="auth.sessions.end_all", object_id=str(dentist.pk)).exists()


def test_deactivating_a_shared_person_ends_only_that_clinics_sessions_and_tokens(
    alice: World, bob: World, shared_dentist: tuple[User, Membership, Membership]
) -> None:
    """The person accepted bob's invitation and works in both clinics; bob deactivates them."""
    person, at_alice, at_bob = shared_dentist
    in_alice = _in_clinic(person, alice)
    in_bob = _in_clinic(person, bob)
    alice_api = _token(person, alice)
    bob_api = _token(person, bob)
    bob_admin = user_client(bob.users["clinic_admin"])
    bob_admin.post(reverse("clinics:member-update", kwargs={"pk": at_bob.pk}), {"is_active": "0"})

    # bob's session and token of the person have ended...
    ended = in_bob.get(reverse("clinics:home"))
    assert ended.status_code == 302 and ended["Location"].startswith(reverse("clinics:login"))
    assert bob_api.get(reverse("api:patient-list")).status_code == 401
    # ...alice's have not.
    assert in_alice.get(reverse("clinics:home")).status_code == 200
    assert alice_api.get(reverse("api:patient-list")).status_code == 200
    event = AuditEvent.unscoped.filter(action="auth.sessions.end_clinic").get()
    assert event.clinic_id == bob.clinic.id and event.details["tokens_revoked"] == 1
    assert not AuditEvent.unscoped.filter(clinic=alice.clinic, action__startswith="auth.sessions").exists()


def _token(person: User, world: World):  # noqa: ANN202 - an APIClient
    from rest_framework.test import APIClient

    from clinics import services

    with clinic_scope(world.clinic.id):
        _, raw = services.user_token_create(user=person, clinic=world.clinic, mfa_verified=True)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def test_a_session_whose_clinic_ended_the_access_cannot_pick_a_clinic_again(
    alice: World, bob: World, shared_dentist: tuple[User, Membership, Membership]
) -> None:
    person, _, at_bob = shared_dentist
    in_bob = _in_clinic(person, bob)
    bob_admin = user_client(bob.users["clinic_admin"])
    bob_admin.post(reverse("clinics:member-update", kwargs={"pk": at_bob.pk}), {"is_active": "0"})

    # the ended session posts the (public) clinic picker: it is logged out, not bound to alice
    picked = in_bob.post(reverse("clinics:pick-clinic"), {"clinic": str(alice.clinic.id)})
    assert picked.status_code == 302 and picked["Location"].startswith(reverse("clinics:login"))
    home = in_bob.get(reverse("clinics:home"))
    assert home.status_code == 302 and home["Location"].startswith(reverse("clinics:login"))
    assert "_auth_user_id" not in in_bob.session


def test_a_session_whose_clinic_ended_the_access_cannot_accept_an_invitation(alice: World, bob: World) -> None:
    from django.core import mail
    from django.test import TestCase

    from config.celery import app

    person = alice.users["staff"]
    session = user_client(person)
    assert session.get(reverse("clinics:home")).status_code == 200  # bound to alice, the only clinic
    # bob invites the person; then alice deactivates them
    saved = app.conf.task_always_eager
    app.conf.task_always_eager = True
    try:
        with TestCase.captureOnCommitCallbacks(execute=True):
            user_client(bob.users["clinic_admin"]).post(
                reverse("clinics:members"), {"email": person.email, "role": "staff"}
            )
    finally:
        app.conf.task_always_eager = saved
    user_client(alice.users["clinic_admin"]).post(
        reverse("clinics:member-update", kwargs={"pk": alice.memberships["staff"].pk}), {"is_active": "0"}
    )
    link = invitation_link(mail.outbox, person.email)
    accept = session.get(link)["Location"]
    answer = session.post(accept, {"display_name": "Me"})
    assert answer.status_code == 400  # "log in first": the ended session was logged out
    assert "_auth_user_id" not in session.session
    assert not Membership.unscoped.filter(clinic=bob.clinic, user=person).exists()


def test_a_person_of_several_clinics_can_log_out_before_picking_one(
    alice: World, bob: World, shared_dentist: tuple[User, Membership, Membership]
) -> None:
    person = shared_dentist[0]
    client = user_client(person)
    api = _token(person, alice)
    pick = client.get(reverse("clinics:pick-clinic"))
    assert pick.status_code == 200 and reverse("clinics:logout") in pick.content.decode()
    out = client.post(reverse("clinics:logout"))
    assert out.status_code == 302 and out["Location"] == reverse("clinics:login")
    assert "_auth_user_id" not in client.session
    assert api.get(reverse("api:patient-list")).status_code == 401  # log-out ends every token, as before
    event = AuditEvent.unscoped.get(action="auth.logout")
    assert event.clinic_id is None and event.actor_user == person  # the global chain: no clinic was picked
    ended = AuditEvent.unscoped.get(action="auth.sessions.end_all", object_id=str(person.pk))
    assert ended.clinic_id is None and ended.actor_user == person


def test_log_out_of_a_picked_clinic_is_audited_there(
    alice: World, bob: World, shared_dentist: tuple[User, Membership, Membership]
) -> None:
    person = shared_dentist[0]
    client = _in_clinic(person, bob)
    assert client.post(reverse("clinics:logout"))["Location"] == reverse("clinics:login")
    event = AuditEvent.unscoped.get(action="auth.logout")
    assert event.clinic_id == bob.clinic.id and event.actor_user == person
    # an anonymous log-out just goes to the log-in page
    assert client.post(reverse("clinics:logout"))["Location"] == reverse("clinics:login")
    assert AuditEvent.unscoped.filter(action="auth.logout").count() == 1


def test_a_failed_log_in_is_recorded_by_the_clinic_the_person_first_belonged_to(alice: World, bob: World) -> None:
    """Bob's dentist later joined alice's clinic (which sorts first by name): their failed log-ins, with the address
    they came from, are bob's to see, as the lockout's and every other log-in step's are, not alice's."""
    from django.test import Client

    person = bob.users["dentist"]
    join_by_invitation(alice, person, "dentist", display_name="Dr Joined")
    Client().post(reverse("clinics:login"), {"email": person.email, "password": "wrong-wrong"})
    event = AuditEvent.unscoped.filter(action="auth.login.failed").latest("id")
    assert event.clinic_id == bob.clinic.id
