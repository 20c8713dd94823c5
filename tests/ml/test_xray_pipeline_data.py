"""X-ray detector on the shared dental-xrays set (skips cleanly when ../shared/datasets is absent).

* a tiny model trains for a few steps on a few shared images -> evaluate -> register -> analyze_images;
* the shipped model's mAP@0.5 on the shared ``test/`` split and on the group-aware validation split
  carved from ``train/`` is recomputed and must match what its model card / metrics.json report.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from analysis.ml.yolo import XRAY_LABELS
from core.conditions import codes_for

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def xray_root() -> Path:
    from analysis.ml.detect_train import default_xray_root

    root = default_xray_root()
    if not (root / "train" / "images").is_dir() or not (root / "test" / "images").is_dir():
        pytest.skip(f"shared data set not found at {root} (set DENTAL_DATASETS or place it in ../shared/datasets)")
    return root


@pytest.mark.data
@pytest.mark.django_db
def test_tiny_xray_train_evaluate_register_analyze(tmp_path: Path, xray_root: Path) -> None:
    from django.core.management import call_command

    from analysis.ml.detect_eval import evaluate_detector_run
    from analysis.ml.detect_train import DetTrainConfig, train_detector
    from analysis.registry import _load

    run = tmp_path / "run"
    cfg = DetTrainConfig(
        data=str(xray_root / "train"),
        run_dir=str(run),
        input_size=128,
        epochs=1,
        batch_size=2,
        limit=24,
        max_steps=3,
        warmup_steps=1,
        threads=2,
        device="cpu",
    )
    summary = train_detector(cfg, log=lambda m: None)
    assert summary["epochs_run"] == 1 and (run / "last.pt").exists() and (run / "best.pt").exists()
    split = json.loads((run / "split.json").read_text())
    assert set(split["val_groups"]).isdisjoint({row["group"] for row in split["train"]})
    # resuming a finished run trains nothing more
    again = train_detector(cfg, log=lambda m: None)
    assert again["epochs_run"] == 1

    art = tmp_path / "artifact"
    result = evaluate_detector_run(
        run, art, test_data=xray_root / "test", version="0.0.9", n_boot=10, device="cpu", log=lambda m: None
    )
    for key in ("map50", "map50_95", "per_class", "ci95"):
        assert key in result["val"] and key in result["test"]
    assert set(result["test"]["per_class"]) == set(XRAY_LABELS)
    assert 0.0 <= result["test"]["map50"] <= 1.0
    assert "prefixes_shared_with_train" in result["test_train_overlap"]
    for name in ("weights.pt", "model.json", "metrics.json", "MODEL_CARD.md", "plots/pr_val.png", "plots/pr_test.png"):
        assert (art / name).exists(), name
    card = (art / "MODEL_CARD.md").read_text()
    assert "CC BY 4.0" in card and "panoramic" in card and "flip" in card.lower()

    _load.cache_clear()
    out = io.StringIO()
    call_command("register_model", str(art), stdout=out)
    assert "@0.0.9 (xray) active" in out.getvalue()
    files = sorted((xray_root / "test" / "images").iterdir())[:2]
    out = io.StringIO()
    call_command("analyze_images", "--modality", "xray", *map(str, files), stdout=out)
    lines = [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]
    assert [line["file"] for line in lines] == [str(f) for f in files]
    for line in lines:
        assert line["model"].endswith("@0.0.9") and set(line["scores"]) == set(codes_for("xray"))
        for f in line["findings"]:
            assert f["condition"] in codes_for("xray") and f["probability"] >= 0.001
            assert all(0.0 <= v <= 1.0 for v in f["box"])
    _load.cache_clear()


def _shipped_xray() -> Path | None:
    base = ROOT / "analysis" / "models" / "xray"
    found = sorted(p for p in base.glob("*") if (p / "model.json").exists()) if base.is_dir() else []
    return found[-1] if found else None


@pytest.mark.data
@pytest.mark.slow
def test_shipped_xray_model_map_on_test_and_validation(xray_root: Path) -> None:
    """Recompute the shipped model's mAP@0.5 (and mAP@0.5:0.95) on test/ and on the group-aware validation
    split; they must match metrics.json. Prints the numbers (run with -s to see them)."""
    from PIL import Image

    from analysis.ml.detect_metrics import mean_ap
    from analysis.ml.infer import XrayPredictor
    from analysis.ml.yolo import group_split, read_yolo_split

    art = _shipped_xray()
    if art is None:
        pytest.skip("no X-ray model is shipped")
    metrics = json.loads((art / "metrics.json").read_text())
    cfg = metrics["training"]["config"]
    predictor = XrayPredictor(art, device="cpu")

    def evaluate(records) -> dict:
        dets = []
        for i in range(0, len(records), 8):
            images = []
            for r in records[i : i + 8]:
                with Image.open(r.path) as im:
                    im.load()
                    images.append(im.copy())
            for res in predictor.predict(images):
                boxes = [[x, y, x + w, y + h] for x, y, w, h in (f["box"] for f in res["findings"])]
                dets.append(
                    {
                        "boxes": np.asarray(boxes, float).reshape(-1, 4),
                        "scores": np.asarray([f["probability"] for f in res["findings"]], float),
                        "labels": np.asarray([XRAY_LABELS.index(f["condition"]) for f in res["findings"]]),
                    }
                )
        return mean_ap(dets, [(r.boxes, r.labels) for r in records], len(XRAY_LABELS))

    test = evaluate(read_yolo_split(xray_root / "test"))
    train_all = read_yolo_split(xray_root / "train")
    _, va = group_split(train_all, cfg["val_fraction"], seed=cfg["seed"])
    val = evaluate([train_all[i] for i in va])
    print(
        f"\n{predictor.model_id}: test mAP@0.5 {test['map50']:.3f} mAP@0.5:0.95 {test['map50_95']:.3f}; "
        f"validation mAP@0.5 {val['map50']:.3f} mAP@0.5:0.95 {val['map50_95']:.3f} (target mAP@0.5 >= 0.75)"
    )
    assert len(va) == metrics["val"]["images"]
    # same numbers as the card (small drift allowed: the card's run used the cached, pre-resized images)
    assert test["map50"] == pytest.approx(metrics["test"]["map50"], abs=0.02)
    assert val["map50"] == pytest.approx(metrics["val"]["map50"], abs=0.02)
    assert test["map50_95"] == pytest.approx(metrics["test"]["map50_95"], abs=0.02)
