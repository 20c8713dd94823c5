import json
from pathlib import Path

import numpy as np
import pytest

from analysis.ml.infer import clear_cache, load_predictor

SHIPPED = Path(__file__).resolve().parents[2] / "analysis" / "models" / "photo"


def _check_results(results, predictor, n):
    assert len(results) == n
    for r in results:
        # ood_score / unfamiliar (and, far out, gate) only for artefacts whose model.json has an "ood" section
        expected_keys = {"scores", "findings"} | ({"ood_score", "unfamiliar"} if predictor.ood is not None else set())
        assert expected_keys <= set(r) <= expected_keys | {"gate"}
        assert list(r["scores"]) == predictor.labels
        assert all(0.0 <= v <= 1.0 for v in r["scores"].values())
        for f in r["findings"]:
            assert f["condition"] in predictor.labels
            assert f["probability"] >= predictor.thresholds[f["condition"]]
            assert f["probability"] == r["scores"][f["condition"]]
            x, y, w, h = f["box"]
            assert 0 <= x <= 1 and 0 <= y <= 1 and 0 < w <= 1 and 0 < h <= 1
            assert x + w <= 1 + 1e-6 and y + h <= 1 + 1e-6
            hm = f["heatmap"]
            assert isinstance(hm, np.ndarray) and hm.dtype == np.float32 and hm.ndim == 2
            assert hm.min() >= 0 and hm.max() <= 1
        expected = {k for k, v in r["scores"].items() if v >= predictor.thresholds[k]}
        if "gate" in r:  # refused as out_of_distribution: no findings
            assert r["gate"]["code"] == "out_of_distribution" and r["findings"] == []
        else:
            assert {f["condition"] for f in r["findings"]} == expected


def test_predictor_random_init(random_artifact, synthetic_images):
    clear_cache()
    p = load_predictor(random_artifact)
    assert p is load_predictor(random_artifact)  # loaded once
    assert p.model_id == "photo-test@0.0.1"
    assert p.labels == ["caries", "gingivitis", "calculus", "ulcer"]
    results = p.predict(synthetic_images, explain=True)
    _check_results(results, p, len(synthetic_images))
    assert any(r["findings"] for r in results)
    # batching does not change the answer; explain=False gives the same scores
    again = p.predict(synthetic_images, explain=False, batch_size=2)
    for a, b in zip(results, again, strict=True):
        for k in p.labels:
            assert a["scores"][k] == pytest.approx(b["scores"][k], abs=1e-5)


def _shipped_versions():
    if not SHIPPED.exists():
        return []
    return sorted(d for d in SHIPPED.iterdir() if (d / "model.json").exists() and (d / "weights.pt").exists())


@pytest.mark.skipif(not _shipped_versions(), reason="no shipped photo artefact under analysis/models/photo/")
def test_shipped_artifact(synthetic_images):
    from analysis.ml.artifacts import sha256_file

    for art in _shipped_versions():
        meta = json.loads((art / "model.json").read_text())
        assert meta["modality"] == "photo" and meta["version"] == art.name
        assert (art / "weights.pt").stat().st_size <= 25 * 1024 * 1024
        assert sha256_file(art / "weights.pt") == meta["weights_sha256"]
        assert (art / "MODEL_CARD.md").exists() and (art / "metrics.json").exists()
        clear_cache()
        p = load_predictor(art)
        assert p.model_id == f"{meta['name']}@{meta['version']}"
        first = p.predict(synthetic_images, explain=True)
        _check_results(first, p, len(synthetic_images))
        second = p.predict(synthetic_images, explain=True)
        for a, b in zip(first, second, strict=True):
            assert a["scores"] == b["scores"]
            assert [f["box"] for f in a["findings"]] == [f["box"] for f in b["findings"]]


def test_predictor_hflip_tta_is_mirror_invariant(random_artifact, synthetic_images):
    from PIL import ImageOps

    meta = json.loads((random_artifact / "model.json").read_text())
    meta["tta"] = "hflip"
    (random_artifact / "model.json").write_text(json.dumps(meta))
    clear_cache()
    p = load_predictor(random_artifact)
    img = synthetic_images[0]
    a = p.predict([img], explain=True)[0]
    b = p.predict([ImageOps.mirror(img)], explain=True)[0]
    for k in p.labels:
        assert a["scores"][k] == pytest.approx(b["scores"][k], abs=1e-4)
    for fa, fb in zip(a["findings"], b["findings"], strict=True):
        assert np.allclose(fa["heatmap"], fb["heatmap"][:, ::-1], atol=1e-4)
