"""Shared fixtures: two clinics ("alice" owns the data, "bob" is another clinic), a member per
role in each, an API key per clinic, and a patient of each clinic."""

from __future__ import annotations

import datetime as dt
import io
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from PIL import Image as PILImage
from rest_framework.test import APIClient

from analysis.models import Analysis, Finding, ModelVersion
from clinics import services
from clinics.models import ApiKey, Clinic, Membership, Role, User
from clinics.tenancy import clinic_scope, deactivate_clinic
from patients.models import Image, Patient
from patients.services import image_ingest, patient_create

PASSWORD = "correct-horse-battery-staple-42"


@dataclass
class World:
    clinic: Clinic
    users: dict[str, User] = field(default_factory=dict)
    memberships: dict[str, Membership] = field(default_factory=dict)
    api_key: ApiKey | None = None
    api_secret: str = ""
    patient: Patient | None = None
    patient_name: str = ""
    image: Image | None = None
    analysis: Analysis | None = None
    finding: Finding | None = None


def build_clinic(slug: str, *, patient_name: str = "Zed") -> World:
    clinic = services.clinic_create(name=f"Clinic {slug}", slug=slug)
    world = World(clinic=clinic)
    with clinic_scope(clinic.id):
        for role in Role:
            m = services.member_add(
                email=f"{role.value}@{slug}.test", role=role, password=PASSWORD, full_name=f"{slug} {role.label}"
            )
            world.users[role.value] = m.user
            world.memberships[role.value] = m
        world.api_key, world.api_secret = services.api_key_create(name=f"{slug} PMS")
        world.patient = patient_create(
            external_id=f"{slug}-0001",
            given_name="Marker",
            family_name=patient_name,
            date_of_birth=dt.date(1980, 5, 17),
        )
        world.patient_name = patient_name
        world.image = image_ingest(
            patient=world.patient, stream=io.BytesIO(png_bytes()), filename="smile.png", size=None, modality="photo"
        )
        world.analysis = Analysis.objects.create(
            image=world.image, model_version=fixture_model_version(), status="done", input_sha256=world.image.sha256
        )
        world.finding = Finding.objects.create(
            analysis=world.analysis,
            image=world.image,
            condition="caries",
            probability=0.91,
            box=[0.1, 0.2, 0.3, 0.25],
        )
    return world


def fixture_model_version() -> ModelVersion:
    """A registry row for tests that need findings but no weights (never active, never loaded)."""
    model, _ = ModelVersion.objects.get_or_create(
        name="photo-fixture",
        version="0.0.0",
        defaults={
            "modality": "photo",
            "artifact_dir": "/nonexistent",
            "weights_sha256": "0" * 64,
            "labels": ["caries", "gingivitis", "calculus", "ulcer"],
            "thresholds": {"caries": 0.3, "gingivitis": 0.5, "calculus": 0.5, "ulcer": 0.5},
        },
    )
    return model


def png_bytes(size: tuple[int, int] = (64, 48), color: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(autouse=True)
def _image_storage(settings: Any, tmp_path: Path) -> Path:
    """Every test stores image blobs, and audit checkpoints, in its own folders."""
    location = tmp_path / "images"
    settings.STORAGES = {
        **settings.STORAGES,
        "images": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(location)}},
        "audit_checkpoints": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "audit-checkpoints")},
        },
    }
    return location


APP_ROLE = "dentalscan_test_app"


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: None, django_db_blocker: Any) -> Iterator[None]:
    """On PostgreSQL the suite works as an application role that owns no table, is not a superuser
    and cannot bypass row-level security, exactly as production must (``manage.py setup_db_roles``).
    The test database is created and migrated by the login role (the owner) first."""
    from django.conf import settings as django_settings
    from django.db import connections

    from clinics.rls import app_role_grants_sql

    if connection.vendor != "postgresql":
        yield
        return
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [APP_ROLE])
        if cursor.fetchone() is None:
            cursor.execute(f"CREATE ROLE {APP_ROLE} NOLOGIN NOSUPERUSER NOBYPASSRLS")
        for statement in app_role_grants_sql(APP_ROLE, allow_truncate=True):
            cursor.execute(statement)
    django_settings.DATABASE_APP_ROLE = APP_ROLE
    connections.close_all()
    yield
    django_settings.DATABASE_APP_ROLE = ""
    connections.close_all()


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    """Rate-limit and lockout counters never carry from one test to the next."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture(autouse=True)
def _rate_limit_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rate limiter counts in windows of the wall clock (a minute's window ends at :59): a test whose requests
    crossed a window's end would see its count start again, and a request it expects refused pass (CI saw such
    flakes). In each test the limiter's clock stands still just after the start of a day, so every window holds
    the whole test; a test that needs time to pass sets ``clinics.ratelimit.time.time`` itself."""
    from clinics import ratelimit

    start = int(time.time()) // 86400 * 86400 + 1
    monkeypatch.setattr(ratelimit, "time", SimpleNamespace(time=lambda: start))


@pytest.fixture(autouse=True)
def _no_scope_leaks() -> Iterator[None]:
    deactivate_clinic()
    yield
    deactivate_clinic()


@pytest.fixture
def alice(db: Any) -> World:
    return build_clinic("alice", patient_name="Alicesonmarker")


@pytest.fixture
def bob(db: Any) -> World:
    return build_clinic("bob", patient_name="Bobsonmarker")


def user_client(user: User, *, mfa: str = "totp") -> Client:
    """A browser session as after a complete log-in (password and, by default, the second factor)."""
    import time

    from clinics import sessions

    client = Client()
    client.force_login(user)
    session = client.session
    now = time.time()
    session.update({sessions.AUTH_AT: now, sessions.LAST_SEEN: now, sessions.REAUTH_AT: now, sessions.MFA_METHOD: mfa})
    session.save()
    return client


def enrol_totp(user: User) -> str:
    """Enrol and confirm an authenticator for ``user``; returns its base32 secret."""
    import pyotp

    from clinics import mfa

    secret = mfa.enrol_begin(user)
    device = user.totp_device
    assert mfa.enrol_confirm(user, pyotp.TOTP(secret).now()) is not None
    device.refresh_from_db()
    return secret


def next_totp(user: User, secret: str) -> str:
    """A code for a step after the last one used (codes cannot be replayed within a test)."""
    import time

    import pyotp

    from clinics.models import TotpDevice

    totp = pyotp.TOTP(secret)
    last = TotpDevice.objects.get(user=user).last_step
    step = max(int(time.time() // 30), last + 1)
    if step > int(time.time() // 30) + 1:
        raise AssertionError("no unused TOTP step left in the accepted window")
    return totp.generate_otp(step)


def token_client(world: World, role: str, *, mfa: bool = True) -> APIClient:
    """A user token as ``POST auth/token/`` issues it (by default after the second factor)."""
    with clinic_scope(world.clinic.id):
        _, raw = services.user_token_create(user=world.users[role], clinic=world.clinic, mfa_verified=mfa)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def key_client(world: World) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {world.api_secret}")
    return client


def is_postgres() -> bool:
    return connection.vendor == "postgresql"


requires_postgres = pytest.mark.skipif(
    not os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")),
    reason="needs PostgreSQL (set DATABASE_URL); CI runs it",
)


@pytest.fixture
def eager() -> Iterator[None]:
    """Run tasks in-process (the embedded default), whatever broker the suite is configured with."""
    from config.celery import app

    saved = (app.conf.task_always_eager, app.conf.task_eager_propagates)
    app.conf.task_always_eager = app.conf.task_eager_propagates = True
    yield
    app.conf.task_always_eager, app.conf.task_eager_propagates = saved


def tasks_on_commit(callbacks: list[Any]) -> list[Any]:
    """The on-commit callbacks captured by ``django_capture_on_commit_callbacks``, less the audit sealer's (the
    embedded default seals the audit events of a transaction after it commits)."""
    from clinics import audit

    return [c for c in callbacks if getattr(c, "func", None) is not audit.seal_after_commit]


def seal_committed(timeout: float = 15.0) -> int:
    """Seal every committed audit event, as the periodic sealer would over a few runs; returns how many. On
    PostgreSQL the sealer waits for write transactions of this database older than an event to end, so this
    retries until none is left unsealed or ``timeout`` passes."""
    import time

    from clinics import audit
    from clinics.models import AuditEvent

    sealed, deadline = audit.seal_all(), time.monotonic() + timeout
    while AuditEvent.unscoped.filter(seq__isnull=True).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
        sealed += audit.seal_all()
    return sealed


@pytest.fixture
def no_seal_on_commit() -> Iterator[None]:
    """Audit events stay unsealed until a sealer runs (``clinics.audit.seal_all``), as with a broker, even in the
    embedded default (which seals right after each commit)."""
    from config.celery import app

    saved = app.conf.task_always_eager
    app.conf.task_always_eager = False
    yield
    app.conf.task_always_eager = saved


def invitation_link(outbox: list[Any], email: str) -> str:
    """The path of the newest invitation link mailed to ``email``."""
    import re

    for message in reversed(outbox):
        if email in message.to:
            found = re.search(r"https?://[^/\s]+(/invitations/[^\s]+/)", message.body)
            if found:
                return found.group(1)
    raise AssertionError(f"no invitation mailed to {email}")


def join_by_invitation(world: World, person: User, role: str, *, display_name: str = "") -> Membership:
    """The whole invitation flow: ``world``'s clinic admin invites the person's address, the person (logged in to
    their own clinic) opens the mailed link and accepts. Returns the new membership."""
    from django.core import mail
    from django.test import TestCase
    from django.urls import reverse

    from config.celery import app

    admin = user_client(world.users["clinic_admin"])
    saved = app.conf.task_always_eager
    app.conf.task_always_eager = True  # the mail goes from a task after commit: run it here, whatever the broker
    try:
        with TestCase.captureOnCommitCallbacks(execute=True):
            invited = admin.post(reverse("clinics:members"), {"email": person.email, "role": role})
    finally:
        app.conf.task_always_eager = saved
    assert invited.status_code == 302
    client = user_client(person)
    opened = client.get(invitation_link(mail.outbox, person.email))
    assert opened.status_code == 302
    accepted = client.post(opened["Location"], {"display_name": display_name})
    assert accepted.status_code == 302, accepted.content.decode()[:2000]
    return Membership.unscoped.get(user=person, clinic=world.clinic)
