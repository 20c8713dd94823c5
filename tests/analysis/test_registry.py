"""Model registry and ``analyze_images`` (no shared data needed: randomly initialised weights)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from PIL import Image

from analysis.ml import gate
from analysis.models import ModelVersion
from analysis.registry import ModelNotAvailable, model_register, model_version_active, shipped_artifacts
from tests.ml.conftest import random_artifact, synthetic_image  # noqa: F401 - fixture

ROOT = Path(__file__).resolve().parents[2]


def _copy_as(artifact: Path, target: Path, version: str) -> Path:
    target.mkdir(parents=True)
    for f in artifact.iterdir():
        (target / f.name).write_bytes(f.read_bytes())
    meta = json.loads((target / "model.json").read_text())
    meta["version"] = version
    (target / "model.json").write_text(json.dumps(meta))
    return target


@pytest.mark.django_db
def test_register_activates_one_version_per_modality(random_artifact: Path, tmp_path: Path) -> None:  # noqa: F811
    first = model_register(artifact_dir=random_artifact)
    assert first.is_active and first.model_id == "photo-test@0.0.1" and first.labels
    second = model_register(artifact_dir=_copy_as(random_artifact, tmp_path / "v2", "0.0.2"))
    first.refresh_from_db()
    assert second.is_active and not first.is_active
    assert model_version_active("photo") == second
    assert ModelVersion.objects.filter(modality="photo", is_active=True).count() == 1


@pytest.mark.django_db
def test_tampered_weights_are_refused(random_artifact: Path) -> None:  # noqa: F811
    weights = random_artifact / "weights.pt"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelNotAvailable, match="SHA-256"):
        model_register(artifact_dir=random_artifact)
    with pytest.raises(CommandError):
        call_command("register_model", str(random_artifact))


@pytest.mark.django_db
def test_analyze_images_prints_one_json_object_per_file(random_artifact: Path, tmp_path: Path) -> None:  # noqa: F811
    call_command("register_model", str(random_artifact), stdout=io.StringIO())
    good = tmp_path / "mouth.jpg"
    synthetic_image(3, (120, 90)).save(good, quality=90)
    bad = tmp_path / "report.jpg"
    bad.write_bytes(b"%PDF-1.7\n not an image")
    out = io.StringIO()
    call_command("analyze_images", "--modality", "photo", "--json", str(good), str(bad), stdout=out)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["file"] for line in lines] == [str(good), str(bad)]  # in the order given
    result = next(line for line in lines if line["file"] == str(good))
    error = next(line for line in lines if line["file"] == str(bad))
    assert error["error"]["code"] == "unsupported_format" and error["error"]["message"]
    assert result["model"] == "photo-test@0.0.1"
    assert set(result["scores"]) == {"caries", "gingivitis", "calculus", "ulcer"}
    assert all(0.0 <= p <= 1.0 for p in result["scores"].values())
    for finding in result["findings"]:
        x, y, w, h = finding["box"]
        assert 0 <= x <= 1 and 0 <= y <= 1 and 0 < w <= 1 - x + 1e-6 and 0 < h <= 1 - y + 1e-6
        assert finding["probability"] == result["scores"][finding["condition"]]


@pytest.mark.django_db
def test_analyze_images_applies_the_configured_upload_limits(random_artifact: Path, tmp_path: Path, settings) -> None:  # noqa: ANN001, F811
    call_command("register_model", str(random_artifact), stdout=io.StringIO())
    image = tmp_path / "mouth.png"
    synthetic_image(4, (120, 90)).save(image)
    settings.IMAGE_MAX_PIXELS = 100 * 80  # what the upload would refuse, the command refuses too
    out = io.StringIO()
    call_command("analyze_images", "--modality", "photo", str(image), stdout=out)
    assert json.loads(out.getvalue())["error"]["code"] == "image_too_large"
    settings.IMAGE_MAX_PIXELS, settings.IMAGE_MAX_BYTES = 10_000_000, image.stat().st_size - 1
    out = io.StringIO()
    call_command("analyze_images", "--modality", "photo", str(image), stdout=out)
    assert json.loads(out.getvalue())["error"]["code"] == "file_too_large"


@pytest.mark.skipif(not shipped_artifacts("photo"), reason="no shipped photo model in analysis/models/photo yet")
def test_analyze_images_works_without_a_database(tmp_path: Path) -> None:
    image = tmp_path / "mouth.png"
    buffer = io.BytesIO()
    synthetic_image(5, (100, 80)).save(buffer, "PNG")
    image.write_bytes(buffer.getvalue())
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.local",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'missing' / 'no.sqlite3'}",
        "DENTALSCAN_VAR_DIR": str(tmp_path),
    }
    env.pop("REDIS_URL", None)
    result = subprocess.run(
        [sys.executable, "manage.py", "analyze_images", "--modality", "photo", str(image)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    line = json.loads(result.stdout.splitlines()[-1])
    assert line["model"].startswith("photo-effnetlite0@")
    if line["assessable"]:
        assert set(line["scores"]) >= {"caries", "ulcer"}
    else:  # the shipped model's image gate may refuse this drawn picture: then it says why
        assert line["not_assessable"]["code"] in gate.CODES and line["scores"] == {} and line["findings"] == []


def test_xray_without_a_model_is_a_clear_error(tmp_path: Path, db: object) -> None:
    if shipped_artifacts("xray"):
        pytest.skip("an X-ray model is shipped")
    image = tmp_path / "x.png"
    Image.new("L", (32, 32)).save(image)
    with pytest.raises(CommandError, match="no xray model"):
        call_command("analyze_images", "--modality", "xray", str(image), stdout=io.StringIO())
