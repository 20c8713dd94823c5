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
