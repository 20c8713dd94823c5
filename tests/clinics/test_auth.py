from __future__ import annotations

from datetime import timedelta

from django.test import Client
from django.urls import reverse
from django.utils import timezone

from clinics.models import ApiKey, AuditEvent, User, UserToken
from clinics.services import api_key_revoke
from clinics.tenancy import clinic_scope

from ..conftest import PASSWORD, World, enrol_totp, key_client, next_totp, token_client


def test_passwords_are_hashed_with_argon2(alice: World) -> None:
    user = User.objects.get(pk=alice.users["staff"].pk)
    assert user.password.startswith("argon2$argon2id$")
    assert PASSWORD not in user.password


def test_email_is_unique_case_insensitively(alice: World) -> None:
    import pytest
    from django.db import IntegrityError, transaction

    with pytest.raises(IntegrityError), transaction.atomic():
        User.objects.create(email="STAFF@Alice.TEST")


def test_login_is_case_insensitive_rotates_session_and_is_audited(alice: World) -> None:
    client = Client()
    client.get(reverse("clinics:login"))
    client.cookies["sessionid"] = "attacker-fixed-session-id"
    response = client.post(reverse("clinics:login"), {"email": "  Staff@ALICE.test", "password": PASSWORD})
    assert response.status_code == 302 and response["Location"] == reverse("clinics:home")
    assert client.cookies["sessionid"].value != "attacker-fixed-session-id"
    assert client.get(reverse("clinics:home")).status_code == 200
    event = AuditEvent.unscoped.filter(action="auth.login").latest("id")
    assert event.clinic_id == alice.clinic.id and event.actor_user_id == alice.users["staff"].pk
    assert event.ip == "127.0.0.1" and event.request_id


def test_failed_login_is_audited_and_says_nothing_specific(alice: World) -> None:
    response = Client().post(reverse("clinics:login"), {"email": "dentist@alice.test", "password": "wrong-password"})
    assert response.status_code == 400
    assert b"not correct" in response.content
    event = AuditEvent.unscoped.filter(action="auth.login.failed").latest("id")
    assert event.outcome == "denied" and event.clinic_id == alice.clinic.id
    Client().post(reverse("clinics:login"), {"email": "nobody@nowhere.test", "password": "whatever-password"})
    assert AuditEvent.unscoped.filter(action="auth.login.failed", chain="global").exists()


def test_login_redirect_refuses_other_hosts(alice: World) -> None:
    response = Client().post(
        reverse("clinics:login"), {"email": "staff@alice.test", "password": PASSWORD, "next": "https://evil.example/"}
    )
    assert response["Location"] == reverse("clinics:home")


def test_logout_ends_the_session_and_is_audited(alice: World) -> None:
    client = Client()
    client.post(reverse("clinics:login"), {"email": "staff@alice.test", "password": PASSWORD})
    assert client.post(reverse("clinics:logout")).status_code == 302
    assert client.get(reverse("clinics:home")).status_code == 302
    assert AuditEvent.unscoped.filter(action="auth.logout", actor_user=alice.users["staff"]).exists()


def test_token_endpoint_issues_short_lived_tokens(alice: World) -> None:
    secret = enrol_totp(alice.users["dentist"])
    client = Client()
    response = client.post(
        reverse("api:token"),
        {"email": "dentist@alice.test", "password": PASSWORD, "otp": next_totp(alice.users["dentist"], secret)},
        content_type="application/json",
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["token"].startswith("dut_") and body["clinic"] == str(alice.clinic.id)
    token = UserToken.objects.get(user=alice.users["dentist"])
    assert body["token"] not in token.secret_hash
    assert timedelta(minutes=5) < token.expires_at - timezone.now() <= timedelta(hours=1)
    api = Client(HTTP_AUTHORIZATION=f"Bearer {body['token']}")
    assert api.get(reverse("api:patient-list")).status_code == 200


def test_token_endpoint_rejects_bad_credentials_with_the_error_shape(alice: World) -> None:
    response = Client().post(
        reverse("api:token"),
        {"email": "dentist@alice.test", "password": "nope-nope-nope"},
        content_type="application/json",
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_failed"
    assert AuditEvent.unscoped.filter(action="auth.login.failed", clinic=alice.clinic).exists()
    response = Client().post(reverse("api:token"), {"email": "not-an-email"}, content_type="application/json")
    assert response.status_code == 400
    assert set(response.json()["error"]["details"]) == {"email", "password"}


def test_expired_or_revoked_tokens_are_refused(alice: World) -> None:
    client = token_client(alice, "staff")
    assert client.get(reverse("api:patient-list")).status_code == 200
    UserToken.objects.filter(user=alice.users["staff"]).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = client.get(reverse("api:patient-list"))
    assert response.status_code == 401 and response["WWW-Authenticate"] == "Bearer"
    assert AuditEvent.unscoped.filter(action="auth.token.rejected").exists()


def test_api_key_use_is_recorded_and_revocation_is_immediate(alice: World) -> None:
    client = key_client(alice)
    assert client.get(reverse("api:patient-list")).status_code == 200
    key = ApiKey.unscoped.get(pk=alice.api_key.pk)
    assert key.last_used_at is not None
    assert key.secret_hash != alice.api_secret and alice.api_secret.split("_")[1] == key.prefix
    event = AuditEvent.unscoped.filter(action="patient.list").latest("id")
    assert event.actor_api_key_id == key.pk and event.actor_label == f"api-key:{key.prefix}"
    # A denied use is audited too.
    assert client.get(reverse("api:audit-event-list")).status_code == 403
    assert AuditEvent.unscoped.filter(action="permission.denied", actor_api_key=key).exists()
    with clinic_scope(alice.clinic.id):
        api_key_revoke(key=key)
    assert client.get(reverse("api:patient-list")).status_code == 401


def test_garbage_bearer_tokens_are_401(alice: World) -> None:
    for header in ("Bearer", "Bearer a b", "Bearer dsk_x_y", "Bearer dut_nothing", "Bearer " + "x" * 5000):
        response = Client(HTTP_AUTHORIZATION=header).get(reverse("api:patient-list"))
        assert response.status_code == 401, header
