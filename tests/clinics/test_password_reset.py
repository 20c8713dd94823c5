"""'Forgot your password?': a single-use, time-limited link by email; the answer never tells who has an account."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.core import mail
from django.test import Client, TestCase
from django.urls import reverse
from django.utils.http import urlsafe_base64_encode

from clinics.models import AuditEvent, UserToken

from ..conftest import World, enrol_totp, token_client, user_client

NEW_PASSWORD = "another-long-passphrase-2027"
pytestmark = pytest.mark.usefixtures("eager")  # the mail goes from a task: run it here, whatever the broker


def _ask(client: Client, email: str):  # noqa: ANN202
    with TestCase.captureOnCommitCallbacks(execute=True):  # the mail is queued after commit
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
    events = list(
        AuditEvent.unscoped.filter(clinic=alice.clinic, object_id=str(staff.pk))
        .filter(action__startswith="auth.password")
        .values_list("action", "actor_user")
    )
    # whoever asked and followed the link is anonymous to the trail; the account is the object
    assert events == [("auth.password.reset_requested", None), ("auth.password.reset", None)]


def test_unknown_addresses_get_the_same_answer_and_no_mail(alice: World) -> None:
    known = _ask(Client(), "staff@alice.test").content.decode()
    unknown = _ask(Client(), "nobody@alice.test").content.decode()
    strip = lambda html: re.sub(r'name="csrfmiddlewaretoken" value="[^"]+"', "", html)  # noqa: E731
    assert strip(known) == strip(unknown)
    assert len(mail.outbox) == 1


def test_known_and_unknown_addresses_queue_the_same_task(alice: World, monkeypatch: pytest.MonkeyPatch) -> None:
    import clinics.services

    queued: list[tuple[Any, ...]] = []
    monkeypatch.setattr(clinics.services, "task_send_after_response", lambda *args: queued.append(args))
    _ask(Client(), "staff@alice.test")
    _ask(Client(), "nobody@alice.test")
    assert [args[0] for args in queued] == ["clinics.password_reset_mail"] * 2
    assert queued[0][1] == str(alice.users["staff"].pk) and queued[1][1] is None  # ids only, never the address
    assert queued[0][2:] == queued[1][2:]


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
    _ask(Client(), "staff@alice.test")
    link = _link(mail.outbox[0])
    uid, token = link.strip("/").split("/")[-2:]
    assert Client().get(link).status_code == 302  # valid now
    assert Client().get(link.replace(uid, "eA")).status_code == 400  # not a user
    dentist_uid = urlsafe_base64_encode(str(alice.users["dentist"].pk).encode())
    assert Client().get(link.replace(uid, dentist_uid)).status_code == 400  # someone else's account
    assert Client().get(link.replace(token, token[:-2] + "zz")).status_code == 400
    # straight to the form without a token in the session
    assert Client().get(reverse("clinics:password-reset-confirm", args=[uid, "set-password"])).status_code == 400
    later = datetime.now() + timedelta(seconds=3600 + 60)
    monkeypatch.setattr("django.contrib.auth.tokens.PasswordResetTokenGenerator._now", lambda self: later)
    assert Client().get(link).status_code == 400  # expired


def test_reset_requests_are_rate_limited_per_address_and_per_client(alice: World, settings: Any) -> None:
    # per address, whoever asks: a mailbox is not flooded, and the page says the same as ever
    answers = [_ask(Client(REMOTE_ADDR=f"198.51.100.{i}"), "staff@alice.test") for i in range(4)]
    assert [a.status_code for a in answers] == [200] * 4
    assert len({a.content.decode().split('data-testid="reset-sent"')[1] for a in answers}) == 1
    assert len(mail.outbox) == 3  # RATE_LIMITS["password_reset_mail"] = 3 an hour
    assert AuditEvent.unscoped.filter(action="auth.password.reset_requested").count() == 3
    # per client, in a bucket of its own (not the log-in's)
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "password_reset": "2/60"}
    client = Client(REMOTE_ADDR="203.0.113.30")
    assert [_ask(client, "dentist@alice.test").status_code for _ in range(3)] == [200, 200, 429]
