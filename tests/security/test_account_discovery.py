"""One clinic's admin, or anyone at the password-reset form, learns nothing about accounts from the answer.

Generated over every endpoint that takes an address and every kind of existing account: the answer for an address
with an account and for one without is the same status, the same body and the same headers (the request id and the
CSRF cookie, random per request, aside). Timing is measured by ``bench/bench_account_timing.py`` (a benchmark, not a
timed test)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.messages.storage.cookie import CookieStorage, MessageSerializer
from django.core import signing
from django.test import Client, TestCase
from django.urls import reverse

from clinics.models import User

from ..conftest import PASSWORD, World, enrol_totp, user_client

pytestmark = pytest.mark.usefixtures("eager")  # mails go from tasks: run them here, whatever the broker


def _invite(alice: World) -> tuple[Client, str, Callable[[str], dict[str, str]]]:
    return user_client(alice.users["clinic_admin"]), reverse("clinics:members"), lambda e: {"email": e, "role": "staff"}


def _reset(alice: World) -> tuple[Client, str, Callable[[str], dict[str, str]]]:
    return Client(), reverse("clinics:password-reset"), lambda e: {"email": e}


ENDPOINTS: dict[str, Callable[[World], tuple[Client, str, Callable[[str], dict[str, str]]]]] = {
    "invite": _invite,
    "password_reset": _reset,
}


def _other_clinic_staff(bob: World) -> str:
    return bob.users["staff"].email


def _other_clinic_dentist_with_authenticator(bob: World) -> str:
    enrol_totp(bob.users["dentist"])
    return bob.users["dentist"].email


def _other_clinic_admin_in_capitals(bob: World) -> str:
    return bob.users["clinic_admin"].email.upper()


def _account_in_no_clinic(bob: World) -> str:
    return User.objects.create_user(email="loner@nowhere.test", password=PASSWORD).email


def _deactivated_account(bob: World) -> str:
    return User.objects.create_user(email="gone@nowhere.test", password=PASSWORD, is_active=False).email


KNOWN: dict[str, Callable[[World], str]] = {
    "other_clinic_staff": _other_clinic_staff,
    "other_clinic_dentist_with_authenticator": _other_clinic_dentist_with_authenticator,
    "other_clinic_admin_in_capitals": _other_clinic_admin_in_capitals,
    "account_in_no_clinic": _account_in_no_clinic,
    "deactivated_account": _deactivated_account,
}
CASES = [(endpoint, known) for endpoint in ENDPOINTS for known in KNOWN]
VOLATILE_HEADERS = {"x-request-id"}
# random per client, whatever the address: compared by name and attributes, not value
RANDOM_COOKIES = {"csrftoken", "sessionid"}


def _cookie_value(name: str, value: str) -> object:
    if name in RANDOM_COOKIES:
        return "<random>"
    if name == "messages":  # signed with a timestamp: compare the messages themselves
        messages = signing.get_cookie_signer(salt=CookieStorage.key_salt).unsign_object(
            value, serializer=MessageSerializer
        )
        return [(m.level, m.message, m.extra_tags) for m in messages]
    return value


def _answer(response: Any) -> dict[str, Any]:
    body = re.sub(rb'name="csrfmiddlewaretoken" value="[^"]+"', b"", response.content)
    return {
        "status": response.status_code,
        "body": body,
        "headers": sorted((k.lower(), v) for k, v in response.headers.items() if k.lower() not in VOLATILE_HEADERS),
        "cookies": sorted(
            (name, _cookie_value(name, morsel.value), sorted(morsel.items()))
            for name, morsel in response.cookies.items()
        ),
    }


@pytest.mark.parametrize(("endpoint", "known"), CASES, ids=[f"{e}-{k}" for e, k in CASES])
def test_known_and_unknown_addresses_get_the_same_answer(endpoint: str, known: str, alice: World, bob: World) -> None:
    address = KNOWN[known](bob)
    answers = []
    for email in (address, "nobody-at-all@nowhere.test"):
        client, url, data = ENDPOINTS[endpoint](alice)
        client.get(url)  # the form, as a person would open it first
        with TestCase.captureOnCommitCallbacks(execute=True):
            answers.append(_answer(client.post(url, data(email))))
    known_answer, unknown_answer = answers
    assert known_answer["status"] in (200, 302)
    assert known_answer == unknown_answer
