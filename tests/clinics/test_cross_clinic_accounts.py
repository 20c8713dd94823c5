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

from ..conftest import World, join_by_invitation, token_client, user_client


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
