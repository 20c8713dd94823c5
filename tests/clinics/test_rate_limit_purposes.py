"""Anonymous allowances per purpose (log-in, second factor, password reset, invitation acceptance), each per IP
and per account: a practice behind one address that logs in a lot can still reset passwords."""

from __future__ import annotations

from typing import Any

import pytest
from django.core import mail
from django.test import Client, TestCase
from django.urls import reverse

from ..conftest import PASSWORD, World, enrol_totp, invitation_link, user_client

pytestmark = pytest.mark.usefixtures("eager")
OFFICE = "198.51.100.7"


def _reset(client: Client, email: str) -> Any:
    with TestCase.captureOnCommitCallbacks(execute=True):
        return client.post(reverse("clinics:password-reset"), {"email": email})


def test_twenty_failed_log_ins_do_not_block_a_password_reset_from_the_same_address(alice: World) -> None:
    office = Client(REMOTE_ADDR=OFFICE)
    # 20 failed log-ins of 20 people (so no (email, IP) lockout plays a part): the log-in allowance is used up
    for n in range(20):
        failed = office.post(reverse("clinics:login"), {"email": f"person{n}@alice.test", "password": "wrong-wrong"})
        assert failed.status_code == 400
    refused = office.post(reverse("clinics:login"), {"email": "staff@alice.test", "password": PASSWORD})
    assert refused.status_code == 429 and int(refused["Retry-After"]) >= 1
    # the password reset has its own allowance: the mail goes
    sent = _reset(office, "staff@alice.test")
    assert sent.status_code == 200 and 'data-testid="reset-sent"' in sent.content.decode()
    assert [m.to for m in mail.outbox] == [["staff@alice.test"]]
    # so has the invitation acceptance (it answers its own "not valid" page, not 429)
    assert office.post(reverse("clinics:invitation-accept"), {}).status_code == 400
    # and another address is not limited at all
    assert (
        Client(REMOTE_ADDR="203.0.113.9")
        .post(reverse("clinics:login"), {"email": "staff@alice.test", "password": PASSWORD})
        .status_code
        == 302
    )


def test_second_factor_has_its_own_allowance(alice: World, settings: Any) -> None:
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "login": "1/60"}
    dentist = alice.users["dentist"]
    enrol_totp(dentist)
    client = Client(REMOTE_ADDR=OFFICE)
    assert client.post(reverse("clinics:login"), {"email": dentist.email, "password": PASSWORD})["Location"] == reverse(
        "clinics:mfa"
    )
    # the log-in allowance of this address is used up; the code step still answers (a wrong code: 400, not 429)
    assert client.post(reverse("clinics:login"), {"email": "x@alice.test", "password": "y"}).status_code == 429
    assert client.post(reverse("clinics:mfa"), {"code": "000000"}).status_code == 400
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "second_factor": "1/60"}
    assert client.post(reverse("clinics:mfa"), {"code": "000000"}).status_code == 429


@pytest.mark.parametrize("purpose", ["login", "password_reset"])
def test_each_purpose_also_counts_per_account_from_any_address(purpose: str, alice: World, settings: Any) -> None:
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, f"{purpose}_account": "3/60"}
    settings.LOCKOUT_FAILURES = 100  # the (email, IP) lockout is another mechanism

    def attempt(ip: str, email: str) -> int:
        client = Client(REMOTE_ADDR=ip)
        if purpose == "login":
            return client.post(reverse("clinics:login"), {"email": email, "password": "wrong-wrong"}).status_code
        return _reset(client, email).status_code

    ok = 400 if purpose == "login" else 200
    assert [attempt(f"203.0.113.{n}", "staff@alice.test") for n in range(4)] == [ok, ok, ok, 429]
    assert attempt("203.0.113.50", "dentist@alice.test") == ok  # another account from a new address
    # an address without an account is counted the same way (the answer tells nothing)
    assert [attempt(f"192.0.2.{n}", "nobody@alice.test") for n in range(4)] == [ok, ok, ok, 429]


def test_invitation_acceptance_counts_per_account(alice: World, settings: Any) -> None:
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "invitation_account": "2/60"}
    admin = user_client(alice.users["clinic_admin"])
    with TestCase.captureOnCommitCallbacks(execute=True):
        admin.post(reverse("clinics:members"), {"email": "new@alice.test", "role": "staff"})
    link = invitation_link(mail.outbox, "new@alice.test")
    statuses = []
    for n in range(3):
        client = Client(REMOTE_ADDR=f"203.0.113.{n}")
        accept = client.get(link)["Location"]
        statuses.append(client.post(accept, {"password1": "short", "password2": "short"}).status_code)
    assert statuses == [400, 400, 429]


def _login(ip: str, email: str, password: str) -> Any:
    return Client(REMOTE_ADDR=ip).post(reverse("clinics:login"), {"email": email, "password": password})


def test_requests_with_someones_address_do_not_lock_them_out_of_log_in(alice: World) -> None:
    # a third party sends many log-ins with the person's address from several addresses (4 from each, under
    # the (email, IP) lockout): more than the old per-account allowance of 20 requests
    statuses = [_login(f"203.0.113.{n // 4}", "staff@alice.test", "wrong-wrong").status_code for n in range(24)]
    assert statuses == [400] * 24
    # the person still logs in with the right password, from their own address
    assert _login("198.51.100.20", "staff@alice.test", PASSWORD).status_code == 302


def test_log_in_account_allowance_counts_failures_only(alice: World, settings: Any) -> None:
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "login_account": "3/60"}
    # correct log-ins are never counted
    assert [_login(f"203.0.113.{n}", "staff@alice.test", PASSWORD).status_code for n in range(5)] == [302] * 5
    assert [_login(f"192.0.2.{n}", "staff@alice.test", "wrong-wrong").status_code for n in range(3)] == [400] * 3
    # at the limit even the right password waits (no password oracle for a guesser)
    refused = _login("198.51.100.30", "staff@alice.test", PASSWORD)
    assert refused.status_code == 429 and int(refused["Retry-After"]) >= 1


def test_token_api_counts_only_failed_attempts_per_account(alice: World, settings: Any) -> None:
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "login_account": "3/60"}
    url = reverse("api:token")

    def token(ip: str, password: str) -> int:
        body = {"email": "staff@alice.test", "password": password}
        return Client(REMOTE_ADDR=ip).post(url, body, content_type="application/json").status_code

    assert [token(f"203.0.113.{n}", PASSWORD) for n in range(5)] == [200] * 5
    assert [token(f"192.0.2.{n}", "wrong-wrong") for n in range(3)] == [401] * 3
    assert token("198.51.100.30", PASSWORD) == 429
    # and the HTML log-in shares that account's failures
    assert _login("198.51.100.31", "staff@alice.test", PASSWORD).status_code == 429


def test_one_address_cannot_stop_someones_password_resets(alice: World) -> None:
    flood = Client(REMOTE_ADDR="203.0.113.66")
    statuses = [_reset(flood, "staff@alice.test").status_code for _ in range(25)]
    assert statuses[:20] == [200] * 20 and set(statuses[20:]) == {429}  # the flooder's own per-IP allowance
    # the person asks from their own address: not refused
    assert _reset(Client(REMOTE_ADDR="198.51.100.40"), "staff@alice.test").status_code == 200


def test_sending_invitations_is_limited_per_admin(alice: World, settings: Any) -> None:
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "invite": "3/3600"}
    admin = user_client(alice.users["clinic_admin"])
    statuses = [
        admin.post(reverse("clinics:members"), {"email": f"p{n}@elsewhere.test", "role": "staff"}).status_code
        for n in range(4)
    ]
    assert statuses == [302, 302, 302, 429]


def test_invitations_of_one_address_are_limited_per_day_within_the_clinic(
    alice: World, bob: World, settings: Any
) -> None:
    assert settings.RATE_LIMITS["invitation_address"] == "3/86400"
    alice_admin = user_client(alice.users["clinic_admin"])
    statuses = [
        alice_admin.post(reverse("clinics:members"), {"email": "flooded@elsewhere.test", "role": "staff"}).status_code
        for _ in range(4)
    ]
    assert statuses == [302, 302, 302, 429]
    # and the same for an address with an account (nothing learnt about it)
    known = [
        alice_admin.post(reverse("clinics:members"), {"email": bob.users["staff"].email, "role": "staff"}).status_code
        for _ in range(4)
    ]
    assert known == statuses
    # another clinic's count is its own
    bob_admin = user_client(bob.users["clinic_admin"])
    assert (
        bob_admin.post(reverse("clinics:members"), {"email": "flooded@elsewhere.test", "role": "staff"}).status_code
        == 302
    )


def test_wrong_codes_from_many_addresses_refuse_the_second_factor_and_tell_the_person(alice: World) -> None:
    """Whoever has the password and spreads code guesses over addresses (4 from each, under the (email, IP)
    lockout) gets 10 an hour for the account, then none; the person is mailed once and it is audited."""
    import pyotp

    from clinics.models import AuditEvent

    dentist = alice.users["dentist"]
    secret = enrol_totp(dentist)
    statuses = []
    for n in range(3):
        client = Client(REMOTE_ADDR=f"203.0.113.{n}")
        login = client.post(reverse("clinics:login"), {"email": dentist.email, "password": PASSWORD})
        assert login["Location"] == reverse("clinics:mfa")
        statuses += [client.post(reverse("clinics:mfa"), {"code": "000000"}).status_code for _ in range(4)]
    assert statuses == [400] * 9 + [429] * 3
    # the right code, from a new address, is refused too until the hour is over
    client = Client(REMOTE_ADDR="192.0.2.77")
    client.post(reverse("clinics:login"), {"email": dentist.email, "password": PASSWORD})
    refused = client.post(reverse("clinics:mfa"), {"code": pyotp.TOTP(secret).now()})
    assert refused.status_code == 429 and int(refused["Retry-After"]) > 60
    assert [m.to for m in mail.outbox] == [[dentist.email]]
    assert "knows your password" in mail.outbox[0].body and "000000" not in mail.outbox[0].body
    assert AuditEvent.unscoped.filter(action="auth.second_factor.locked", actor_user=dentist).count() == 1


def test_wrong_codes_for_an_api_token_count_against_the_same_allowance(alice: World) -> None:
    import pyotp

    admin = alice.users["clinic_admin"]
    secret = enrol_totp(admin)

    def token(ip: str, otp: str) -> int:
        body = {"email": admin.email, "password": PASSWORD, "otp": otp}
        return Client(REMOTE_ADDR=ip).post(reverse("api:token"), body, content_type="application/json").status_code

    statuses = [token(f"203.0.113.{n // 4}", "000000") for n in range(11)]
    assert statuses == [401] * 9 + [429] * 2
    assert token("192.0.2.78", pyotp.TOTP(secret).now()) == 429
    assert [m.to for m in mail.outbox] == [[admin.email]]
