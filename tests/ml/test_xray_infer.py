"""X-ray detector without the shared data: preprocessing, metrics, splits, augmentation, inference on
synthetic 8-bit / 16-bit greyscale and RGB images of odd sizes, and ``analyze_images --modality xray``."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from analysis.ml.detect_metrics import bootstrap_map, compute_matches, mean_ap
from analysis.ml.detection import build_detector, preprocess_xray, xray_to_uint8_grey
from analysis.ml.yolo import XRAY_LABELS, DetRecord, group_split, read_yolo_split, source_group
from core.conditions import codes_for


def synthetic_xray(kind: str, size: tuple[int, int], seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = 0.5 + 0.3 * np.sin(xx / max(3, w / 9)) * np.cos(yy / max(3, h / 5)) + rng.normal(0, 0.05, (h, w))
    base = np.clip(base, 0, 1)
    if kind == "L":
        return Image.fromarray((base * 255).astype(np.uint8), "L")
    if kind == "I;16":
        arr = (1000 + base * 3000).astype("<u2")  # 12-bit data in a 16-bit container
        return Image.frombytes("I;16", (w, h), arr.tobytes())
    if kind == "I":
        return Image.fromarray((base * 60000).astype(np.int32), "I")
    if kind == "RGB":
        g = (base * 255).astype(np.uint8)
        return Image.fromarray(np.stack([g, g, g], -1), "RGB")
    raise ValueError(kind)


@pytest.fixture(scope="module")
def xray_artifact(tmp_path_factory) -> Path:
    """An X-ray artefact with a randomly initialised detector (no shipped weights needed)."""
    from analysis.ml.detect_eval import export_detector_artifact

    torch.manual_seed(0)
    model = build_detector(len(XRAY_LABELS), input_size=128, pretrained=False)
    out = tmp_path_factory.mktemp("xray") / "artifact"
    export_detector_artifact(
        out,
        model.state_dict(),
        labels=XRAY_LABELS,
        thresholds=dict.fromkeys(XRAY_LABELS, 0.3),
        input_size=128,
        name="xray-test",
        version="0.0.1",
    )
    return out


# ----------------------------------------------------------------------------- preprocessing


@pytest.mark.parametrize("kind", ["L", "I;16", "I", "RGB"])
def test_preprocess_any_mode_and_size(kind):
    img = synthetic_xray(kind, (301, 157), seed=1)
    grey = xray_to_uint8_grey(img)
    assert grey.dtype == np.uint8 and grey.shape == (157, 301)
    assert grey.max() > 200 and grey.min() < 60  # the full 8-bit range is used
    x = preprocess_xray(img, 96)
    assert x.shape == (3, 96, 96) and x.dtype == torch.uint8
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])


def test_sixteen_bit_window_matches_eight_bit_rendering():
    img16 = synthetic_xray("I;16", (120, 80), seed=2)
    img8 = synthetic_xray("L", (120, 80), seed=2)
    a = xray_to_uint8_grey(img16).astype(float)
    b = xray_to_uint8_grey(img8).astype(float)
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.98


def test_constant_sixteen_bit_image_does_not_crash():
    arr = np.full((40, 50), 1234, dtype="<u2")
    grey = xray_to_uint8_grey(Image.frombytes("I;16", (50, 40), arr.tobytes()))
    assert grey.shape == (40, 50)


# ----------------------------------------------------------------------------- inference


def test_xray_predictor_boxes_are_normalised(xray_artifact):
    from analysis.ml.infer import XrayPredictor, clear_cache, load_predictor

    clear_cache()
    p = load_predictor(xray_artifact, device="cpu")
    assert isinstance(p, XrayPredictor) and p.model_id == "xray-test@0.0.1"
    images = [
        synthetic_xray("L", (333, 171), 0),
        synthetic_xray("I;16", (517, 263), 1),
        synthetic_xray("RGB", (97, 211), 2),
        synthetic_xray("I", (640, 320), 3),
        synthetic_xray("L", (33, 17), 4),
    ]
    results = p.predict(images)
    assert len(results) == len(images)
    for res in results:
        assert set(res["scores"]) == set(XRAY_LABELS)
        assert res["findings"], "a random detector still outputs low-score boxes above the 0.001 floor"
        probs = [f["probability"] for f in res["findings"]]
        assert probs == sorted(probs, reverse=True)
        assert all(0.001 <= q <= 1 for q in probs)
        assert len(res["findings"]) <= 100
        for f in res["findings"]:
            assert f["condition"] in XRAY_LABELS
            x, y, w, h = f["box"]
            assert 0 <= x <= 1 and 0 <= y <= 1 and 0 <= w <= 1 and 0 <= h <= 1
            assert x + w <= 1 + 1e-6 and y + h <= 1 + 1e-6
        for name, s in res["scores"].items():
            best = max([f["probability"] for f in res["findings"] if f["condition"] == name], default=0.0)
            assert s == pytest.approx(best)
    # a higher floor keeps a subset
    high = p.predict(images[:1], min_probability=0.5)[0]["findings"]
    assert all(f["probability"] >= 0.5 for f in high)


def test_model_json_describes_the_detector(xray_artifact):
    meta = json.loads((xray_artifact / "model.json").read_text())
    assert meta["modality"] == "xray" and meta["task"] == "detection"
    assert meta["labels"] == XRAY_LABELS and meta["score_threshold"] <= 0.001
    assert meta["weights_dtype"] == "float16" and meta["resize"] == "stretch"


# ----------------------------------------------------------------------------- metrics


def _dets(boxes, scores, labels):
    return {"boxes": np.asarray(boxes, float), "scores": np.asarray(scores, float), "labels": np.asarray(labels)}


def test_map_perfect_and_missed():
    gt = [(np.array([[0.1, 0.1, 0.3, 0.3], [0.5, 0.5, 0.9, 0.8]]), np.array([0, 1]))]
    perfect = [_dets(gt[0][0], [0.9, 0.8], [0, 1])]
    m = mean_ap(perfect, gt, 4)
    assert m["map50"] == pytest.approx(1.0) and m["map50_95"] == pytest.approx(1.0)
    assert np.isnan(m["ap50"][2])  # no ground truth: excluded from the mean
    missed = [_dets([[0.1, 0.1, 0.3, 0.3]], [0.9], [0])]
    m = mean_ap(missed, gt, 4)
    assert m["ap50"][0] == pytest.approx(1.0) and m["ap50"][1] == 0.0 and m["map50"] == pytest.approx(0.5)


def test_map_iou_sensitivity_and_ranking():
    gt = [(np.array([[0.0, 0.0, 0.4, 0.4]]), np.array([0]))]
    shifted = [_dets([[0.1, 0.0, 0.5, 0.4]], [0.9], [0])]  # IoU 0.6
    m = mean_ap(shifted, gt, 1)
    assert m["ap50"][0] == pytest.approx(1.0) and m["map50_95"] == pytest.approx(0.3)
    # a false positive ranked above the true positive halves precision at full recall
    fp_first = [_dets([[0.6, 0.6, 0.9, 0.9], [0.0, 0.0, 0.4, 0.4]], [0.9, 0.8], [0, 0])]
    assert mean_ap(fp_first, gt, 1)["ap50"][0] == pytest.approx(0.5, abs=0.01)
    tp_first = [_dets([[0.6, 0.6, 0.9, 0.9], [0.0, 0.0, 0.4, 0.4]], [0.7, 0.8], [0, 0])]
    assert mean_ap(tp_first, gt, 1)["ap50"][0] == pytest.approx(1.0)


def test_bootstrap_ci_brackets_the_estimate():
    rng = np.random.default_rng(0)
    gts, dets = [], []
    for _ in range(20):
        b = rng.uniform(0, 0.5, (3, 2))
        boxes = np.concatenate([b, b + 0.3], 1)
        labels = rng.integers(0, 2, 3)
        gts.append((boxes, labels))
        noisy = boxes + rng.normal(0, 0.03, boxes.shape)
        dets.append(_dets(noisy, rng.uniform(0.2, 1, 3), labels))
    matches = compute_matches(dets, gts, 2)
    point = mean_ap(dets, gts, 2)["map50"]
    ci = bootstrap_map(matches, 2, n_boot=50, seed=0)
    assert ci["map50"][0] <= point + 1e-9 and point - 1e-9 <= ci["map50"][1]
    assert len(ci["ap50"]) == 2


# ----------------------------------------------------------------------------- data + splits + augmentation


def test_source_group_parses_roboflow_names():
    assert source_group("0001_jpg.rf.34ebbe7e12c07c3c930c20c0c6583410.jpg") == "0001"
    assert source_group("/x/img_12_png.rf.abc123.jpg") == "img_12"
    assert source_group("plain.jpg") == "plain"


def test_yolo_loader_and_group_split(tmp_path):
    root = tmp_path / "yolo"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for src in range(12):
        for copy in range(1 + src % 3):
            name = f"{src:04d}_jpg.rf.{copy:032x}"
            Image.new("L", (32, 32), 128).save(root / "images" / f"{name}.jpg")
            (root / "labels" / f"{name}.txt").write_text(f"{src % 4} 0.5 0.5 0.2 0.4\n1 0.95 0.95 0.2 0.2\n")
    recs = read_yolo_split(root)
    assert len(recs) == sum(1 + s % 3 for s in range(12))
    r = recs[0]
    assert r.group == "0000" and r.boxes.shape == (2, 4)
    np.testing.assert_allclose(r.boxes[0], [0.4, 0.3, 0.6, 0.7], atol=1e-6)
    assert r.boxes.max() <= 1.0  # boxes are clipped to the image
    tr, va = group_split(recs, 0.25, seed=1)
    assert set(tr).isdisjoint(va) and len(tr) + len(va) == len(recs)
    assert {recs[i].group for i in tr}.isdisjoint({recs[i].group for i in va})
    assert {int(c) for i in va for c in recs[i].labels} == {0, 1, 2, 3}


def test_augmentation_keeps_boxes_inside_the_image():
    from analysis.ml.detect_train import DetTrainConfig, augment

    cfg = DetTrainConfig(data="", run_dir="", scale_p=1.0, hflip=0.5)
    grey = torch.randint(0, 255, (64, 64), dtype=torch.uint8)
    boxes = np.array([[0.0, 0.0, 0.5, 0.5], [0.6, 0.2, 0.95, 0.9]], np.float32)
    labels = np.array([0, 3])
    random.seed(0)
    for _ in range(30):
        x, b, lab = augment(grey, boxes, labels, cfg)
        assert x.shape == (3, 64, 64) and 0 <= float(x.min()) and float(x.max()) <= 1
        assert len(b) == len(lab)
        if len(b):
            assert float(b.min()) >= 0 and float(b.max()) <= 64
            assert bool(((b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])).all())
    # a plain flip mirrors x coordinates
    cfg = DetTrainConfig(data="", run_dir="", scale_p=0.0, hflip=1.0, jitter_p=0.0)
    x, b, _ = augment(grey, boxes, labels, cfg)
    np.testing.assert_allclose(b[0].numpy(), [32, 0, 64, 32], atol=1e-4)
    assert torch.equal((x[0] * 255).round().to(torch.uint8), grey.flip(-1))


def _records(label_sets: list[list[int]]) -> list[DetRecord]:
    return [
        DetRecord(
            path=Path(f"{i}.jpg"),
            boxes=np.tile(np.array([[0.1, 0.1, 0.5, 0.5]], np.float32), (len(ls), 1)),
            labels=np.array(ls, np.int64),
        )
        for i, ls in enumerate(label_sets)
    ]


def test_repeat_factors_follow_the_lvis_rule():
    from analysis.ml.detect_train import repeat_factors

    # class 0 in 1 of 10 images, class 1 in all 10, class 2 in 5, class 3 in none; one image has no boxes
    sets = [[0, 1]] + [[1, 2]] * 4 + [[1]] * 4 + [[1, 2, 2]]
    sets = [*sets, []]
    recs = _records(sets)
    f = repeat_factors(recs, 4, threshold=0.5)
    # f_0 = 1/11 -> sqrt(0.5 * 11); f_2 = 5/11 -> sqrt(0.5 * 11 / 5); f_1 = 10/11 -> below 1 -> 1
    np.testing.assert_allclose(f[0], np.sqrt(5.5))
    np.testing.assert_allclose(f[1:5], np.sqrt(1.1))
    np.testing.assert_allclose(f[5:9], 1.0)
    np.testing.assert_allclose(f[9], np.sqrt(1.1))
    assert f[10] == 1.0  # no boxes
    np.testing.assert_allclose(repeat_factors(recs, 4, threshold=0.0), 1.0)


def test_train_loader_draws_rare_class_images_more_often():
    from analysis.ml.detect_train import DetDataset, DetTrainConfig, train_loader

    sets = [[0]] * 5 + [[1]] * 95  # class 0 in 5% of the images
    recs = _records(sets)
    images = torch.zeros((len(recs), 16, 16), dtype=torch.uint8)
    logs: list[str] = []

    def draws(t: float) -> list[int]:
        cfg = DetTrainConfig(data="", run_dir="", repeat_threshold=t, batch_size=4)
        loader = train_loader(DetDataset(recs, images, cfg), cfg, torch.Generator().manual_seed(0), logs.append)
        out = []
        for _ in range(20):
            out += list(iter(loader.sampler))
        return out

    plain = draws(0.0)
    assert sorted(plain[:100]) == list(range(100))  # plain shuffling: every image once per epoch
    rfs = draws(0.5)
    assert len(rfs) == len(plain)  # epoch length unchanged
    rare_share = sum(i < 5 for i in rfs) / len(rfs)
    expected = 5 * np.sqrt(10) / (5 * np.sqrt(10) + 95)  # factor sqrt(0.5 / 0.05) for the rare images
    assert abs(rare_share - expected) < 0.03, rare_share
    assert rare_share > 0.10  # against 0.05 without it
    assert any("repeat-factor sampling t=0.5" in m for m in logs)


def test_weight_ema_follows_its_warm_up_and_decay():
    from analysis.ml.detect_train import make_ema

    model = torch.nn.Linear(1, 1, bias=False)
    ema = make_ema(model, decay=0.9)
    expected = None
    for n, w in enumerate([1.0, 2.0, 4.0, 8.0, 16.0, 3.0, 5.0, 7.0, 9.0, 11.0, 13.0, 15.0, 17.0, 19.0, 21.0]):
        model.weight.data.fill_(w)
        ema.update_parameters(model)
        if expected is None:
            expected = w  # the first update copies the weights
        else:
            d = min(0.9, (1.0 + n) / (10.0 + n))  # warm-up, n earlier updates
            expected = d * expected + (1 - d) * w
        assert float(ema.module.weight.detach()) == pytest.approx(expected, rel=1e-6), n
    assert float(ema.module.weight.detach()) != pytest.approx(21.0)  # it lags the raw weights


def _synthetic_yolo(root: Path, n: int = 16, size: int = 64) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        arr = (rng.random((size, size)) * 60).astype(np.uint8)
        cx, cy = rng.uniform(0.3, 0.7, 2)
        x0, y0 = int((cx - 0.15) * size), int((cy - 0.15) * size)
        arr[y0 : y0 + int(0.3 * size), x0 : x0 + int(0.3 * size)] = 220
        Image.fromarray(arr, "L").save(root / "images" / f"{i:03d}_jpg.rf.{i:032x}.jpg")
        (root / "labels" / f"{i:03d}_jpg.rf.{i:032x}.txt").write_text(f"{i % 4} {cx:.4f} {cy:.4f} 0.3 0.3\n")
    return root


def test_training_with_weight_ema_keeps_the_average_and_resumes_it(tmp_path):
    from analysis.ml.detect_train import DetTrainConfig, train_detector

    data = _synthetic_yolo(tmp_path / "yolo")
    cfg = DetTrainConfig(
        data=str(data),
        run_dir=str(tmp_path / "run"),
        input_size=64,
        epochs=1,
        batch_size=4,
        lr=1e-3,
        warmup_steps=1,
        val_fraction=0.25,
        pretrained=False,
        device="cpu",
        ema_decay=0.99,
    )
    train_detector(cfg, log=lambda m: None)
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    best = torch.load(tmp_path / "run" / "best.pt", weights_only=False)
    steps = last["state"]["step"]
    assert steps >= 2 and int(last["ema"]["n_averaged"]) == steps
    averaged = {k[len("module.") :]: v for k, v in last["ema"].items() if k.startswith("module.")}
    assert averaged.keys() == best["model"].keys()
    assert all(torch.equal(averaged[k], best["model"][k]) for k in averaged)  # best.pt keeps the average
    raw = last["model"]
    assert any(not torch.equal(raw[k], averaged[k]) for k in raw if raw[k].is_floating_point())

    cfg.epochs = 2  # resuming continues the same average
    train_detector(cfg, log=lambda m: None)
    again = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert again["state"]["step"] == 2 * steps and int(again["ema"]["n_averaged"]) == 2 * steps


def test_detrecord_defaults():
    r = DetRecord(path=Path("a.jpg"), boxes=np.zeros((0, 4), np.float32), labels=np.zeros(0, np.int64))
    assert r.group == "" and r.extra == {}


# ----------------------------------------------------------------------------- management command


@pytest.mark.django_db
def test_analyze_images_xray_prints_boxes_and_errors(xray_artifact, tmp_path):
    from django.core.management import call_command

    from analysis.registry import _load

    _load.cache_clear()
    out = io.StringIO()
    call_command("register_model", str(xray_artifact), stdout=out)
    assert "xray-test@0.0.1 (xray) active" in out.getvalue()
    eight = tmp_path / "pano8.png"
    synthetic_xray("L", (401, 203), 5).save(eight)
    sixteen = tmp_path / "pano16.png"
    synthetic_xray("I;16", (355, 179), 6).save(sixteen)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    out = io.StringIO()
    call_command("analyze_images", "--modality", "xray", str(bad), str(eight), str(sixteen), stdout=out)
    lines = [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]
    assert [line["file"] for line in lines] == [str(bad), str(eight), str(sixteen)]  # in the order given
    by_file = {line["file"]: line for line in lines}
    assert set(by_file) == {str(eight), str(sixteen), str(bad)}
    assert set(by_file[str(bad)]["error"]) == {"code", "message"}
    for f in (eight, sixteen):
        line = by_file[str(f)]
        assert line["model"] == "xray-test@0.0.1"
        assert set(line["scores"]) == set(codes_for("xray"))  # the platform's codes, not the data set's names
        assert line["findings"]
        for finding in line["findings"]:
            assert set(finding) == {"condition", "probability", "box"}
            assert finding["probability"] >= 0.001
            x, y, w, h = finding["box"]
            assert 0 <= x <= 1 and 0 <= y <= 1 and 0 <= x + w <= 1 + 1e-6 and 0 <= y + h <= 1 + 1e-6
    _load.cache_clear()


# ----------------------------------------------------------------------------- test-time augmentation


def test_hflip_tta_is_mirror_symmetric_and_used_when_the_artefact_says_so(xray_artifact: Path, tmp_path) -> None:  # noqa: ANN001
    """The merged detections of an image and of its mirror image are mirror images of each other (the union
    of plain + mirrored detections is the same set), and the predictor applies it from ``model.json``."""
    import shutil

    from analysis.ml.detection import detect_hflip_tta
    from analysis.ml.infer import XrayPredictor

    plain = XrayPredictor(xray_artifact, device="cpu")
    x = plain._preprocess([synthetic_xray("L", (300, 150), seed=3)])[0]
    with torch.inference_mode():
        a = detect_hflip_tta(plain.model, [x])[0]
        b = detect_hflip_tta(plain.model, [x.flip(-1)])[0]
        single = plain.model([x])[0]
    assert len(a["boxes"]) > 0 and len(a["boxes"]) >= min(len(single["boxes"]), 100)
    width = float(x.shape[-1])
    mirrored = b["boxes"].clone()
    mirrored[:, 0], mirrored[:, 2] = width - b["boxes"][:, 2], width - b["boxes"][:, 0]
    key_a = sorted(zip(a["labels"].tolist(), a["scores"].tolist(), a["boxes"].tolist(), strict=True))
    key_b = sorted(zip(b["labels"].tolist(), b["scores"].tolist(), mirrored.tolist(), strict=True))
    assert [k[:1] for k in key_a] == [k[:1] for k in key_b]
    assert np.allclose([k[1] for k in key_a], [k[1] for k in key_b], atol=1e-4)
    assert np.allclose([k[2] for k in key_a], [k[2] for k in key_b], atol=0.5)  # pixels at 128 px

    tta_dir = tmp_path / "tta"
    shutil.copytree(xray_artifact, tta_dir)
    meta = json.loads((tta_dir / "model.json").read_text())
    (tta_dir / "model.json").write_text(json.dumps({**meta, "tta": "hflip"}))
    img = synthetic_xray("L", (300, 150), seed=3)
    with_tta = XrayPredictor(tta_dir, device="cpu")
    assert with_tta.tta == "hflip" and plain.tta == ""
    got = with_tta.predict([img])[0]["findings"]
    expected = sorted(a["scores"].tolist(), reverse=True)
    assert [round(f["probability"], 5) for f in got] == [round(s, 5) for s in expected]
