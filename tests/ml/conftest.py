"""Fixtures for the ML tests (plain pytest, no database)."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from analysis.ml import LABELS


def synthetic_image(seed: int, size=(96, 72)) -> Image.Image:
    rng = np.random.default_rng(seed)
    w, h = size
    base = rng.integers(0, 255, size=(1, 1, 3))
    yy, xx = np.mgrid[0:h, 0:w]
    arr = base + 40 * np.sin(xx[..., None] / (3 + seed % 5)) + rng.normal(0, 20, (h, w, 3))
    arr[yy // 8 % 2 == 0] += 30
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


@pytest.fixture
def synthetic_images():
    return [synthetic_image(i, size=(80 + 16 * i, 60 + 8 * (i % 3))) for i in range(5)]


def write_synthetic_manifest(root: Path, n_groups: int = 60, seed: int = 0, with_images: bool = False) -> Path:
    """Groups of 1-4 images, each group with one label set."""
    rng = random.Random(seed)
    label_sets = [
        "healthy",
        "ulcer",
        "caries",
        "calculus",
        "gingivitis",
        "calculus;gingivitis",
        "calculus;caries;gingivitis",
    ]
    weights = [5, 5, 3, 2, 2, 1.5, 0.6]
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    k = 0
    for g in range(n_groups):
        labels = rng.choices(label_sets, weights)[0]
        for _ in range(rng.randint(1, 4)):
            name = f"images/img{k:04d}.jpg"
            if with_images:
                (root / "images").mkdir(exist_ok=True)
                synthetic_image(k, (64, 48)).save(root / name, quality=90)
            rows.append(
                {"file": name, "labels": labels, "group": f"g{g:04d}", "source": "synthetic", "original_size": "64x48"}
            )
            k += 1
    path = root / "manifest.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["file", "labels", "group", "source", "original_size"])
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture
def synthetic_manifest(tmp_path):
    return write_synthetic_manifest(tmp_path / "synthetic", n_groups=120)


@pytest.fixture
def random_artifact(tmp_path):
    """An artefact folder holding a *randomly initialised* model (no shipped weights needed)."""
    import torch

    from analysis.ml.artifacts import export_artifact
    from analysis.ml.model import build_model

    torch.manual_seed(0)
    model = build_model(len(LABELS), input_size=64, pretrained=False)
    # make some findings likely so that boxes/heatmaps are exercised
    with torch.no_grad():
        model.head.bias.fill_(2.0)
    out = tmp_path / "artifact"
    export_artifact(
        out,
        model.state_dict(),
        labels=LABELS,
        thresholds=dict.fromkeys(LABELS, 0.3),
        temperature=dict.fromkeys(LABELS, 1.0),
        logit_bias=dict.fromkeys(LABELS, 0.0),
        input_size=64,
        name="photo-test",
        version="0.0.1",
    )
    return out


@pytest.fixture
def make_image():
    return synthetic_image


@pytest.fixture
def manifest_writer():
    return write_synthetic_manifest


@pytest.fixture
def photo_manifest() -> Path:
    """The shared intraoral-photos manifest; skips the test when the data set is absent."""
    from analysis.ml.data import photo_manifest_path

    manifest = photo_manifest_path()
    if not manifest.exists():
        pytest.skip(
            f"shared data set not found at {manifest.parent.parent} (set DENTAL_DATASETS or place "
            "the data in ../shared/datasets)"
        )
    return manifest
