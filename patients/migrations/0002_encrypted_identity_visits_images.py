"""Patient identity moves into an encrypted blob; visits, images and data keys arrive.

The plaintext identity columns are dropped. This project had no deployed data when the change was
made (demo databases only): recreate a demo database with ``make run`` after upgrading.
"""

from django.db import migrations


def refuse_existing_patients(apps, schema_editor):
    Patient = apps.get_model("patients", "Patient")
    if Patient._base_manager.exists():
        raise RuntimeError(
            "This migration drops plaintext patient identity columns; existing patients must be "
            "exported first. Recreate demo databases (rm var/db.sqlite3; make run)."
        )


class Migration(migrations.Migration):
    dependencies = [("patients", "0001_initial")]
    operations = [migrations.RunPython(refuse_existing_patients, migrations.RunPython.noop)]
