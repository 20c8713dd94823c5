"""A person's own account (password, recovery codes) and a clinic admin resetting a member's second factor."""

from __future__ import annotations

from django.test import Client
from django.urls import reverse

from clinics import mfa, sessions
from clinics.models import AuditEvent, AuditOutcome, Membership, RecoveryCode, Role, TotpDevice, UserToken
from clinics.services import member_add, member_update

from ..conftest import PASSWORD, World, enrol_totp, join_by_invitation, next_totp, token_client, user_client

NEW_PASSWORD = "a-whole-new-passphrase-for-2027"


def _login(client: Client, email: str, password: str = PASSWORD):  # noqa: ANN202
    return client.post(reverse("clinics:login"), {"email": email, "password": password})


def test_account_page_shows_the_second_factor_and_is_linked_from_every_page(alice: World) -> None:
    dentist = alice.users["dentist"]
    enrol_totp(dentist)
    page = user_client(dentist).get(reverse("clinics:account"))
    assert page.status_code == 200
    html = page.content.decode()
    assert "Authenticator set up" in html and "<strong>10</strong>" in html
    assert reverse("clinics:account") in user_client(dentist).get(reverse("patients:list")).content.decode()
    staff_html = user_client(alice.users["staff"]).get(reverse("clinics:account")).content.decode()
    assert "Your role does not need a second factor" in staff_html


def test_changing_the_password_keeps_this_session_and_ends_every_other(alice: World) -> None:
    staff = alice.users["staff"]
    here, elsewhere = user_client(staff), user_client(staff)
    api = token_client(alice, "staff")
    url = reverse("clinics:account-password")

    wrong = here.post(url, {"old_password": "not-it", "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})
    assert wrong.status_code == 400 and "incorrectly" in wrong.content.decode()
    denied = AuditEvent.unscoped.filter(action="auth.password.change", clinic=alice.clinic).get()
    assert denied.outcome == AuditOutcome.DENIED and denied.details == {"reason": "wrong_current_password"}
    weak = here.post(url, {"old_password": PASSWORD, "new_password1": "Password123!", "new_password2": "Password123!"})
    assert weak.status_code == 400
    staff.refresh_from_db()
    assert staff.check_password(PASSWORD)

    done = here.post(url, {"old_password": PASSWORD, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})
    assert done.status_code == 302 and done["Location"] == reverse("clinics:account")
    assert here.get(reverse("patients:list")).status_code == 200  # this session goes on
    gone = elsewhere.get(reverse("patients:list"))  # the other one is logged out
    assert gone.status_code == 302 and gone["Location"].startswith(reverse("clinics:login"))
    assert api.get(reverse("api:patient-list")).status_code == 401
    assert not UserToken.objects.filter(user=staff, revoked_at=None).exists()
    assert _login(Client(), staff.email).status_code == 400
    assert _login(Client(), staff.email, NEW_PASSWORD).status_code == 302
    changed = AuditEvent.unscoped.filter(action="auth.password.change", clinic=alice.clinic).latest("id")
    assert changed.outcome == AuditOutcome.SUCCESS and changed.actor_user == staff


def test_new_recovery_codes_replace_the_old_ones_and_need_a_recent_password(alice: World, settings) -> None:  # noqa: ANN001
    dentist = alice.users["dentist"]
    enrol_totp(dentist)
    old = mfa.recovery_codes_regenerate(dentist)
    client = user_client(dentist)
    page = client.post(reverse("clinics:account-recovery-codes"))
    assert page.status_code == 200 and page["Cache-Control"] == "no-store"
    shown_again = [c for c in old if c in page.content.decode()]
    assert not shown_again, "old codes must not be shown again"
    assert page.content.decode().count("<li><code>") == mfa.RECOVERY_CODE_COUNT
    assert RecoveryCode.objects.filter(user=dentist, used_at=None).count() == mfa.RECOVERY_CODE_COUNT
    assert mfa.verify(dentist, old[0]) is None
    event = AuditEvent.unscoped.filter(action="auth.mfa.recovery_codes", clinic=alice.clinic).get()
    assert event.details == {"codes": mfa.RECOVERY_CODE_COUNT}
    # a session whose password check is older than the re-authentication window is asked again first
    stale = user_client(dentist)
    session = stale.session
    session[sessions.REAUTH_AT] = 0
    session.save()
    again = stale.post(reverse("clinics:account-recovery-codes"), HTTP_REFERER=reverse("clinics:account"))
    assert again.status_code == 302 and reverse("clinics:reauth") in again["Location"]
    assert AuditEvent.unscoped.filter(action="auth.mfa.recovery_codes").count() == 1
    # without an authenticator there is nothing to renew
    staff = user_client(alice.users["staff"])
    none = staff.post(reverse("clinics:account-recovery-codes"))
    assert none.status_code == 302 and none["Location"] == reverse("clinics:account")
    assert "You have no authenticator" in staff.get(reverse("clinics:account")).content.decode()
    assert not RecoveryCode.objects.filter(user=alice.users["staff"]).exists()


def test_admin_resets_a_members_second_factor_and_the_member_enrols_again(alice: World) -> None:
    dentist = alice.users["dentist"]
    enrol_totp(dentist)
    dentist_web, dentist_api = user_client(dentist), token_client(alice, "dentist")
    admin = user_client(alice.users["clinic_admin"])
    members = admin.get(reverse("clinics:members")).content.decode()
    reset_url = reverse("clinics:member-mfa-reset", kwargs={"pk": alice.memberships["dentist"].pk})
    assert reset_url in members  # offered only for members with an authenticator
    assert reverse("clinics:member-mfa-reset", kwargs={"pk": alice.memberships["staff"].pk}) not in members

    assert user_client(alice.users["staff"]).post(reset_url).status_code == 403
    assert admin.post(reset_url).status_code == 302
    assert not TotpDevice.objects.filter(user=dentist).exists()
    assert not RecoveryCode.objects.filter(user=dentist).exists()
    assert dentist_web.get(reverse("patients:list")).status_code == 302  # logged out everywhere
    assert dentist_api.get(reverse("api:patient-list")).status_code == 401
    event = AuditEvent.unscoped.filter(action="auth.mfa.reset", clinic=alice.clinic).get()
    assert event.details == {"user_id": str(dentist.pk), "had_authenticator": True}
    assert event.actor_user == alice.users["clinic_admin"]
    # The next log-in sets up a new authenticator before any session exists.
    client = Client()
    assert _login(client, dentist.email)["Location"] == reverse("clinics:mfa")
    setup = client.get(reverse("clinics:mfa")).content.decode()
    assert "<svg" in setup
    secret = mfa.pending_secret(dentist)
    assert secret
    assert client.post(reverse("clinics:mfa"), {"code": next_totp(dentist, secret)}).status_code == 200
    assert client.get(reverse("patients:list")).status_code == 200


def test_reset_is_refused_for_oneself_and_for_people_of_other_clinics(alice: World, bob: World) -> None:
    admin_user = alice.users["clinic_admin"]
    enrol_totp(admin_user)
    admin = user_client(admin_user)
    own = admin.post(reverse("clinics:member-mfa-reset", kwargs={"pk": alice.memberships["clinic_admin"].pk}))
    assert own.status_code == 302 and own["Location"] == reverse("clinics:members")
    assert "Another clinic admin must reset your second factor" in admin.get(own["Location"]).content.decode()
    assert TotpDevice.objects.filter(user=admin_user).exists()
    # someone who also works at bob's clinic: alice's admin cannot weaken that account
    from clinics.tenancy import clinic_scope

    with clinic_scope(bob.clinic.id):
        at_bob = member_add(email="shared@both.test", role=Role.DENTIST, full_name="Shared", password=PASSWORD)
        member_update(membership=at_bob, is_active=False)  # bob may reactivate them: still bob's concern
    shared = at_bob.user
    # an existing account joins alice's clinic only by accepting its invitation (issue 24)
    membership = join_by_invitation(alice, shared, Role.DENTIST)
    enrol_totp(shared)
    refused = admin.post(reverse("clinics:member-mfa-reset", kwargs={"pk": membership.pk}))
    assert refused.status_code == 302
    assert TotpDevice.objects.filter(user=shared).exists()
    # the same message as for any account the clinic did not create: nothing about the other clinic
    page = admin.get(reverse("clinics:members")).content.decode()
    assert "second factor cannot be reset from here" in page and "another clinic" not in page
    assert not AuditEvent.unscoped.filter(action="auth.mfa.reset").exists()


def test_reset_is_refused_for_an_account_the_clinic_did_not_create(alice: World, bob: World) -> None:
    """Not only the page hides it: the service refuses when the person came with an account of their own, even
    once they belong to no other clinic."""
    from clinics.tenancy import clinic_scope

    with clinic_scope(bob.clinic.id):
        at_bob = member_add(email="came@both.test", role=Role.STAFF, full_name="Came", password=PASSWORD)
    person = at_bob.user
    membership = join_by_invitation(alice, person, Role.STAFF)
    Membership.unscoped.filter(pk=at_bob.pk).delete()  # no other clinic any more
    enrol_totp(person)
    admin = user_client(alice.users["clinic_admin"])
    refused = admin.post(reverse("clinics:member-mfa-reset", kwargs={"pk": membership.pk}))
    assert refused.status_code == 302
    assert "second factor cannot be reset from here" in admin.get(reverse("clinics:members")).content.decode()
    assert TotpDevice.objects.filter(user=person).exists()
    assert not AuditEvent.unscoped.filter(action="auth.mfa.reset").exists()


def test_wrong_current_passwords_lock_like_a_log_in_and_a_change_is_no_reauthentication(
    alice: World,
    settings,  # noqa: ANN001
) -> None:
    settings.LOCKOUT_FAILURES = 2
    dentist = alice.users["dentist"]
    enrol_totp(dentist)
    url = reverse("clinics:account-password")
    client = user_client(dentist)
    session = client.session
    session[sessions.REAUTH_AT] = 0  # the password and code were last checked long ago
    session.save()
    bad = {"old_password": "guess-one", "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD}
    assert client.post(url, bad).status_code == 400
    assert client.post(url, bad).status_code == 400
    right = {**bad, "old_password": PASSWORD}
    locked = client.post(url, right)
    assert locked.status_code == 429 and int(locked["Retry-After"]) > 60
    dentist.refresh_from_db()
    assert dentist.check_password(PASSWORD)
    settings.LOCKOUT_FAILURES = 5
    from django.core.cache import cache

    cache.clear()
    assert client.post(url, right).status_code == 302
    # knowing the password (without the authenticator) is not enough to renew the second factor's codes
    renew = client.post(reverse("clinics:account-recovery-codes"), HTTP_REFERER=reverse("clinics:account"))
    assert renew.status_code == 302 and reverse("clinics:reauth") in renew["Location"]
