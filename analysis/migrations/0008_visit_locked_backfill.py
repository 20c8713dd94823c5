"""``patients.Visit.locked`` (added by ``patients`` 0007) is written by this app from now on: signing a report
sets it, opening an amendment clears it, signing the amendment sets it again (``analysis.reports``).

Visits signed before are backfilled here with the rule ``visit_locked`` used to compute from this app's rows:
locked when a report version is signed and no amendment is open (one without the report that closes it).
The rule lives in this app, so the backfill does too: ``patients`` knows nothing of reports.
"""

from __future__ import annotations

from django.db import migrations

from clinics.rls import rls_bypass


def lock_signed_visits(apps, schema_editor) -> None:  # noqa: ANN001
    Visit = apps.get_model("patients", "Visit")
    Report = apps.get_model("analysis", "Report")
    Amendment = apps.get_model("analysis", "Amendment")
    with rls_bypass():  # every clinic's rows
        signed = Report._base_manager.values("visit_id")
        amending = Amendment._base_manager.filter(report__isnull=True).values("visit_id")
        Visit._base_manager.filter(pk__in=signed).exclude(pk__in=amending).update(locked=True)


class Migration(migrations.Migration):
    dependencies = [
        ("analysis", "0007_webhook_secret_encrypted"),
        ("patients", "0007_visit_locked"),
    ]

    operations = [migrations.RunPython(lock_signed_visits, migrations.RunPython.noop)]
