"""Settings, commands and the API schema."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pyotp
import pytest
from django.core.management import call_command
from django.test import Client

from tests.ml.conftest import random_artifact  # noqa: F401 - fixture

ROOT = Path(__file__).resolve().parent.parent
PROD_ENV = {
    "DJANGO_SETTINGS_MODULE": "config.settings.production",
    "SECRET_KEY": "p" * 20 + "roduction-secret-key-with-enough-entropy-0123456789",
    "DATABASE_URL": "postgres://app@db.internal:5432/dentalscan",
    "REDIS_URL": "redis://redis.internal:6379/0",
    "ALLOWED_HOSTS": "dental.example.org",
    "MASTER_KEYS": "k2026:" + "A" * 43 + "=",
    "MASTER_KEY_ID": "k2026",
}


def _manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in PROD_ENV and k != "DJANGO_SETTINGS_MODULE"}
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env={**base, **env}, capture_output=True, text=True, timeout=120
    )


def test_production_passes_check_deploy_without_warnings() -> None:
    result = _manage("check", "--deploy", "--fail-level", "WARNING", env=PROD_ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.parametrize("missing", ["SECRET_KEY", "DATABASE_URL", "REDIS_URL", "ALLOWED_HOSTS", "MASTER_KEYS"])
def test_production_refuses_to_start_without_its_secrets(missing: str) -> None:
    env = {k: v for k, v in PROD_ENV.items() if k != missing}
    result = _manage("check", env=env)
    assert result.returncode != 0
    assert f"environment variable {missing}" in result.stderr


def test_env_example_lists_every_production_variable() -> None:
    names = {
        line.split("=", 1)[0]
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    }
    source = "\n".join(p.read_text() for p in (ROOT / "config" / "settings").glob("*.py"))
    import re

    read = set(re.findall(r'(?:require_env|env_bool|env_list|os\.environ\.get|os\.environ\[)\(?"([A-Z_0-9]+)"', source))
    assert read - {"DJANGO_SETTINGS_MODULE", "DEBUG"} <= names, sorted(read - names)
    # one per line as NAME=example-value, each with a comment line of its own above it
    lines = (ROOT / ".env.example").read_text().splitlines()
    for i, line in enumerate(lines):
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            assert re.fullmatch(r"[A-Z][A-Z_0-9]*", name) and value, line
            assert i > 0 and lines[i - 1].startswith("#"), f"{name} has no comment of its own above it"


def test_embedded_default_needs_no_services() -> None:
    code = (
        "import django, json; django.setup(); from django.conf import settings as s; "
        "print(json.dumps([s.DATABASES['default']['ENGINE'], s.CELERY_TASK_ALWAYS_EAGER, "
        "s.STORAGES['default']['BACKEND'], s.CACHES['default']['BACKEND'], s.DEBUG, "
        "s.DATABASES['default']['OPTIONS']]))"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "STORAGE_S3_BUCKET", "DEBUG")}
    env["DJANGO_SETTINGS_MODULE"] = "config.settings.local"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    engine, eager, storage, cache, debug, options = json.loads(out.stdout)
    assert engine == "django.db.backends.sqlite3" and eager is True
    assert storage.endswith("FileSystemStorage") and "locmem" in cache
    assert debug is False  # the debug page only when asked for (DEBUG=1)
    assert options["transaction_mode"] == "IMMEDIATE" and options["timeout"] >= 5
    assert "journal_mode=WAL" in options["init_command"]


def test_seed_demo_prints_the_documented_json_and_is_idempotent(db: object) -> None:
    out = StringIO()
    call_command("seed_demo", "--json", stdout=out)
    first = json.loads(out.getvalue())
    out = StringIO()
    call_command("seed_demo", "--json", stdout=out)
    second = json.loads(out.getvalue())
    assert first == second and len(first["clinics"]) == 2
    from clinics.models import Clinic, User

    assert Clinic.objects.count() == 2 and User.objects.count() == 6
    for clinic in first["clinics"]:
        assert set(clinic) >= {"id", "name", "api_key", "users"}
        assert set(clinic["users"]) == {"staff", "dentist", "clinic_admin"}
        for creds in clinic["users"].values():
            assert set(creds) == {"email", "password", "totp_secret"}
            body = {"email": creds["email"], "password": creds["password"]}
            if creds["totp_secret"] is not None:
                # Dentists and clinic admins are enrolled: the printed secret gives working codes.
                denied = Client().post("/api/v1/auth/token/", body, content_type="application/json")
                assert denied.status_code == 401 and denied.json()["error"]["code"] == "mfa_required"
                body["otp"] = pyotp.TOTP(creds["totp_secret"]).now()
            login = Client().post("/api/v1/auth/token/", body, content_type="application/json")
            assert login.status_code == 200 and login.json()["clinic"] == clinic["id"]
        roles_with_mfa = {role for role, creds in clinic["users"].items() if creds["totp_secret"]}
        assert roles_with_mfa == {"dentist", "clinic_admin"}
        api = Client(HTTP_AUTHORIZATION=f"Bearer {clinic['api_key']}")
        assert api.get("/api/v1/patients/").status_code == 200


def test_seed_demo_refuses_production_settings() -> None:
    result = _manage("seed_demo", "--json", env=PROD_ENV)
    assert result.returncode != 0 and "refuses to run with production settings" in result.stderr


def test_schema_is_openapi_3_and_covers_the_api(db: object) -> None:
    response = Client().get("/api/v1/schema/")  # JSON by default, like the rest of the API
    assert response.status_code == 200 and response["Content-Type"].startswith("application/vnd.oai.openapi+json")
    yaml_doc = Client().get("/api/v1/schema/", HTTP_ACCEPT="application/yaml")
    assert yaml_doc["Content-Type"].startswith("application/yaml") and yaml_doc.content.startswith(b"openapi: 3.")
    schema = json.loads(response.content)
    assert schema["openapi"].startswith("3.")
    for path in (
        "/api/v1/patients/",
        "/api/v1/patients/{id}/",
        "/api/v1/auth/token/",
        "/api/v1/audit-events/",
        "/api/v1/audit-events/export",
    ):
        assert path in schema["paths"], path


def test_schema_generation_has_no_warnings() -> None:
    result = _manage(
        "spectacular",
        "--validate",
        "--fail-on-warn",
        "--file",
        os.devnull,
        env={"DJANGO_SETTINGS_MODULE": "config.settings.test"},
    )
    assert result.returncode == 0, result.stderr


def test_malformed_master_keys_fail_the_start_up_checks() -> None:
    result = _manage("check", env={**PROD_ENV, "MASTER_KEYS": "k2026:not-base64!"})
    assert result.returncode != 0 and "patients.E001" in result.stderr


@pytest.mark.django_db(transaction=True)  # the analyses run when the sample uploads commit
def test_seed_demo_samples_give_analysed_partly_reviewed_visits(random_artifact: object) -> None:  # noqa: F811
    from analysis.models import Analysis, Finding
    from analysis.registry import model_register
    from patients.models import Patient

    model_register(artifact_dir=random_artifact)  # a photo model that proposes every condition
    call_command("seed_demo", "--samples", "--json", stdout=StringIO())
    out = StringIO()
    call_command("seed_demo", "--samples", "--json", stdout=out)  # idempotent
    assert Patient.unscoped.count() == 2
    from django.conf import settings

    if not settings.CELERY_TASK_ALWAYS_EAGER:  # with a broker the analyses wait for a worker
        assert Analysis.unscoped.filter(status="queued", image__modality="photo").count() == 4
        return
    assert Analysis.unscoped.filter(status="done", image__modality="photo").count() == 4  # four photos
    statuses = set(Finding.unscoped.values_list("status", flat=True))
    assert {"confirmed", "rejected", "pending"} <= statuses  # partly reviewed
    assert json.loads(out.getvalue())["clinics"][0]["sample_patients"] == []


def test_every_dependency_is_pinned() -> None:
    import tomllib

    project = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements += extra
    loose = [r for r in requirements if "==" not in r]
    assert not loose, f"unpinned requirements: {loose}"
