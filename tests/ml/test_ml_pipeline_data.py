"""End-to-end smoke test on a few real photos (needs ../shared/datasets)."""

import json

import pytest
from PIL import Image

from analysis.ml.evaluate import evaluate_run
from analysis.ml.infer import clear_cache, load_predictor
from analysis.ml.train import TrainConfig, train


@pytest.mark.data
def test_tiny_train_evaluate_export_predict(tmp_path, photo_manifest):
    manifest = photo_manifest
    cfg = TrainConfig(
        data=str(manifest),
        run_dir=str(tmp_path / "run"),
        input_size=64,
        epochs=1,
        warmup_epochs=0,
        batch_size=8,
        limit=40,
        num_workers=0,
        threads=2,
    )
    summary = train(cfg, log=lambda m: None)
    assert set(summary["thresholds"]) == set(cfg.labels)
    art = tmp_path / "artifact"
    result = evaluate_run(cfg.run_dir, art, version="0.0.1", n_boot=20, log=lambda m: None)
    assert "macro_roc_auc" in result["summary"]
    assert "shortcut_audit" in result
    for name in ("weights.pt", "model.json", "metrics.json", "MODEL_CARD.md"):
        assert (art / name).exists(), name
    meta = json.loads((art / "model.json").read_text())
    assert meta["input_size"] == 64 and meta["labels"] == cfg.labels
    card = (art / "MODEL_CARD.md").read_text()
    assert "licence" in card and "decision support" in card.lower()

    split = json.loads((tmp_path / "run" / "split.json").read_text())
    images = [Image.open(row["file"]).convert("RGB") for row in split["test"][:3]]
    clear_cache()
    p = load_predictor(art)
    res = p.predict(images, explain=True)
    assert len(res) == len(images)
    assert all(0 <= v <= 1 for r in res for v in r["scores"].values())
