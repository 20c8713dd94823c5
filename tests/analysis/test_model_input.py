"""Model-input copies made at upload, and the worker's ONNX Runtime path: faster, with the same results."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from django.urls import reverse
from PIL import Image as PILImage

from analysis.ml import model_input
from analysis.ml.detection import preprocess_xray
from analysis.ml.transforms import eval_resize_pil
from analysis.models import Analysis, Finding
from analysis.registry import _load, model_register, predictor
from analysis.services import analysis_execute, analysis_request
from clinics.models import AuditEvent
from clinics.tenancy import clinic_scope
from patients.models import Image
from patients.services import image_ingest, patient_erase
from tests.ml.conftest import random_artifact  # noqa: F401 - fixture

from ..conftest import World, token_client


@pytest.fixture
def photo_model(random_artifact: Path, db: object):  # noqa: F811, ANN201
    return model_register(artifact_dir=random_artifact)


def _noisy_png(seed: int, size: tuple[int, int] = (200, 150)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    PILImage.fromarray(pixels, "RGB").save(buffer, "PNG")
    return buffer.getvalue()


def _upload(world: World, data: bytes) -> dict:
    f = io.BytesIO(data)
    f.name = "front.png"
    response = token_client(world, "staff").post(
        reverse("api:patient-image-list", kwargs={"pk": world.patient.pk}),
        {"file": f, "modality": "photo"},
        format="multipart",
    )
    assert response.status_code == 201, response.content
    return response.json()


def _variants_read(image_id: object) -> list[str]:
    return [
        e.details["variant"]
        for e in AuditEvent.unscoped.filter(action="image.view", object_id=str(image_id)).order_by("id")
    ]


def _blob_path(settings, key: str) -> Path:  # noqa: ANN001
    return Path(settings.STORAGES["images"]["OPTIONS"]["location"]) / key


def test_upload_keeps_a_copy_at_the_model_input_and_the_worker_gets_the_same_results_from_it(
    alice: World, photo_model, settings
) -> None:  # noqa: ANN001
    data = _noisy_png(1)
    with_copy = _upload(alice, data)["id"]
    with clinic_scope(alice.clinic.id):
        copied = Image.objects.get(pk=with_copy)
        assert copied.model_input_spec == "photo-rgb8-stretch-bilinear-v1-64"
        assert copied.model_input_key and _blob_path(settings, copied.model_input_key).is_file()
        assert copied.blob_keys["model_input"] == copied.model_input_key  # erased with the image
        # the same upload made without a copy (as before this change, or with no model active)
        plain = image_ingest(
            patient=alice.patient, stream=io.BytesIO(data), filename="f.png", size=None, modality="photo"
        )
        assert plain.model_input_key == "" and plain.model_input_spec == ""
        analysis_request(image=plain)
        first = Analysis.objects.get(image_id=with_copy)
        assert analysis_execute(analysis_id=first.pk) == "done:2/2"  # one batch: one copy, one original
        scores = {a.image_id: a.scores for a in Analysis.objects.filter(image_id__in=[copied.pk, plain.pk])}
        boxes = {
            image_id: sorted((f.condition, f.box) for f in Finding.objects.filter(image_id=image_id))
            for image_id in (copied.pk, plain.pk)
        }
    assert scores[copied.pk] == scores[plain.pk]  # bit-identical: the copy is the model's own resize, lossless
    assert boxes[copied.pk] == boxes[plain.pk] and boxes[copied.pk]
    assert _variants_read(copied.pk) == ["model_input"]  # the worker never decoded the full-size original
    assert _variants_read(plain.pk) == ["original"]


def test_a_copy_made_for_another_model_is_not_used(alice: World, photo_model) -> None:  # noqa: ANN001
    image_id = _upload(alice, _noisy_png(2))["id"]
    with clinic_scope(alice.clinic.id):
        # e.g. uploaded while a model with another input size was active
        Image.objects.filter(pk=image_id).update(model_input_spec="photo-rgb8-stretch-bilinear-v1-224")
        analysis = Analysis.objects.get(image_id=image_id)
        assert analysis_execute(analysis_id=analysis.pk) == "done:1/1"
    assert _variants_read(image_id) == ["original"]


def test_the_copy_is_not_served_to_clients(alice: World, photo_model) -> None:  # noqa: ANN001
    image_id = _upload(alice, _noisy_png(3))["id"]
    url = reverse("api:image-file", kwargs={"pk": image_id})
    response = token_client(alice, "staff").get(url, {"variant": "model_input"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_variant"


def test_erasure_removes_the_copy(alice: World, photo_model, settings, django_capture_on_commit_callbacks) -> None:  # noqa: ANN001
    image_id = _upload(alice, _noisy_png(4))["id"]
    with clinic_scope(alice.clinic.id):
        key = Image.objects.get(pk=image_id).model_input_key
        assert _blob_path(settings, key).is_file()
        with django_capture_on_commit_callbacks(execute=True):  # blobs go once the erasure has committed
            patient_erase(patient=alice.patient)
    assert not _blob_path(settings, key).exists()


def test_without_a_model_for_the_modality_no_copy_is_made(alice: World, monkeypatch) -> None:  # noqa: ANN001
    import analysis.services as services
    from analysis.registry import ModelNotAvailable

    def none(modality: str) -> None:
        raise ModelNotAvailable(f"no {modality} model is registered or shipped")

    monkeypatch.setattr(services, "model_version_active", none)
    image_id = _upload(alice, _noisy_png(5))["id"]
    with clinic_scope(alice.clinic.id):
        image = Image.objects.get(pk=image_id)
    assert image.model_input_key == "" and image.model_input_spec == ""


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA"])
def test_photo_copy_gives_the_model_the_pixels_of_the_original(mode: str) -> None:
    original = PILImage.open(io.BytesIO(_noisy_png(6, (301, 177)))).convert(mode)
    meta = {"modality": "photo", "input_size": 96}
    spec, data = model_input.make(original, meta)
    assert spec == "photo-rgb8-stretch-bilinear-v1-96"
    copy = model_input.decode(data)
    assert np.array_equal(np.asarray(eval_resize_pil(copy, 96)), np.asarray(eval_resize_pil(original, 96)))


@pytest.mark.parametrize("bits", [8, 16])
def test_xray_copy_gives_the_detector_the_pixels_of_the_original(bits: int) -> None:
    rng = np.random.default_rng(7)
    if bits == 16:
        raw = rng.integers(0, 4096, (140, 290), dtype=np.uint16)
        original = PILImage.frombytes("I;16", (290, 140), raw.tobytes())
    else:
        original = PILImage.fromarray(rng.integers(0, 256, (140, 290), dtype=np.uint8), "L")
    meta = {"modality": "xray", "input_size": 128, "resize": "stretch"}
    spec, data = model_input.make(original, meta)
    assert spec == "xray-grey8-p0.5-99.5-stretch-bilinear-v1-128"
    copy = model_input.decode(data)
    assert copy.mode == "L" and copy.size == (128, 128)
    assert np.array_equal(preprocess_xray(copy, 128).numpy(), preprocess_xray(original, 128).numpy())


def test_models_with_other_preprocessing_take_no_copy() -> None:
    assert model_input.spec({"modality": "xray", "input_size": 640, "resize": "letterbox"}) == ""
    assert model_input.spec({"modality": "photo"}) == ""


def test_the_worker_runs_the_photo_model_on_onnx_runtime_unless_turned_off(photo_model, settings) -> None:  # noqa: ANN001
    pytest.importorskip("onnxruntime")
    from analysis.ml.fast import OnnxPhotoPredictor
    from analysis.ml.infer import Predictor
    from analysis.registry import artifact_path

    path = artifact_path(photo_model)
    _load.cache_clear()
    try:
        settings.ANALYSIS_ONNX_RUNTIME = True
        assert isinstance(predictor(path).loaded, OnnxPhotoPredictor)
        settings.ANALYSIS_ONNX_RUNTIME = False
        assert type(predictor(path).loaded) is Predictor
    finally:
        _load.cache_clear()


def test_a_damaged_copy_is_audited_and_the_original_used(alice: World, photo_model, settings) -> None:  # noqa: ANN001
    image_id = _upload(alice, _noisy_png(8))["id"]
    with clinic_scope(alice.clinic.id):
        image = Image.objects.get(pk=image_id)
        path = _blob_path(settings, image.model_input_key)
        blob = bytearray(path.read_bytes())
        blob[-1] ^= 0xFF  # the AES-GCM tag no longer matches
        path.write_bytes(bytes(blob))
        analysis = Analysis.objects.get(image_id=image_id)
        assert analysis_execute(analysis_id=analysis.pk) == "done:1/1"
    failed = AuditEvent.unscoped.get(action="image.integrity_failed", object_id=str(image_id))
    assert failed.details["variant"] == "model_input"
    assert _variants_read(image_id) == ["original"]


def test_refresh_model_inputs_remakes_stale_copies_once_and_reports_unreadable_originals(
    alice: World, photo_model, settings, django_capture_on_commit_callbacks
) -> None:  # noqa: ANN001
    """After a model change, older images' copies (made for another model, or none) are remade for the
    active model: the same bytes an upload would store now, the old blob removed, audited per clinic; a
    second run finds nothing to do; an image whose original fails its check is reported and left as it was."""
    from django.core.management import call_command
    from django.core.management.base import CommandError

    from patients.services import image_read, image_read_model_input
    from patients.storage import blob_size

    current = _upload(alice, _noisy_png(11))["id"]
    stale_id, broken_id = (_upload(alice, _noisy_png(seed))["id"] for seed in (12, 14))
    none_id = alice.image.pk  # uploaded before any model was registered: no copy at all
    active_spec = "photo-rgb8-stretch-bilinear-v1-64"
    with clinic_scope(alice.clinic.id):
        fresh = Image.objects.get(pk=current)
        stale = Image.objects.get(pk=stale_id)
        old_key = stale.model_input_key
        made_at_upload = image_read_model_input(image=stale, spec=active_spec)
        assert Image.objects.get(pk=none_id).model_input_key == ""
        # an image whose copy was made for an earlier model (another input size)
        Image.objects.filter(pk=stale_id).update(model_input_spec="photo-rgb8-stretch-bilinear-v1-32")
        Image.objects.filter(pk=broken_id).update(model_input_spec="photo-rgb8-stretch-bilinear-v1-32")
        broken = Image.objects.get(pk=broken_id)
    _blob_path(settings, broken.original_key).write_bytes(b"not what was stored")
    untouched_key = fresh.model_input_key

    out = io.StringIO()
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(CommandError, match="1 image"):
        call_command("refresh_model_inputs", "--modality", "photo", stdout=out)
    assert "Refreshed 2 model-input copies; 1 original(s) unreadable" in out.getvalue()
    with clinic_scope(alice.clinic.id):
        for pk in (stale_id, none_id):
            image = Image.objects.get(pk=pk)
            assert image.model_input_spec == active_spec
            assert (
                image_read_model_input(image=image, spec=active_spec)
                == model_input.make(
                    PILImage.open(io.BytesIO(image_read(image=image))), {"modality": "photo", "input_size": 64}
                )[1]
            )
        # byte for byte what the upload itself stored for this model
        assert image_read_model_input(image=Image.objects.get(pk=stale_id), spec=active_spec) == made_at_upload
        assert Image.objects.get(pk=current).model_input_key == untouched_key  # already right: not rewritten
        for pk in (stale_id, none_id, current):  # the quota's count follows the swapped copies
            image = Image.objects.get(pk=pk)
            assert image.stored_bytes == sum(blob_size(k) for k in image.blob_keys.values())
        assert Image.objects.get(pk=broken_id).model_input_spec == "photo-rgb8-stretch-bilinear-v1-32"
        event = AuditEvent.objects.get(action="image.model_input.refresh")
    assert not _blob_path(settings, old_key).exists()  # the replaced copy is gone
    assert event.details == {
        "modality": "photo",
        "spec": active_spec,
        "refreshed": 2,
        "failed": 1,
        "changed_meanwhile": 0,
    }
    assert AuditEvent.unscoped.filter(action="image.integrity_failed", object_id=str(broken_id)).exists()

    with clinic_scope(alice.clinic.id):  # repaired by hand (here: the record says it needs no copy)
        Image.objects.filter(pk=broken_id).update(model_input_spec=active_spec)
    out = io.StringIO()
    call_command("refresh_model_inputs", stdout=out)
    assert "Refreshed 0 model-input copies; 0 original(s) unreadable" in out.getvalue()
