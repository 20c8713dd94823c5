"""Webhook signing secrets are kept encrypted with the clinic's data key (``analysis.webhooks.secret_seal``),
and a revoked endpoint records when it was revoked.

Endpoints written before (their secret in clear in ``secret``) are encrypted here, each inside its own
clinic's scope (its data key; PostgreSQL row-level security), and their plaintext column is emptied.
"""

from __future__ import annotations

from django.db import migrations, models

from clinics.rls import rls_bypass
from clinics.tenancy import clinic_scope


def encrypt_plaintext_secrets(apps, schema_editor) -> None:  # noqa: ANN001
    from analysis.webhooks import secret_seal

    Endpoint = apps.get_model("analysis", "WebhookEndpoint")
    with rls_bypass():  # every clinic's rows
        legacy = list(Endpoint._base_manager.exclude(secret="").values_list("id", "clinic_id", "secret"))
    for endpoint_id, clinic_id, secret in legacy:
        with clinic_scope(clinic_id):
            sealed = secret_seal(endpoint_id=endpoint_id, clinic_id=clinic_id, secret=secret)
            Endpoint._base_manager.filter(pk=endpoint_id).update(secret_encrypted=sealed, secret="")


class Migration(migrations.Migration):
    dependencies = [("analysis", "0006_condition_codes")]

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
