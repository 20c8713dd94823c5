"""Colour constancy at inference, the healthy-specificity threshold floor, and the false-finding report."""

import csv
import json

import numpy as np
from PIL import Image

from analysis.ml import LABELS
from analysis.ml.false_findings import false_finding_rates
from analysis.ml.infer import Predictor
from analysis.ml.train import raise_for_healthy_specificity


def _with_colour_constancy(artifact, value="grey_world", trained=()):
    meta = json.loads((artifact / "model.json").read_text())
    meta["colour_constancy"] = value
    if trained:
        meta["trained_on_other_sources"] = list(trained)
    (artifact / "model.json").write_text(json.dumps(meta))


def test_grey_world_predictor_ignores_colour_cast(random_artifact):
    rng = np.random.default_rng(0)
    base = rng.integers(40, 200, (48, 64, 3)).astype(np.float32)
    img = Image.fromarray(base.astype(np.uint8))
    cast = Image.fromarray(np.clip(base * np.array([1.3, 1.0, 0.8]), 0, 255).astype(np.uint8))
    plain = Predictor(random_artifact, device="cpu")
    x = plain._preprocess([img, cast])
    assert (x[0] - x[1]).abs().mean() > 0.05
    _with_colour_constancy(random_artifact)
    balanced = Predictor(random_artifact, device="cpu")
    assert balanced.colour_constancy == "grey_world"
    x = balanced._preprocess([img, cast])
    assert (x[0] - x[1]).abs().mean() < 0.03
    assert len(balanced.predict([img, cast], explain=False)) == 2


def test_raise_for_healthy_specificity_keeps_sensitive_label():
    rng = np.random.default_rng(1)
    y = np.zeros((200, 2))
    y[:50, 0] = 1
    y[50:100, 1] = 1
    p = rng.uniform(0, 1, (200, 2))
    out = raise_for_healthy_specificity({"a": 0.1, "b": 0.1}, p, y, ["a", "b"], 0.9, keep=("a",))
    assert out["a"] == 0.1
    healthy = y.sum(1) == 0
    assert (p[healthy, 1] < out["b"]).mean() >= 0.9 and out["b"] > 0.1


def test_false_finding_rates_held_out(random_artifact, tmp_path, make_image):
    folder = tmp_path / "other"
    (folder / "images").mkdir(parents=True)
    rows = []
    for i, src in enumerate(["alpha/repo", "alpha/repo", "beta/repo"]):
        make_image(seed=i).save(folder / "images" / f"{i}.jpg")
        rows.append({"file": f"images/{i}.jpg", "expected": "healthy_looking", "source": src})
    with (folder / "manifest.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["file", "expected", "source"])
        w.writeheader()
        w.writerows(rows)
    _with_colour_constancy(random_artifact, trained=["alpha/repo"])
    r = false_finding_rates(random_artifact, folder / "manifest.csv")
    assert r["overall_all"]["n"] == 3 and r["held_out"]["n"] == 1
    assert r["by_source"]["alpha"]["trained_on"] and not r["by_source"]["beta"]["trained_on"]
    assert set(r["overall_all"]["per_condition"]) == set(LABELS)
