import numpy as np
import pytest
import torch

from analysis.ml import LABELS
from analysis.ml.explain import heatmap_box, normalise_cams
from analysis.ml.model import build_model
from analysis.ml.train import apply_calibration, choose_thresholds, fit_calibration


def test_random_init_model_shapes():
    torch.manual_seed(0)
    model = build_model(len(LABELS), input_size=64, pretrained=False).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        logits = model(x)
        logits2, cams = model.forward_with_cam(x)
    assert logits.shape == (2, 4)
    assert torch.allclose(logits, logits2, atol=1e-5)
    assert cams.shape == (2, 4, 2, 2) and bool((cams >= 0).all())


def test_heatmap_and_box():
    cam = torch.zeros(1, 1, 7, 7)
    cam[0, 0, 1:3, 4:6] = 1.0
    hm = normalise_cams(cam)[0, 0]
    assert hm.shape == (28, 28) and hm.dtype == np.float32
    assert 0.0 <= hm.min() and hm.max() <= 1.0
    x, y, w, h = heatmap_box(hm)
    assert 0.5 < x < 0.7 and 0.1 < y < 0.3 and 0 < w < 0.4 and 0 < h < 0.4
    assert heatmap_box(np.zeros((28, 28), np.float32)) == [0.0, 0.0, 1.0, 1.0]


def test_calibration_and_thresholds():
    rng = np.random.default_rng(0)
    true_logit = rng.normal(-1.0, 2.0, (2000, 2))
    y = (rng.random(true_logit.shape) < 1 / (1 + np.exp(-true_logit))).astype(np.float32)
    logits = 3.0 * true_logit  # an over-confident model: the right temperature is 3
    temps, biases = fit_calibration(logits, y)
    assert all(2.2 < t < 4.0 for t in temps), temps
    p = apply_calibration(logits, temps, biases)
    assert p.min() >= 0 and p.max() <= 1
    assert abs(p.mean() - y.mean()) < 0.05
    th = choose_thresholds(p, y, ["caries", "ulcer"])
    assert set(th) == {"caries", "ulcer"} and all(0.05 <= v <= 0.95 for v in th.values())
    assert th["caries"] <= th["ulcer"] + 0.2  # F2 favours sensitivity


@pytest.mark.parametrize("n_boot", [0, 20])
def test_metrics_schema(n_boot):
    from analysis.ml.metrics import full_metrics

    rng = np.random.default_rng(1)
    y = (rng.random((60, 4)) < 0.4).astype(np.float32)
    p = np.clip(y * 0.6 + rng.random((60, 4)) * 0.4, 0, 1)
    groups = [f"g{i // 2}" for i in range(60)]
    m = full_metrics(y, p, groups, dict.fromkeys(LABELS, 0.5), LABELS, n_boot=n_boot)
    assert 0.5 < m["macro_roc_auc"] <= 1.0
    assert 0 <= m["ece"] <= 1
    for name in LABELS:
        assert {"roc_auc", "pr_auc", "f1", "sensitivity", "specificity", "ece"} <= set(m["per_class"][name])
    if n_boot:
        lo, hi = m["ci95"]["macro_roc_auc"]
        assert lo <= m["macro_roc_auc"] <= hi + 1e-9
