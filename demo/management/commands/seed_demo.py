"""Create (idempotently) two demo clinics, one user per role and one API key each, and print them.

Credentials are derived from SECRET_KEY (HMAC), so running the command again prints the same
working passwords and keys without storing anything in clear. Refuses to run in production.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from clinics import context, mfa, services
from clinics.models import ApiKey, Clinic, Membership, Role, User
from clinics.permissions import API_KEY_DEFAULT_SCOPES
from clinics.tenancy import clinic_scope
from demo.samples import seed_samples

DEMO_CLINICS = [
    ("demo-dental", "Demo Dental Clinic"),
    ("second-smile", "Second Smile Clinic"),
]
ROLES = [Role.STAFF, Role.DENTIST, Role.CLINIC_ADMIN]


def _derive(label: str, length: int) -> str:
    digest = hmac.new(settings.SECRET_KEY.encode(), f"seed_demo:{label}".encode(), hashlib.sha256).digest()
    return base64.b32encode(digest).decode().lower().rstrip("=")[:length]


def _totp_secret(email: str) -> str:
    digest = hmac.new(settings.SECRET_KEY.encode(), f"seed_demo:totp:{email}".encode(), hashlib.sha256).digest()
    return base64.b32encode(digest[:20]).decode()


class Command(BaseCommand):
    help = "Create two demo clinics with one user per role and an API key each (demo data only)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--json", action="store_true", help="Print the credentials as one JSON object.")
        parser.add_argument(
            "--samples",
            action="store_true",
            help="Also create sample patients with analysed, partly reviewed visits in the first clinic.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not getattr(settings, "DEMO_DATA_ALLOWED", False):
            raise CommandError("seed_demo refuses to run with production settings: demo data only.")
        context.actor_var.set(context.Actor(system="seed_demo"))
        result = {"clinics": [self._seed_clinic(slug, name) for slug, name in DEMO_CLINICS]}
        if options["samples"]:
            first = result["clinics"][0]
            dentist = User.objects.get(email=first["users"]["dentist"]["email"])
            with clinic_scope(first["id"]):
                context.actor_var.set(context.Actor(user=dentist))
                first["sample_patients"] = seed_samples(dentist)
                context.actor_var.set(context.Actor(system="seed_demo"))
        if options["json"]:
            self.stdout.write(json.dumps(result))
            return
        for clinic in result["clinics"]:
            self.stdout.write(f"{clinic['name']} ({clinic['id']})  API key: {clinic['api_key']}")
            for role, creds in clinic["users"].items():
                line = f"  {role:<13} {creds['email']:<36} {creds['password']}"
                if creds["totp_secret"]:
                    line += f"  TOTP secret: {creds['totp_secret']}"
                self.stdout.write(line)

    @transaction.atomic
    def _seed_clinic(self, slug: str, name: str) -> dict[str, Any]:
        clinic = Clinic.objects.filter(slug=slug).first() or services.clinic_create(name=name, slug=slug)
        users: dict[str, dict[str, Any]] = {}
        with clinic_scope(clinic.id):
            for role in ROLES:
                email = f"{role.value.replace('_', '-')}@{slug}.example"
                password = "Demo-" + _derive(f"password:{email}", 16)
                user = User.objects.filter(email=email).first()
                membership = Membership.objects.filter(user=user).first() if user else None
                if membership is None:
                    services.member_add(email=email, role=role, password=password, full_name=f"Demo {role.label}")
                else:
                    if membership.role != role or not membership.is_active:
                        services.member_update(membership=membership, role=role, is_active=True)
                    if not user.check_password(password) or not user.is_active:
                        user.set_password(password)
                        user.is_active = True
                        user.save(update_fields=["password", "is_active"])
                totp_secret = None
                if role in mfa.MFA_REQUIRED_ROLES:
                    user = User.objects.get(email=email)
                    totp_secret = _totp_secret(email)
                    mfa.demo_enrol(user, totp_secret)
                users[role.value] = {"email": email, "password": password, "totp_secret": totp_secret}
            secret = f"dsk_{_derive(f'key-prefix:{slug}', 12)}_{_derive(f'key:{slug}', 43)}"
            prefix = secret.split("_")[1]
            key = ApiKey.objects.filter(prefix=prefix).first()
            if key is None:
                services.api_key_create(name="Demo integration", scopes=API_KEY_DEFAULT_SCOPES, secret=secret)
            elif key.revoked_at is not None:
                ApiKey.objects.filter(pk=key.pk).update(revoked_at=None)
        return {"id": str(clinic.id), "name": clinic.name, "api_key": secret, "users": users}
