"""Image.stored_bytes: what an image's encrypted blobs occupy in storage, counted by the clinic quota.

Existing images are backfilled from the storage backend's own sizes (one size lookup per blob: a HEAD
request each on S3); a missing blob counts 0.
"""

from django.db import migrations, models


def backfill(apps, schema_editor):
    from clinics.rls import rls_bypass
    from patients.storage import blob_size

    Image = apps.get_model("patients", "Image")
    fields = ("original_key", "preview_key", "thumbnail_key", "model_input_key")
    with rls_bypass():
        for image in Image._base_manager.filter(stored_bytes=0).only("pk", *fields).iterator(chunk_size=500):
            total = sum(blob_size(getattr(image, f)) for f in fields if getattr(image, f))
            Image._base_manager.filter(pk=image.pk).update(stored_bytes=total)


class Migration(migrations.Migration):

    dependencies = [
        ('patients', '0005_image_model_input'),
    ]

    operations = [
        migrations.AddField(
            model_name='image',
            name='stored_bytes',
            field=models.PositiveBigIntegerField(default=0, editable=False),
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
