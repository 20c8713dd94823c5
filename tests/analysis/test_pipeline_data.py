"""train -> evaluate -> register -> analyze_images on a few shared photos (skips without the data)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.core.management import call_command

from tests.ml.conftest import photo_manifest  # noqa: F401 - fixture that skips without the data


@pytest.mark.data
@pytest.mark.django_db
def test_train_evaluate_register_analyze(tmp_path: Path, photo_manifest: Path) -> None:  # noqa: F811
    from analysis.ml.evaluate import evaluate_run
    from analysis.ml.train import TrainConfig, train

    cfg = TrainConfig(
        data=str(photo_manifest),
        run_dir=str(tmp_path / "run"),
        input_size=64,
        epochs=1,
        warmup_epochs=0,
        batch_size=8,
        limit=40,
        num_workers=0,
        threads=2,
    )
    train(cfg, log=lambda m: None)
    artifact = tmp_path / "artifact"
    evaluate_run(cfg.run_dir, artifact, version="0.0.9", n_boot=10, log=lambda m: None)
    out = io.StringIO()
    call_command("register_model", str(artifact), stdout=out)
    assert "@0.0.9 (photo) active" in out.getvalue()
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    files = [row["file"] for row in split["test"][:3]]
    out = io.StringIO()
    call_command("analyze_images", "--modality", "photo", "--json", *files, stdout=out)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["file"] for line in lines] == files
    assert all(line["model"].endswith("@0.0.9") and len(line["scores"]) == 4 for line in lines)
