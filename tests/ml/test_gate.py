"""analysis.ml.gate (image gate) and the predictors' out-of-distribution score (analysis.ml.ood)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from analysis.ml import gate
from analysis.ml.data import datasets_root, load_rgb, read_manifest

GATE_ARTIFACT = Path(gate.GATE_DIR) / "photo-gate.npz"


def colour_blocks(w: int = 512, h: int = 384, seed: int = 0, cell: int = 32) -> np.ndarray:
    """A colourful, sharp picture: cells of random colours plus a little noise (float, 0..255)."""
    rng = np.random.default_rng(seed)
    cells = rng.uniform(40, 220, size=(h // cell + 1, w // cell + 1, 3))
    arr = np.kron(cells, np.ones((cell, cell, 1)))[:h, :w]
    return arr + rng.normal(0, 4, arr.shape)


def to_image(arr: np.ndarray) -> Image.Image:
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, -1)
    return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "RGB")


def radiograph_like(w: int = 640, h: int = 640, seed: int = 1) -> np.ndarray:
    """Greyscale structure (bright blobs on a dark gradient) with sharp edges (float HxW)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    arr = 40 + 60 * (yy / h)
    for _ in range(30):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(10, 50)
        arr = np.where((yy - cy) ** 2 + (xx - cx) ** 2 < r * r, rng.uniform(150, 250), arr)
    return arr + rng.normal(0, 3, arr.shape)


def model_free(img: Image.Image, modality: str = "photo") -> gate.GateResult:
    return gate.check_image(img, modality, use_embedding=False)


def test_a_sharp_colourful_picture_passes_the_model_free_checks() -> None:
    r = model_free(to_image(colour_blocks()))
    assert r.assessable and r.code is None and r.message is None and not r.unfamiliar
    d = r.as_dict()
    assert set(d) == {"assessable", "code", "message", "unfamiliar", "measures"}
    assert json.loads(json.dumps(d)) == d  # plain JSON
    assert {"colour", "sharpness", "lum_p99", "white_frac", "longest_side"} <= set(d["measures"])


def test_too_small() -> None:
    r = gate.check_image(to_image(colour_blocks(95, 70)), "photo")
    assert (r.assessable, r.code) == (False, "too_small")
    assert r.message == gate.MESSAGES["too_small"] and r.measures["longest_side"] == 95
    assert gate.check_image(to_image(colour_blocks(95, 70)), "xray").code == "too_small"
    assert model_free(to_image(colour_blocks(96, 70))).assessable


def test_wrong_modality_a_radiograph_sent_as_a_photo_also_tinted() -> None:
    grey = radiograph_like()
    for tint in ((1.0, 1.0, 1.0), (1.0, 0.93, 0.8), (0.85, 0.95, 1.0)):  # neutral, sepia-ish, bluish
        img = to_image(grey[..., None] * np.array(tint))
        r = gate.check_image(img, "photo")
        assert r.code == "wrong_modality", (tint, r)
        assert "radiograph" in r.message
        assert model_free(img, "xray").assessable, (tint, model_free(img, "xray"))
    # 8-bit greyscale mode and 16-bit X-rays as well
    assert gate.check_image(Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8), "L"), "photo").code == (
        "wrong_modality"
    )
    assert gate.check_image(Image.fromarray((np.clip(grey, 0, 255) * 200).astype(np.uint16)), "photo").code == (
        "wrong_modality"
    )


def test_wrong_modality_a_photo_sent_as_an_xray_also_dim() -> None:
    for factor in (1.0, 0.4):
        r = gate.check_image(to_image(colour_blocks() * factor), "xray")
        assert r.code == "wrong_modality" and r.message == gate.XRAY_MESSAGES["wrong_modality"]
    # a dim photo is still a photo (the colour measure is exposure-invariant)
    assert model_free(to_image(colour_blocks() * 0.4)).assessable


def test_too_dark_and_too_bright() -> None:
    base = colour_blocks()
    dark = model_free(to_image(base * 0.15))
    assert dark.code == "too_dark" and dark.message == gate.MESSAGES["too_dark"]
    bright = model_free(to_image(base * 4.0))
    assert bright.code == "too_bright"
    assert model_free(to_image(radiograph_like() * 0.15), "xray").code == "too_dark"
    # X-rays are legitimately bright: half the image at white still passes
    xr = radiograph_like()
    xr[:, : xr.shape[1] // 2] = 255
    assert model_free(to_image(xr), "xray").assessable


def test_blurred_motion_blur_is_caught_at_any_resolution() -> None:
    base = colour_blocks(512, 384)
    k = np.zeros((15, 15))
    np.fill_diagonal(k, 1 / 15)
    for kernel in (np.full((1, 15), 1 / 15), k):
        blurred = np.stack([ndimage.convolve(base[..., c], kernel, mode="reflect") for c in range(3)], -1)
        r = model_free(to_image(blurred))
        assert r.code == "blurred", r
        assert "blurred" in r.message
    # scale-aware: the same sharp picture at 4x the size still passes, the blurred one at 4x still fails
    big = to_image(base).resize((2048, 1536), Image.Resampling.NEAREST)
    assert model_free(big).assessable
    blurred_big = np.stack(
        [ndimage.convolve(np.asarray(big, np.float32)[..., c], np.full((1, 60), 1 / 60)) for c in range(3)], -1
    )
    assert model_free(to_image(blurred_big)).code == "blurred"


def test_model_free_checks_are_fast_on_a_large_photo() -> None:
    big = to_image(colour_blocks(4000, 3000, cell=250))
    model_free(big)
    t = time.perf_counter()
    for _ in range(3):
        model_free(big)
    assert (time.perf_counter() - t) / 3 < 1.0  # ~10-20 ms on an idle 2-core machine; loose for busy CI


def test_bad_modality_raises() -> None:
    with pytest.raises(ValueError):
        gate.check_image(to_image(colour_blocks()), "ct")


def test_messages_cover_every_code() -> None:
    assert set(gate.MESSAGES) == set(gate.CODES)
    assert gate.message("wrong_modality", "xray") != gate.message("wrong_modality", "photo")


@pytest.mark.skipif(not GATE_ARTIFACT.exists(), reason="no analysis/models/gate/photo-gate.npz")
def test_not_intraoral_a_portrait_and_a_cat_are_refused() -> None:
    import matplotlib

    pictures = [Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"]
    try:
        import skimage

        pictures.append(Path(skimage.__file__).parent / "data" / "chelsea.png")
    except ImportError:
        pass
    for p in pictures:
        r = gate.check_image(load_rgb(p), "photo")
        assert r.code == "not_intraoral", (p.name, r)
        assert r.measures["intraoral_distance"] > gate.embedder().threshold


@pytest.mark.data
@pytest.mark.skipif(not GATE_ARTIFACT.exists(), reason="no analysis/models/gate/photo-gate.npz")
def test_dataset_validation_photos_pass(photo_manifest) -> None:  # noqa: ANN001
    from analysis.ml.splits import train_val_test_split

    records = read_manifest(photo_manifest)
    _, val, _ = train_val_test_split(records)
    results = [gate.check_image(load_rgb(records[i].path), "photo") for i in val[:40]]
    assert sum(r.assessable for r in results) >= 38, [r.code for r in results if not r.assessable]
    assert all("intraoral_distance" in r.measures for r in results if r.assessable)


@pytest.mark.data
def test_dataset_xrays_pass_as_xrays_and_are_refused_as_photos() -> None:
    folder = datasets_root() / "dental-xrays" / "test" / "images"
    if not folder.exists():
        pytest.skip(f"shared data set not found at {folder}")
    for p in sorted(folder.glob("*.jpg"))[:10]:
        img = load_rgb(p)
        assert gate.check_image(img, "xray").assessable
        assert gate.check_image(img, "photo").code == "wrong_modality"


# --------------------------------------------------------------------------- the model's own OOD score


@pytest.fixture
def ood_artifact(random_artifact, tmp_path, make_image):  # noqa: ANN001
    """A copy of the random artefact with fitted OOD statistics and an "ood" section."""
    from analysis.ml.ood import ood_fit, write_ood_section

    art = tmp_path / "with-ood"
    shutil.copytree(random_artifact, art)
    train = [make_image(100 + i, (96, 72)) for i in range(40)]
    section = ood_fit(art, train)
    assert {"method", "soft_threshold", "hard_threshold", "fitted_on"} <= set(section)
    assert section["hard_threshold"] >= section["soft_threshold"] > 0
    write_ood_section(art, section)
    assert (art / "ood.npz").exists()
    return art


def test_predictor_adds_ood_only_when_the_artifact_has_it(random_artifact, ood_artifact, synthetic_images) -> None:  # noqa: ANN001
    from analysis.ml.infer import Predictor

    plain = Predictor(random_artifact, device="cpu").predict(synthetic_images)
    assert all(set(r) == {"scores", "findings"} for r in plain)
    with_ood = Predictor(ood_artifact, device="cpu").predict(synthetic_images)
    for a, b in zip(plain, with_ood, strict=True):
        assert isinstance(b["ood_score"], float) and isinstance(b["unfamiliar"], bool)
        assert b["scores"] == pytest.approx(a["scores"], abs=1e-5)  # same scores either way
        if "gate" not in b:
            assert [f["condition"] for f in a["findings"]] == [f["condition"] for f in b["findings"]]


def test_far_out_images_are_refused_as_out_of_distribution(ood_artifact, synthetic_images) -> None:  # noqa: ANN001
    from analysis.ml.infer import Predictor

    meta = json.loads((ood_artifact / "model.json").read_text())
    meta["ood"]["soft_threshold"], meta["ood"]["hard_threshold"] = 0.0, 1e-6  # everything is far out
    (ood_artifact / "model.json").write_text(json.dumps(meta))
    for r in Predictor(ood_artifact, device="cpu").predict(synthetic_images):
        assert r["unfamiliar"] is True and r["findings"] == []
        assert r["gate"]["assessable"] is False and r["gate"]["code"] == "out_of_distribution"
        assert r["gate"]["message"] == gate.MESSAGES["out_of_distribution"]
        assert r["gate"]["measures"]["ood_score"] == pytest.approx(r["ood_score"])


def test_onnx_path_agrees_on_the_ood_score(ood_artifact, synthetic_images, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    pytest.importorskip("onnxruntime")
    from analysis.ml import fast
    from analysis.ml.infer import Predictor

    monkeypatch.setenv("DENTALSCAN_ONNX_CACHE", str(tmp_path / "onnx"))
    torch_predictor = Predictor(ood_artifact, device="cpu")
    expected = torch_predictor.predict(synthetic_images, explain=True)
    got = fast.OnnxPhotoPredictor(torch_predictor, threads=1).predict(synthetic_images, explain=True, batch_size=2)
    for e, g in zip(expected, got, strict=True):
        assert g["ood_score"] == pytest.approx(e["ood_score"], rel=1e-3, abs=1e-3)
        assert g["unfamiliar"] == e["unfamiliar"] and ("gate" in g) == ("gate" in e)


def test_grey_world_is_applied_before_the_resize_in_both_paths(
    random_artifact, synthetic_images, tmp_path, monkeypatch
) -> None:  # noqa: ANN001
    pytest.importorskip("onnxruntime")
    from analysis.ml import fast
    from analysis.ml.infer import Predictor
    from analysis.ml.transforms import grey_world

    monkeypatch.setenv("DENTALSCAN_ONNX_CACHE", str(tmp_path / "onnx"))
    art = tmp_path / "grey-world"
    shutil.copytree(random_artifact, art)
    meta = json.loads((art / "model.json").read_text())
    meta["colour_constancy"] = "grey_world"
    (art / "model.json").write_text(json.dumps(meta))
    plain = Predictor(random_artifact, device="cpu").predict([grey_world(im) for im in synthetic_images])
    gw = Predictor(art, device="cpu")
    for a, b, c in zip(
        plain,
        gw.predict(synthetic_images),
        fast.OnnxPhotoPredictor(gw, threads=1).predict(synthetic_images),
        strict=True,
    ):
        assert b["scores"] == pytest.approx(a["scores"], abs=1e-5)
        assert c["scores"] == pytest.approx(a["scores"], abs=1e-4)


def test_shipped_photo_model_has_its_ood_statistics() -> None:
    from analysis.ml.artifacts import sha256_file

    art = Path(__file__).resolve().parents[2] / "analysis" / "models" / "photo" / "1.1.0"
    meta = json.loads((art / "model.json").read_text())
    if "ood" not in meta:
        pytest.skip("photo 1.1.0 has no ood section")
    assert (art / meta["ood"]["statistics_file"]).exists()
    assert meta["ood"]["hard_threshold"] > meta["ood"]["soft_threshold"] > 0
    assert sha256_file(art / "weights.pt") == meta["weights_sha256"]
