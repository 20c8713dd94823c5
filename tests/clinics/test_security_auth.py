"""MFA, lockout, rate limits, session timeouts, global log-out and re-authentication.

Each test fails without its feature: it drives the real views and API through the test client.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pyotp
import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from clinics import sessions
from clinics.models import AuditEvent, RecoveryCode, TotpDevice, UserToken

from ..conftest import PASSWORD, World, enrol_totp, next_totp, token_client, user_client


def _login(client: Client, email: str, password: str = PASSWORD, **extra: Any) -> Any:
    return client.post(reverse("clinics:login"), {"email": email, "password": password}, **extra)


# --- MFA ---------------------------------------------------------------------------------------


def test_dentist_must_enrol_totp_before_any_patient_data(alice: World) -> None:
    client = Client()
    response = _login(client, "dentist@alice.test")
    assert response.status_code == 302 and response["Location"] == reverse("clinics:mfa")
    # Password alone gives no session: patient pages still ask for a log-in.
    assert client.get(reverse("patients:list")).status_code == 302
    page = client.get(reverse("clinics:mfa"))
    assert page.status_code == 200 and b"Set up your authenticator" in page.content and b"<svg" in page.content
    secret = page.context["secret"]
    assert TotpDevice.objects.get(user=alice.users["dentist"]).confirmed_at is None
    assert secret.encode() not in bytes(TotpDevice.objects.get(user=alice.users["dentist"]).wrapped_secret)
    wrong = client.post(reverse("clinics:mfa"), {"code": "000000"})
    assert wrong.status_code == 400
    done = client.post(reverse("clinics:mfa"), {"code": pyotp.TOTP(secret).now()})
    assert done.status_code == 200 and len(done.context["codes"]) == 10
    assert client.get(reverse("patients:list")).status_code == 200
    login = AuditEvent.unscoped.filter(action="auth.login").latest("id")
    assert login.details == {"channel": "web", "mfa": "totp"}
    assert AuditEvent.unscoped.filter(action="auth.mfa.enrol", object_id=str(alice.users["dentist"].pk)).exists()


def test_enrolled_user_logs_in_with_a_code_and_a_code_cannot_be_replayed(alice: World) -> None:
    admin = alice.users["clinic_admin"]
    secret = enrol_totp(admin)
    code = next_totp(admin, secret)
    first = Client()
    _login(first, admin.email)
    assert first.post(reverse("clinics:mfa"), {"code": code})["Location"] == reverse("clinics:home")
    # The same code a second time (an eavesdropper replaying it) is refused.
    second = Client()
    _login(second, admin.email)
    assert second.post(reverse("clinics:mfa"), {"code": code}).status_code == 400
    assert second.get(reverse("clinics:home")).status_code == 302


def test_recovery_codes_work_once(alice: World) -> None:
    dentist = alice.users["dentist"]
    enrol_totp(dentist)
    from clinics import mfa

    codes = mfa.recovery_codes_regenerate(dentist)
    assert not RecoveryCode.objects.filter(code_hash__in=codes).exists()  # only hashes are stored
    client = Client()
    _login(client, dentist.email)
    assert client.post(reverse("clinics:mfa"), {"code": codes[0]}).status_code == 302
    assert client.get(reverse("patients:list")).status_code == 200
    again = Client()
    _login(again, dentist.email)
    assert again.post(reverse("clinics:mfa"), {"code": codes[0]}).status_code == 400


def test_user_tokens_only_after_mfa(alice: World) -> None:
    url = reverse("api:token")
    body = {"email": "dentist@alice.test", "password": PASSWORD}
    not_enrolled = Client().post(url, body, content_type="application/json")
    assert not_enrolled.status_code == 403 and not_enrolled.json()["error"]["code"] == "mfa_enrollment_required"
    secret = enrol_totp(alice.users["dentist"])
    missing = Client().post(url, body, content_type="application/json")
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "mfa_required"
    wrong = Client().post(url, {**body, "otp": "123456"}, content_type="application/json")
    assert wrong.status_code == 401
    code = next_totp(alice.users["dentist"], secret)
    ok = Client().post(url, {**body, "otp": code}, content_type="application/json")
    assert ok.status_code == 200 and ok.json()["token"].startswith("dut_")
    replay = Client().post(url, {**body, "otp": code}, content_type="application/json")
    assert replay.status_code == 401
    # Staff need no second factor.
    staff = Client().post(url, {"email": "staff@alice.test", "password": PASSWORD}, content_type="application/json")
    assert staff.status_code == 200


def test_a_recovery_code_gets_a_token(alice: World) -> None:
    from clinics import mfa

    dentist = alice.users["dentist"]
    enrol_totp(dentist)
    codes = mfa.recovery_codes_regenerate(dentist)
    body = {"email": dentist.email, "password": PASSWORD, "otp": codes[0]}
    ok = Client().post(reverse("api:token"), body, content_type="application/json")
    assert ok.status_code == 200, ok.content
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {ok.json()['token']}")
    assert api.get(reverse("api:patient-list")).status_code == 200
    again = Client().post(reverse("api:token"), body, content_type="application/json")
    assert again.status_code == 401 and again.json()["error"]["code"] == "mfa_required"


def test_a_token_issued_without_a_second_factor_does_not_act_in_a_role_that_needs_one(alice: World) -> None:
    url = reverse("api:token")
    issued = Client().post(url, {"email": "staff@alice.test", "password": PASSWORD}, content_type="application/json")
    assert issued.status_code == 200
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.json()['token']}")
    assert api.get(reverse("api:patient-list")).status_code == 200
    member_url = reverse("clinics:member-update", kwargs={"pk": alice.memberships["staff"].pk})
    user_client(alice.users["clinic_admin"]).post(member_url, {"role": "dentist"})
    promoted = api.get(reverse("api:patient-list"))
    assert promoted.status_code == 403 and promoted.json()["error"]["code"] == "mfa_required"
    denial = AuditEvent.unscoped.filter(action="permission.denied", clinic=alice.clinic).latest("id")
    assert denial.details["reason"] == "mfa_required"
    issue = AuditEvent.unscoped.filter(action="auth.token.issue", clinic=alice.clinic).latest("id")
    assert issue.details == {"mfa": False}


def test_a_session_without_mfa_is_refused_for_roles_that_need_it(alice: World) -> None:
    client = user_client(alice.users["dentist"], mfa="")
    assert client.get(reverse("patients:list")).status_code == 302
    api = user_client(alice.users["dentist"], mfa="")
    response = api.get(reverse("api:patient-list"))
    assert response.status_code in (401, 403)


# --- Lockout and rate limits -------------------------------------------------------------------


def test_lockout_on_email_and_ip_with_retry_after(alice: World, settings: Any) -> None:
    settings.LOCKOUT_FAILURES = 3
    attacker = Client(REMOTE_ADDR="203.0.113.9")
    for _ in range(2):
        assert _login(attacker, "staff@alice.test", "wrong-password-1").status_code == 400
    locked = _login(attacker, "staff@alice.test", "wrong-password-1")
    assert locked.status_code == 429 and int(locked["Retry-After"]) > 60
    # Even the right password is refused from that address during the cool-off...
    assert _login(attacker, "staff@alice.test").status_code == 429
    # ...and a forged X-Forwarded-For does not reset it (no trusted proxy configured).
    spoofed = _login(attacker, "staff@alice.test", HTTP_X_FORWARDED_FOR="198.51.100.7")
    assert spoofed.status_code == 429
    # The person can still log in from their own address: not locked on the IP or the email alone.
    assert _login(Client(REMOTE_ADDR="192.0.2.10"), "staff@alice.test").status_code == 302
    assert _login(attacker, "dentist@alice.test", "wrong-password-1").status_code == 400
    api = Client(REMOTE_ADDR="203.0.113.9").post(
        reverse("api:token"), {"email": "staff@alice.test", "password": PASSWORD}, content_type="application/json"
    )
    assert api.status_code == 429 and api.json()["error"]["code"] == "rate_limited" and api["Retry-After"]
    assert AuditEvent.unscoped.filter(action="auth.login.failed", details__reason="locked_out").exists()


def test_cool_off_ends_the_lockout(alice: World, settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    settings.LOCKOUT_FAILURES = 2
    client = Client(REMOTE_ADDR="203.0.113.9")
    _login(client, "staff@alice.test", "wrong-password-1")
    assert _login(client, "staff@alice.test", "wrong-password-1").status_code == 429
    later = time.time() + settings.LOCKOUT_COOLOFF_SECONDS + 1
    monkeypatch.setattr("clinics.ratelimit.time.time", lambda: later)
    assert _login(client, "staff@alice.test").status_code == 302


def test_upload_and_export_rate_limits_answer_429_per_clinic(alice: World, bob: World, settings: Any) -> None:
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "upload": "2/60", "export": "1/3600"}
    url = reverse("api:patient-image-list", kwargs={"pk": alice.patient.pk})
    client = token_client(alice, "staff")
    statuses = [client.post(url, {"modality": "photo"}, format="multipart").status_code for _ in range(3)]
    assert statuses[:2] == [400, 400] and statuses[2] == 429
    third = client.post(url, {"modality": "photo"}, format="multipart")
    assert third.status_code == 429 and int(third["Retry-After"]) >= 1
    assert third.json()["error"]["code"] == "rate_limited"
    # Another clinic's allowance is untouched by alice's burst.
    bob_url = reverse("api:patient-image-list", kwargs={"pk": bob.patient.pk})
    assert token_client(bob, "staff").post(bob_url, {"modality": "photo"}, format="multipart").status_code == 400
    admin = user_client(alice.users["clinic_admin"])
    assert admin.get(reverse("clinics:audit-export"), {"format": "csv"}).status_code == 200
    limited = admin.get(reverse("clinics:audit-export"), {"format": "csv"})
    assert limited.status_code == 429 and limited["Retry-After"]


# --- Sessions ----------------------------------------------------------------------------------


def test_login_token_and_analysis_rate_limits_answer_429(alice: World, settings: Any) -> None:
    from django.core.cache import cache

    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "login": "2/60", "token": "2/60", "analysis": "2/60"}
    # log-in (per client IP, right password: the lockout plays no part)
    browser = Client(REMOTE_ADDR="203.0.113.20")
    assert [_login(browser, "staff@alice.test").status_code for _ in range(2)] == [302, 302]
    limited = _login(browser, "staff@alice.test")
    assert limited.status_code == 429 and int(limited["Retry-After"]) >= 1
    assert _login(Client(REMOTE_ADDR="203.0.113.21"), "staff@alice.test").status_code == 302
    # token
    body = {"email": "staff@alice.test", "password": PASSWORD}
    issuer = Client(REMOTE_ADDR="203.0.113.22")
    statuses = [issuer.post(reverse("api:token"), body, content_type="application/json").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    # analysis reads (per member within the clinic)
    api = token_client(alice, "staff")
    statuses = [api.get(reverse("api:analysis-list")).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert token_client(alice, "dentist").get(reverse("api:analysis-list")).status_code == 200
    # a failed log-in counts for the account too (successes never do)
    Client(REMOTE_ADDR="203.0.113.23").post(
        reverse("clinics:login"), {"email": "staff@alice.test", "password": "wrong-wrong"}
    )
    # counters of members live under their clinic's prefix; anonymous ones under "anonymous"
    keys = [k.split(":", 2)[2] for k in cache._cache if ":rl:" in k]  # type: ignore[attr-defined]
    assert any(k.startswith(f"rl:clinic:{alice.clinic.id}:analysis:") for k in keys), keys
    assert any(k.startswith("rl:anonymous:login:") for k in keys), keys
    # anonymous purposes also count per account (the address typed), under "account" (issue 24; log-in: failures)
    assert any(k.startswith("rl:account:login_account:") for k in keys), keys
    assert all(k.startswith((f"rl:clinic:{alice.clinic.id}:", "rl:anonymous:", "rl:account:")) for k in keys), keys


def _age_session(client: Client, **seconds_ago: float) -> None:
    session = client.session
    for key, ago in seconds_ago.items():
        session[key] = time.time() - ago
    session.save()


def test_idle_timeout_logs_out_after_15_minutes(alice: World) -> None:
    client = user_client(alice.users["staff"])
    assert client.get(reverse("patients:list")).status_code == 200
    _age_session(client, last_seen=14 * 60)
    assert client.get(reverse("patients:list")).status_code == 200  # activity renews it
    assert time.time() - client.session[sessions.LAST_SEEN] < 5
    _age_session(client, last_seen=15 * 60 + 5)
    response = client.get(reverse("patients:list"))
    assert response.status_code == 302 and response["Location"].startswith(reverse("clinics:login"))
    assert b"15 minutes without activity" in client.get(reverse("clinics:login")).content
    assert AuditEvent.unscoped.filter(action="auth.session.expired", details__reason="idle_timeout").exists()


def test_requests_close_together_do_not_rewrite_the_session(alice: World) -> None:
    client = user_client(alice.users["staff"])
    _age_session(client, last_seen=5)
    assert client.get(reverse("patients:list")).status_code == 200
    assert time.time() - client.session[sessions.LAST_SEEN] >= 5  # within the resolution: not written again
    _age_session(client, last_seen=sessions.LAST_SEEN_RESOLUTION_SECONDS + 1)
    assert client.get(reverse("patients:list")).status_code == 200
    assert time.time() - client.session[sessions.LAST_SEEN] < 5


def test_background_polling_does_not_keep_a_session_alive(alice: World) -> None:
    client = user_client(alice.users["staff"])
    _age_session(client, last_seen=10 * 60)
    assert client.get(reverse("patients:list"), HTTP_X_BACKGROUND_REQUEST="1").status_code == 200
    assert time.time() - client.session[sessions.LAST_SEEN] >= 10 * 60 - 5


def test_absolute_limit_of_12_hours_even_when_active(alice: World) -> None:
    client = user_client(alice.users["staff"])
    _age_session(client, auth_at=12 * 3600 + 5, last_seen=1)
    assert client.get(reverse("patients:list")).status_code == 302


def test_logout_ends_every_session_and_token_of_the_person(alice: World) -> None:
    laptop = user_client(alice.users["staff"])
    tablet = user_client(alice.users["staff"])
    api = token_client(alice, "staff")
    assert tablet.get(reverse("patients:list")).status_code == 200
    assert laptop.post(reverse("clinics:logout")).status_code == 302
    assert tablet.get(reverse("patients:list")).status_code == 302
    assert api.get(reverse("api:patient-list")).status_code == 401
    assert not UserToken.objects.filter(user=alice.users["staff"], revoked_at=None).exists()
    # Others are not affected.
    assert user_client(alice.users["dentist"]).get(reverse("patients:list")).status_code == 200


def test_a_password_change_ends_every_session_and_token_but_a_rehash_does_not(alice: World) -> None:
    """However the password is changed (``set_password`` + ``save``: the admin, ``manage.py changepassword``, a
    reset), API tokens are revoked as well as sessions; re-hashing the same password at login changes nothing."""
    from clinics.models import User

    staff = alice.users["staff"]
    api = token_client(alice, "staff")
    tablet = user_client(staff)
    assert api.get(reverse("api:patient-list")).status_code == 200

    user = User.objects.get(pk=staff.pk)
    user.set_password(PASSWORD)  # the same password hashed again (what a hasher upgrade at login does)
    user.save()
    assert api.get(reverse("api:patient-list")).status_code == 200
    assert not AuditEvent.unscoped.filter(action="auth.sessions.end_all", object_id=str(staff.pk)).exists()

    user.set_password("a-brand-new passphrase 2026")
    user.save()
    assert api.get(reverse("api:patient-list")).status_code == 401
    assert tablet.get(reverse("patients:list")).status_code == 302
    assert not UserToken.objects.filter(user=staff, revoked_at=None).exists()
    event = AuditEvent.unscoped.filter(action="auth.sessions.end_all", object_id=str(staff.pk)).get()
    assert event.details["reason"] == "password_changed"
    user.full_name = "Renamed"
    user.save()  # a later save of the same instance keeps the new security stamp
    assert User.objects.get(pk=staff.pk).security_stamp == user.security_stamp
    # the new password works; others are not affected
    assert _login(Client(), staff.email, "a-brand-new passphrase 2026").status_code == 302
    assert token_client(alice, "dentist").get(reverse("api:patient-list")).status_code == 200


# --- Re-authentication before exports and erasure ------------------------------------------


def test_exports_and_erasure_need_a_fresh_reauthentication(alice: World) -> None:
    admin = alice.users["clinic_admin"]
    secret = enrol_totp(admin)
    client = user_client(admin)
    _age_session(client, reauth_at=10 * 60)
    detail = reverse("patients:detail", kwargs={"pk": alice.patient.pk})
    response = client.post(reverse("patients:export", kwargs={"pk": alice.patient.pk}), HTTP_REFERER=detail)
    assert response.status_code == 302 and response["Location"].startswith(reverse("clinics:reauth"))
    audit_export = client.get(reverse("clinics:audit-export"), {"format": "csv"})
    assert audit_export.status_code == 302 and reverse("clinics:reauth") in audit_export["Location"]
    bad = client.post(reverse("clinics:reauth"), {"password": PASSWORD, "code": "000000", "next": detail})
    assert bad.status_code == 400
    ok = client.post(
        reverse("clinics:reauth"), {"password": PASSWORD, "code": next_totp(admin, secret), "next": detail}
    )
    assert ok.status_code == 302 and ok["Location"] == detail
    export = client.post(reverse("patients:export", kwargs={"pk": alice.patient.pk}), HTTP_REFERER=detail)
    assert export.status_code == 200 and export["Content-Type"] == "application/zip"


def test_api_export_needs_a_fresh_token(alice: World) -> None:
    client = token_client(alice, "clinic_admin")
    url = reverse("api:audit-event-export")
    assert client.get(url, {"format": "json"}).status_code == 200
    ten_minutes_ago = timezone.now() - timedelta(minutes=10)
    UserToken.objects.filter(user=alice.users["clinic_admin"]).update(created_at=ten_minutes_ago)
    stale = client.get(url, {"format": "json"})
    assert stale.status_code == 403 and stale.json()["error"]["code"] == "reauthentication_required"
    # Ordinary reads keep working with the same token.
    assert client.get(reverse("api:patient-list")).status_code == 200


# --- Headers -----------------------------------------------------------------------------------


def test_security_headers_on_pages_and_patient_data(alice: World) -> None:
    client = user_client(alice.users["staff"])
    for url in (reverse("patients:list"), reverse("clinics:login"), reverse("api:patient-list")):
        response = client.get(url)
        csp = response["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp and "object-src 'none'" in csp
        assert response["Cache-Control"] == "no-store"
        assert response["X-Content-Type-Options"] == "nosniff"
        assert response["X-Frame-Options"] == "DENY"
    image = client.get(reverse("api:image-file", kwargs={"pk": alice.image.pk}))
    assert image.status_code == 200 and image["Cache-Control"] == "no-store"


def test_asking_for_another_clinics_object_is_a_plain_404_and_audited(alice: World, bob: World) -> None:
    """The answer confirms nothing (the same 404 as for an id that does not exist); the attempt is recorded in the
    asker's clinic's audit trail, through the API and the pages alike."""
    from clinics.tenancy import clinic_scope

    api = token_client(alice, "staff")
    other = api.get(reverse("api:patient-detail", kwargs={"pk": bob.patient.pk}))
    missing = api.get(reverse("api:patient-detail", kwargs={"pk": "00000000-0000-0000-0000-000000000000"}))
    assert other.status_code == missing.status_code == 404 and other.json() == missing.json()
    page = user_client(alice.users["dentist"]).get(reverse("patients:detail", kwargs={"pk": bob.patient.pk}))
    assert page.status_code == 404
    events = AuditEvent.unscoped.filter(action="permission.denied", clinic=alice.clinic, details__reason="not_found")
    assert sorted(e.object_id for e in events) == sorted(
        [str(bob.patient.pk), str(bob.patient.pk), "00000000-0000-0000-0000-000000000000"]
    )
    assert {e.details["route"] for e in events} == {"api:patient-detail", "patients:detail"}
    assert not AuditEvent.unscoped.filter(clinic=bob.clinic, action="permission.denied").exists()
    with clinic_scope(bob.clinic.id):  # nothing in bob's trail points at alice's attempt
        assert not AuditEvent.objects.filter(details__reason="not_found").exists()
