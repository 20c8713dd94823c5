"""``DicomInstance.held_bytes``: the size of an inbox file, counted in the clinic's storage quota
(``patients.services.quota_check``). Files already held are measured once here in the storage."""

from __future__ import annotations

from django.db import migrations, models

from clinics.rls import rls_bypass


def measure_held_files(apps, schema_editor) -> None:  # noqa: ANN001
    from patients.storage import blob_size

    DicomInstance = apps.get_model("dicom", "DicomInstance")
    with rls_bypass():  # every clinic's rows
        for instance in DicomInstance._base_manager.exclude(held_key="").only("pk", "held_key"):
            size = blob_size(instance.held_key)  # 0 for a missing file: it counts as nothing, as before
            DicomInstance._base_manager.filter(pk=instance.pk).update(held_bytes=size)


class Migration(migrations.Migration):
    dependencies = [
        ("dicom", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="dicominstance",
            name="held_bytes",
            field=models.PositiveBigIntegerField(default=0, editable=False),
        ),
        migrations.RunPython(measure_held_files, migrations.RunPython.noop),
    ]
