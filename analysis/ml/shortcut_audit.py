"""Shortcut audit of the photo classifier: could its test numbers be explained by cues other than the mouth?

(a) the same metrics when every test image is centre-cropped to a square and resized identically
    (removes aspect-ratio / framing differences between sources): ``evaluate.evaluate_run`` predicts the
    cropped images, ``center_crop_audit`` keeps the numbers that matter;
(b) a gradient-boosting model that sees only file/acquisition metadata (image width and height, original
    width and height, aspect ratio, file size, JPEG quantisation-table quality estimate, mean and std of
    each colour channel), trained on the train+validation groups and scored on the same test groups.
    The closer the image model's numbers are to (b), the more it could be explained by such cues.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from PIL import Image

from .data import Record, targets
from .metrics import macro, roc_auc


def jpeg_quality_estimate(img) -> float:
    """Rough libjpeg quality (1-100) from the luminance quantisation table; NaN if not a JPEG."""
    q = getattr(img, "quantization", None)
    if not q:
        return float("nan")
    std_lum = np.array(
        [
            16,
            11,
            10,
            16,
            24,
            40,
            51,
            61,
            12,
            12,
            14,
            19,
            26,
            58,
            60,
            55,
            14,
            13,
            16,
            24,
            40,
            57,
            69,
            56,
            14,
            17,
            22,
            29,
            51,
            87,
            80,
            62,
            18,
            22,
            37,
            56,
            68,
            109,
            103,
            77,
            24,
            35,
            55,
            64,
            81,
            104,
            113,
            92,
            49,
            64,
            78,
            87,
            103,
            121,
            120,
            101,
            72,
            92,
            95,
            98,
            112,
            100,
            103,
            99,
        ],
        float,
    )
    table = np.array(q[min(q)], float)
    scale = 100.0 * np.sum(np.sort(table)) / np.sum(np.sort(std_lum))
    quality = (200.0 - scale) / 2.0 if scale <= 100 else 5000.0 / scale
    return float(np.clip(quality, 1, 100))


META_FEATURES = [
    "width",
    "height",
    "orig_width",
    "orig_height",
    "aspect",
    "orig_aspect",
    "file_kb",
    "jpeg_quality",
    "qtable_mean_luma",
    "qtable_mean_chroma",
    "mean_r",
    "mean_g",
    "mean_b",
    "std_r",
    "std_g",
    "std_b",
]


def metadata_features(record: Record) -> list[float]:
    with Image.open(record.path) as im:
        w, h = im.size
        qual = jpeg_quality_estimate(im)
        q = getattr(im, "quantization", None) or {}
        tables = [np.mean(q[k]) for k in sorted(q)]
        small = im.convert("RGB").resize((64, 64))
    arr = np.asarray(small, np.float32) / 255.0
    try:
        ow, oh = (float(v) for v in record.original_size.lower().split("x"))
    except ValueError:
        ow, oh = float(w), float(h)
    return [
        w,
        h,
        ow,
        oh,
        w / h,
        ow / oh,
        os.path.getsize(record.path) / 1024.0,
        qual,
        tables[0] if tables else np.nan,
        tables[1] if len(tables) > 1 else np.nan,
        *arr.mean((0, 1)).tolist(),
        *arr.std((0, 1)).tolist(),
    ]


def metadata_shortcut_audit(
    records: Sequence[Record], train_idx, test_idx, labels: Sequence[str], seed: int = 0
) -> dict:
    from sklearn.ensemble import HistGradientBoostingClassifier  # scikit-learn loads only when the audit runs

    feats = np.array([metadata_features(r) for r in records], float)
    y = targets(records, labels)
    y = np.concatenate([y, (y.sum(1) == 0)[:, None].astype(np.float32)], axis=1)
    names = list(labels) + ["healthy"]
    out: dict = {"features": META_FEATURES}
    for subset_name, cols in (("all_metadata", list(range(len(META_FEATURES)))), ("original_size_only", [2, 3])):
        aucs = {}
        for c, name in enumerate(names):
            clf = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, random_state=seed)
            clf.fit(feats[np.ix_(train_idx, cols)], y[train_idx, c])
            s = clf.predict_proba(feats[np.ix_(test_idx, cols)])[:, 1]
            aucs[name] = roc_auc(y[test_idx, c], s)
        out[subset_name] = {
            "roc_auc": aucs,
            "macro_roc_auc": macro([aucs[n] for n in labels]),
            "macro_roc_auc_incl_healthy": macro(list(aucs.values())),
        }
    out["model"] = "sklearn HistGradientBoostingClassifier (200 iterations, lr 0.05), one per label"
    return out


def center_crop_audit(crop: dict, labels: Sequence[str]) -> dict:
    """(a): the headline numbers of ``metrics.full_metrics`` on the centre-cropped test images."""
    return {k: crop[k] for k in ("macro_roc_auc", "macro_pr_auc", "macro_f1", "ece", "healthy_false_alarm_rate")} | {
        "per_class_roc_auc": {n: crop["per_class"][n]["roc_auc"] for n in labels},
        "per_class_f1": {n: crop["per_class"][n]["f1"] for n in labels},
        "ci95": {k: crop["ci95"][k] for k in ("macro_roc_auc", "macro_f1")} if "ci95" in crop else {},
    }


def audit_summary(audit: dict) -> dict:
    """The audit's line in the metrics summary: (a)'s macro ROC-AUC and F1, (b)'s macro ROC-AUC."""
    return {
        "center_crop_macro_roc_auc": audit["center_crop_square"]["macro_roc_auc"],
        "center_crop_macro_f1": audit["center_crop_square"]["macro_f1"],
        "metadata_only_macro_roc_auc": audit["metadata_only"]["all_metadata"]["macro_roc_auc"],
    }
