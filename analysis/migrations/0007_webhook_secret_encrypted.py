"""Webhook signing secrets are kept encrypted with the clinic's data key, and a revoked endpoint records when it
was revoked.

Endpoints written before (their secret in clear in ``secret``) are encrypted here, each inside its own
clinic's scope (its data key; PostgreSQL row-level security), and their plaintext column is emptied.

The sealing steps are a frozen copy, as they were when this migration was written, of
``analysis.webhooks.secret_seal`` (AES-256-GCM: ``0x01 || 96-bit nonce || ciphertext+tag``, associated data
``webhook-secret:<endpoint id>:<clinic id>``) and of ``patients.keys.clinic_key`` (the clinic's data key, wrapped by
the configured master-key provider with associated data ``datakey:<id>:<clinic id>:``), written against the
historical models: a migration must not import live application code, which may change after it. Only the
master-key provider (``core.key_providers``: the deployment's key material, a stable wrap/unwrap interface) and
the row-level security context managers are imported.
"""

from __future__ import annotations

import os
import uuid

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.db import migrations, models
from django.utils import timezone

from clinics.rls import rls_bypass
from clinics.tenancy import clinic_scope
from core.key_providers import key_provider

_FORMAT_V1 = b"\x01"
_NONCE_BYTES = 12


def _datakey_aad(key_id: object, clinic_id: object, patient_id: object = None) -> bytes:
    return f"datakey:{key_id}:{clinic_id}:{patient_id or ''}".encode()


def _clinic_data_key(DataKey, clinic_id: object) -> bytes:  # noqa: ANN001, N803
    """The clinic's data key (the row with no patient), created as ``patients.keys`` did if missing."""
    provider = key_provider()
    existing = DataKey._base_manager.filter(clinic_id=clinic_id, patient__isnull=True).first()
    if existing is not None:
        aad = _datakey_aad(existing.id, existing.clinic_id, None)
        return provider.unwrap(existing.master_key_id, bytes(existing.wrapped), aad)
    raw = AESGCM.generate_key(bit_length=256)
    key_id, master_key_id = uuid.uuid4(), provider.current_key_id()
    DataKey._base_manager.create(
        id=key_id,
        clinic_id=clinic_id,
        patient=None,
        master_key_id=master_key_id,
        wrapped=provider.wrap(master_key_id, raw, _datakey_aad(key_id, clinic_id, None)),
        created_at=timezone.now(),
    )
    return raw


def _seal(data_key: bytes, *, endpoint_id: object, clinic_id: object, secret: str) -> bytes:
    nonce = os.urandom(_NONCE_BYTES)
    aad = f"webhook-secret:{endpoint_id}:{clinic_id}".encode()
    return _FORMAT_V1 + nonce + AESGCM(data_key).encrypt(nonce, secret.encode(), aad)


def encrypt_plaintext_secrets(apps, schema_editor) -> None:  # noqa: ANN001
    Endpoint = apps.get_model("analysis", "WebhookEndpoint")
    DataKey = apps.get_model("patients", "DataKey")
    with rls_bypass():  # every clinic's rows
        legacy = list(Endpoint._base_manager.exclude(secret="").values_list("id", "clinic_id", "secret"))
    for endpoint_id, clinic_id, secret in legacy:
        with clinic_scope(clinic_id):
            sealed = _seal(
                _clinic_data_key(DataKey, clinic_id), endpoint_id=endpoint_id, clinic_id=clinic_id, secret=secret
            )
            Endpoint._base_manager.filter(pk=endpoint_id).update(secret_encrypted=sealed, secret="")


class Migration(migrations.Migration):
    dependencies = [("analysis", "0006_condition_codes"), ("patients", "0003_encrypted_identity_schema")]

    operations = [
        migrations.AddField(
            model_name="webhookendpoint",
            name="revoked_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="webhookendpoint",
            name="secret_encrypted",
            field=models.BinaryField(default=b""),
        ),
        migrations.AlterField(
            model_name="webhookendpoint",
            name="secret",
            field=models.CharField(blank=True, max_length=100),
        ),
        migrations.RunPython(encrypt_plaintext_secrets, migrations.RunPython.noop),
    ]
