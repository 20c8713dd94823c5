"""Uploads are answered without their preview and thumbnail: a worker makes them after commit
(``patients.derive_image``), and a read that comes first makes them itself. Either way exactly one pair is kept."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from django.urls import reverse
from PIL import Image as PILImage

from clinics.models import AuditEvent
from clinics.services import ServiceError
from clinics.tenancy import clinic_scope
from patients.intake import display_variants
from patients.models import Image
from patients.selectors import image_get
from patients.services import image_derive, image_ingest, image_read, patient_erase
from patients.storage import blob_size
from patients.tasks import derive_image

from ..conftest import World, build_clinic, requires_postgres, token_client
from ..workers import start_worker, stop_worker, wait_for
from .test_images_api import stored_files, upload

pytestmark = pytest.mark.django_db


def _photo(seed: int = 0, size: tuple[int, int] = (640, 480)) -> bytes:
    rng = np.random.default_rng(seed)
    out = io.BytesIO()
    PILImage.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(out, "PNG")
    return out.getvalue()


def _upload(world: World, data: bytes, name: str = "scan.png", modality: str = "photo") -> Image:
    response = upload(token_client(world, "staff"), world, name, data, modality)
    assert response.status_code == 201, response.content
    with clinic_scope(world.clinic.id):
        return image_get(response.json()["id"])


def test_the_upload_stores_the_original_and_queues_the_preview_and_thumbnail(
    alice: World, _image_storage: Path, eager: None, django_capture_on_commit_callbacks
) -> None:  # noqa: ANN001
    before = stored_files(_image_storage)
    with django_capture_on_commit_callbacks() as callbacks:
        image = _upload(alice, _photo())
    # answered with the original and the model-input copy stored; no preview or thumbnail yet
    assert image.preview_key == image.thumbnail_key == ""
    assert set(image.blob_keys) == {"original", "model_input"}
    assert len(stored_files(_image_storage)) == len(before) + 2
    queued = [c for c in callbacks if getattr(getattr(c, "func", None), "__name__", "") == "_derive_later"]
    assert len(queued) == 1 and queued[0].args == (str(image.pk), str(alice.clinic.id))  # ids only

    for callback in queued:  # after commit (eager here: the task runs in this process, as without a broker)
        callback()
    with clinic_scope(alice.clinic.id):
        image = image_get(image.pk)
        assert set(image.blob_keys) == {"original", "model_input", "preview", "thumbnail"}
        assert image.stored_bytes == sum(blob_size(k) for k in image.blob_keys.values())
        original = image_read(image=image)
        preview, thumbnail = image_read(image=image, variant="preview"), image_read(image=image, variant="thumbnail")
    assert len(stored_files(_image_storage)) == len(before) + 4
    assert (preview, thumbnail) == display_variants(original, None)
    assert PILImage.open(io.BytesIO(preview)).size == (640, 480)
    assert PILImage.open(io.BytesIO(thumbnail)).size == (256, 192)


def test_a_read_before_the_worker_makes_the_variants_and_the_late_task_does_nothing(
    alice: World, _image_storage: Path
) -> None:
    image = _upload(alice, _photo(1, (1600, 900)))
    assert not image.preview_key
    client = token_client(alice, "staff")
    served = client.get(reverse("api:image-file", kwargs={"pk": image.pk}) + "?variant=thumbnail")
    assert served.status_code == 200, served.content
    assert PILImage.open(io.BytesIO(served.content)).size == (256, 144)
    with clinic_scope(alice.clinic.id):
        made = image_get(image.pk)
    assert made.preview_key and made.thumbnail_key
    files = stored_files(_image_storage)
    assert derive_image(str(image.pk), str(alice.clinic.id)) == "nothing to do"
    assert stored_files(_image_storage) == files
    preview = client.get(reverse("api:image-file", kwargs={"pk": image.pk}) + "?variant=preview")
    assert PILImage.open(io.BytesIO(preview.content)).size == (1024, 576)


def test_two_makers_at_once_keep_one_pair_and_the_loser_removes_its_blobs(alice: World, _image_storage: Path) -> None:
    image = _upload(alice, _photo(2))
    with clinic_scope(alice.clinic.id):
        stale = image_get(image.pk)  # read before the other maker stored its pair
        assert image_derive(image=image_get(image.pk)) is True
        files = stored_files(_image_storage)
        assert image_derive(image=stale) is False  # its compare-and-swap on empty keys fails
        assert stored_files(_image_storage) == files, "the loser's blobs were left behind"
        fresh = image_get(image.pk)
        assert (stale.preview_key, stale.thumbnail_key) == (fresh.preview_key, fresh.thumbnail_key)
        assert fresh.stored_bytes == sum(blob_size(k) for k in fresh.blob_keys.values())


def test_the_task_for_an_erased_patient_keeps_nothing(alice: World, _image_storage: Path) -> None:
    image = _upload(alice, _photo(3))
    with clinic_scope(alice.clinic.id):
        patient_erase(patient=image.patient)
    files = stored_files(_image_storage)
    assert derive_image(str(image.pk), str(alice.clinic.id)) == "gone"
    assert stored_files(_image_storage) == files


def test_a_16_bit_xray_preview_is_windowed_like_intake_windowed_it(alice: World) -> None:
    ramp = (np.linspace(1000, 3000, 300 * 200).reshape(200, 300)).astype(np.uint16)
    out = io.BytesIO()
    PILImage.fromarray(ramp).save(out, "PNG")
    image = _upload(alice, out.getvalue(), "xray.png", "xray")
    assert image.bit_depth == 16 and image.window_low is not None
    with clinic_scope(alice.clinic.id):
        preview = np.asarray(PILImage.open(io.BytesIO(image_read(image=image, variant="preview"))))
    assert preview.ndim == 2 and preview.min() < 10 and preview.max() > 245  # the window spans the range


@requires_postgres
@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs Redis (set REDIS_URL); CI runs it")
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_on_the_default_queue_makes_them_after_commit(_image_storage: Path) -> None:
    """With a broker the upload's commit sends ``patients.derive_image`` (ids only) to the ``default`` queue, and a
    real Celery worker there makes the pair; the web process never made it."""
    from config.celery import app

    world = build_clinic("derive-worker")
    app.control.purge()
    worker = start_worker("default")
    try:
        with clinic_scope(world.clinic.id):
            image = image_ingest(
                patient=world.patient, stream=io.BytesIO(_photo(4)), filename="w.png", size=None, modality="photo"
            )
            assert not image.preview_key  # committed without them (no transaction around this call)

        def made() -> Image | None:
            with clinic_scope(world.clinic.id):
                row = Image.objects.get(pk=image.pk)
            return row if row.preview_key and row.thumbnail_key else None

        row = wait_for(made, timeout=60, what="the worker to make the preview and thumbnail", worker=worker)
    finally:
        stop_worker(worker)
    with clinic_scope(world.clinic.id):
        assert row.stored_bytes == sum(blob_size(k) for k in row.blob_keys.values())
        preview = image_read(image=image_get(image.pk), variant="preview")
    assert PILImage.open(io.BytesIO(preview)).size == (640, 480)


def test_making_them_is_audited_and_a_damaged_original_is_an_integrity_failure(
    alice: World, _image_storage: Path
) -> None:
    image = _upload(alice, _photo(5))
    assert derive_image(str(image.pk), str(alice.clinic.id)) == "made"
    made = AuditEvent.unscoped.filter(action="image.derive", object_id=str(image.pk))
    assert made.count() == 1 and made.get().details == {"variants": ["preview", "thumbnail"]}

    damaged = _upload(alice, _photo(6))
    path = _image_storage / damaged.original_key
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    path.write_bytes(bytes(blob))
    files = stored_files(_image_storage)
    assert derive_image(str(damaged.pk), str(alice.clinic.id)) == "integrity_check_failed"
    assert stored_files(_image_storage) == files  # nothing made from it
    event = AuditEvent.unscoped.filter(action="image.integrity_failed", object_id=str(damaged.pk)).get()
    assert event.outcome == "failure" and event.details["variant"] == "original"
    with clinic_scope(alice.clinic.id):
        assert not image_get(damaged.pk).preview_key


def test_a_read_of_an_image_erased_meanwhile_is_not_found(alice: World, _image_storage: Path) -> None:
    image = _upload(alice, _photo(7))
    with clinic_scope(alice.clinic.id):
        stale = image_get(image.pk)  # a request that loaded the image just before the erasure
        patient_erase(patient=image_get(image.pk).patient)
        files = stored_files(_image_storage)
        with pytest.raises(ServiceError) as raised:
            image_read(image=stale, variant="preview")
    assert raised.value.status == 404
    assert stored_files(_image_storage) == files
    assert not AuditEvent.unscoped.filter(action="image.integrity_failed", object_id=str(image.pk)).exists()
