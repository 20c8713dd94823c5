"""'Forgot your password?': a single-use, time-limited link by email; the answer never tells who has an account."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.core import mail
from django.test import Client
from django.urls import reverse
from django.utils.http import urlsafe_base64_encode

from clinics.models import AuditEvent, UserToken

from ..conftest import World, enrol_totp, token_client, user_client

NEW_PASSWORD = "another-long-passphrase-2027"


def _ask(client: Client, email: str):  # noqa: ANN202
    return client.post(reverse("clinics:password-reset"), {"email": email})


def _link(message: Any) -> str:
    found = re.search(r"https?://[^/\s]+(/password-reset/[^\s]+/)", message.body)
    assert found, message.body
    return found[1]


def test_the_login_page_offers_it() -> None:
    assert reverse("clinics:password-reset") in Client().get(reverse("clinics:login")).content.decode()


def test_reset_by_email_link_once_then_log_in_with_the_new_password(alice: World) -> None:
    staff = alice.users["staff"]
    other_session, api = user_client(staff), token_client(alice, "staff")
    client = Client()
    sent = _ask(client, "STAFF@alice.test")
    assert sent.status_code == 200 and 'data-testid="reset-sent"' in sent.content.decode()
    assert len(mail.outbox) == 1 and mail.outbox[0].to == [staff.email]
    assert "60 minutes" in mail.outbox[0].body and "alice" not in mail.outbox[0].subject.lower()
    link = _link(mail.outbox[0])

    opened = client.get(link)  # the token leaves the address bar at once
    assert opened.status_code == 302 and opened["Location"].endswith("/set-password/")
    assert link.split("/")[-2] not in opened["Location"]
    form = client.get(opened["Location"])
    assert form.status_code == 200 and "new_password1" in form.content.decode()
    weak = client.post(opened["Location"], {"new_password1": "Welcome2024!", "new_password2": "Welcome2024!"})
    assert weak.status_code == 400
    done = client.post(opened["Location"], {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})
    assert done.status_code == 302 and done["Location"] == reverse("clinics:login")

    staff.refresh_from_db()
    assert staff.check_password(NEW_PASSWORD)
    assert other_session.get(reverse("patients:list")).status_code == 302  # every session ended
    assert api.get(reverse("api:patient-list")).status_code == 401
    assert not UserToken.objects.filter(user=staff, revoked_at=None).exists()
    # the link works once
    again = Client()
    assert again.get(link).status_code == 400
    assert 'data-testid="reset-invalid"' in again.get(link).content.decode()
    assert Client().post(reverse("clinics:login"), {"email": staff.email, "password": NEW_PASSWORD}).status_code == 302
    actions = list(
        AuditEvent.unscoped.filter(clinic=alice.clinic, object_id=str(staff.pk))
        .filter(action__startswith="auth.password")
        .values_list("action", flat=True)
    )
    assert actions == ["auth.password.reset_requested", "auth.password.reset"]


def test_unknown_addresses_get_the_same_answer_and_no_mail(alice: World) -> None:
    known = _ask(Client(), "staff@alice.test").content.decode()
    unknown = _ask(Client(), "nobody@alice.test").content.decode()
    strip = lambda html: re.sub(r'name="csrfmiddlewaretoken" value="[^"]+"', "", html)  # noqa: E731
    assert strip(known) == strip(unknown)
    assert len(mail.outbox) == 1


def test_a_reset_still_needs_the_second_factor(alice: World) -> None:
    dentist = alice.users["dentist"]
    enrol_totp(dentist)
    client = Client()
    _ask(client, dentist.email)
    opened = client.get(_link(mail.outbox[0]))
    client.post(opened["Location"], {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})
    login = client.post(reverse("clinics:login"), {"email": dentist.email, "password": NEW_PASSWORD})
    assert login.status_code == 302 and login["Location"] == reverse("clinics:mfa")
    assert client.get(reverse("patients:list")).status_code == 302


def test_expired_tampered_and_foreign_links_are_refused(alice: World, monkeypatch: pytest.MonkeyPatch) -> None:
    client = Client()
    _ask(client, "staff@alice.test")
    link = _link(mail.outbox[0])
    uid, token = link.strip("/").split("/")[-2:]
    assert client.get(link.replace(uid, "eA")).status_code == 400  # not a user
    assert (
        client.get(link.replace(uid, urlsafe_base64_encode(str(alice.users["dentist"].pk).encode()))).status_code == 400
    )
    assert client.get(link.replace(token, token[:-2] + "zz")).status_code == 400
    # straight to the form without a token in the session
    assert Client().get(reverse("clinics:password-reset-confirm", args=[uid, "set-password"])).status_code == 400
    later = datetime.now() + timedelta(seconds=3600 + 60)
    monkeypatch.setattr("django.contrib.auth.tokens.PasswordResetTokenGenerator._now", lambda self: later)
    assert client.get(link).status_code == 400


def test_reset_requests_are_rate_limited(alice: World, settings: Any) -> None:
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "login": "2/60"}
    client = Client(REMOTE_ADDR="203.0.113.30")
    assert [_ask(client, "staff@alice.test").status_code for _ in range(3)] == [200, 200, 429]
    assert len(mail.outbox) == 2
