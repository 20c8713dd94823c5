"""``task_send_after_response``: without a broker, the task runs once the response is sent, not inside the
request; with one, it is sent at once like any task."""

from __future__ import annotations

import re
import threading
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar
from typing import Any

import pytest
from django.core import mail

from clinics import services
from clinics.queue import PASSWORD_RESET_MAIL
from clinics.tenancy import clinic_scope
from core import queue

from ..conftest import PASSWORD, World


@pytest.mark.usefixtures("eager")
def test_held_until_the_request_finishes_then_run(alice: World) -> None:
    queue.request_started()
    queue.task_send_after_response(PASSWORD_RESET_MAIL, str(alice.users["staff"].pk), "testserver", False)
    assert mail.outbox == []  # nothing inside the request
    queue.request_finished()
    assert [m.to for m in mail.outbox] == [[alice.users["staff"].email]]
    # outside a request (a command, a worker) it runs at once
    queue.task_send_after_response(PASSWORD_RESET_MAIL, str(alice.users["staff"].pk), "testserver", False)
    assert len(mail.outbox) == 2


def test_with_a_broker_it_is_sent_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from config.celery import app

    sent: list[tuple[str, tuple[object, ...]]] = []
    monkeypatch.setattr(queue, "task_send", lambda name, *args: sent.append((name, args)))
    saved, app.conf.task_always_eager = app.conf.task_always_eager, False
    queue.request_started()
    try:
        queue.task_send_after_response("clinics.password_reset_mail", "id", "host", True)
        assert sent == [("clinics.password_reset_mail", ("id", "host", True))]
    finally:
        queue.request_finished()
        app.conf.task_always_eager = saved


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("eager")
def test_a_real_server_answers_before_the_mail_is_made(live_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through a real WSGI server: the reset page's answer has arrived while the (slowed) mail is still being made,
    so the answer's time does not depend on whether the address has an account."""
    from django.core.mail.backends.locmem import EmailBackend

    clinic = services.clinic_create(name="Clinic live", slug="live")
    with clinic_scope(clinic.id):
        services.member_add(email="live@live.test", role="staff", password=PASSWORD)
    made, release = threading.Event(), threading.Event()
    original = EmailBackend.send_messages

    def slow(self: EmailBackend, messages: Any) -> int:
        release.wait(30)  # the mail is made only once the test has its answer
        sent = original(self, messages)
        made.set()
        return sent

    monkeypatch.setattr(EmailBackend, "send_messages", slow)
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
    url = f"{live_server.url}/password-reset/"
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', opener.open(url).read().decode())[1]
    with opener.open(
        url, urllib.parse.urlencode({"email": "live@live.test", "csrfmiddlewaretoken": token}).encode(), timeout=20
    ) as r:
        body = r.read()
    assert b'data-testid="reset-sent"' in body
    assert not made.is_set()  # answered while the mail was still waiting to be made
    release.set()
    assert made.wait(15)
    assert [m.to for m in mail.outbox] == [["live@live.test"]]
