"""COCO-style detection metrics (no pycocotools needed).

For each image, class and IoU threshold, detections (at most ``max_dets`` per image, highest score first)
are matched greedily to the not-yet-matched ground-truth box of the same class with the highest IoU
(>= threshold), as COCO does. AP is the 101-point interpolated area under the precision-recall curve;
mAP@0.5 uses IoU 0.5, mAP@0.5:0.95 averages IoU 0.50, 0.55, ..., 0.95; the overall numbers average the
classes that have ground truth. Because the matching is per image, the per-image match tables are
computed once and re-used by the bootstrap over images (:func:`bootstrap_map`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

IOU_THRESHOLDS = np.round(np.arange(0.5, 0.951, 0.05), 2)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)


def box_iou_np(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), dtype=np.float64)
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


@dataclass
class ImageMatches:
    """Per class: detection scores (sorted desc), TP flags per IoU threshold (T, D), number of GT boxes."""

    scores: list[np.ndarray]
    tp: list[np.ndarray]
    n_gt: np.ndarray


def match_image(
    det_boxes: np.ndarray,
    det_scores: np.ndarray,
    det_labels: np.ndarray,
    gt_boxes: np.ndarray,
    gt_labels: np.ndarray,
    num_classes: int,
    iou_thresholds: np.ndarray = IOU_THRESHOLDS,
    max_dets: int = 100,
) -> ImageMatches:
    order = np.argsort(-det_scores, kind="stable")[:max_dets]
    det_boxes, det_scores, det_labels = det_boxes[order], det_scores[order], det_labels[order]
    scores, tps, n_gt = [], [], np.zeros(num_classes, dtype=np.int64)
    for c in range(num_classes):
        d = det_labels == c
        g = gt_labels == c
        db, ds, gb = det_boxes[d], det_scores[d], gt_boxes[g]
        n_gt[c] = len(gb)
        tp = np.zeros((len(iou_thresholds), len(db)), dtype=bool)
        if len(db) and len(gb):
            iou = box_iou_np(db, gb)
            for ti, t in enumerate(iou_thresholds):
                taken = np.zeros(len(gb), dtype=bool)
                for di in range(len(db)):
                    cand = np.where(~taken, iou[di], -1.0)
                    j = int(cand.argmax())
                    if cand[j] >= t:
                        taken[j] = True
                        tp[ti, di] = True
        scores.append(ds.astype(np.float64))
        tps.append(tp)
    return ImageMatches(scores, tps, n_gt)


def _ap_from(scores: np.ndarray, tp: np.ndarray, n_gt: int) -> tuple[float, np.ndarray, np.ndarray]:
    """AP for one class and threshold; also the (recall, precision) curve."""
    if n_gt == 0:
        return float("nan"), np.zeros(0), np.zeros(0)
    if len(scores) == 0:
        return 0.0, np.zeros(0), np.zeros(0)
    order = np.argsort(-scores, kind="mergesort")
    tpc = np.cumsum(tp[order])
    fpc = np.cumsum(~tp[order])
    recall = tpc / n_gt
    precision = tpc / np.maximum(tpc + fpc, 1e-12)
    # precision envelope
    env = np.maximum.accumulate(precision[::-1])[::-1]
    idx = np.searchsorted(recall, RECALL_POINTS, side="left")
    q = np.where(idx < len(env), env[np.minimum(idx, len(env) - 1)], 0.0)
    return float(q.mean()), recall, precision


def aggregate(
    matches: Sequence[ImageMatches], num_classes: int, weights: np.ndarray | None = None, curves: bool = False
) -> dict:
    """AP per class and IoU threshold from per-image matches; ``weights`` = image multiplicities."""
    n_t = len(IOU_THRESHOLDS)
    ap = np.full((num_classes, n_t), np.nan)
    pr_curves: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for c in range(num_classes):
        sc, tp, n_gt = [], [], 0
        for i, m in enumerate(matches):
            w = 1 if weights is None else int(weights[i])
            if w == 0:
                continue
            n_gt += w * int(m.n_gt[c])
            if len(m.scores[c]):
                sc.extend([m.scores[c]] * w)
                tp.extend([m.tp[c]] * w)
        s = np.concatenate(sc) if sc else np.zeros(0)
        t = np.concatenate(tp, axis=1) if tp else np.zeros((n_t, 0), dtype=bool)
        for ti in range(n_t):
            a, r, p = _ap_from(s, t[ti], n_gt)
            ap[c, ti] = a
            if curves and ti == 0:
                pr_curves[c] = (r, p)
    ap50_95 = np.array([row.mean() if np.isfinite(row).all() else np.nan for row in ap])
    out = {
        "ap50": ap[:, 0],
        "ap50_95": ap50_95,
        "ap75": ap[:, list(IOU_THRESHOLDS).index(0.75)],
    }
    with np.errstate(all="ignore"):
        out["map50"] = float(np.nanmean(out["ap50"])) if np.isfinite(out["ap50"]).any() else float("nan")
        out["map50_95"] = float(np.nanmean(out["ap50_95"])) if np.isfinite(out["ap50_95"]).any() else float("nan")
        out["map75"] = float(np.nanmean(out["ap75"])) if np.isfinite(out["ap75"]).any() else float("nan")
    if curves:
        out["pr_curves"] = pr_curves
    return out


def compute_matches(
    detections: Sequence[dict], ground_truth: Sequence[tuple[np.ndarray, np.ndarray]], num_classes: int
) -> list[ImageMatches]:
    """detections: dicts with ``boxes`` (normalised xyxy), ``scores``, ``labels``; ground_truth: (boxes, labels)."""
    return [
        match_image(
            np.asarray(d["boxes"], dtype=np.float64).reshape(-1, 4),
            np.asarray(d["scores"], dtype=np.float64),
            np.asarray(d["labels"], dtype=np.int64),
            np.asarray(g[0], dtype=np.float64).reshape(-1, 4),
            np.asarray(g[1], dtype=np.int64),
            num_classes,
        )
        for d, g in zip(detections, ground_truth, strict=True)
    ]


def mean_ap(detections, ground_truth, num_classes: int, curves: bool = False) -> dict:
    return aggregate(compute_matches(detections, ground_truth, num_classes), num_classes, curves=curves)


def bootstrap_map(
    matches: Sequence[ImageMatches], num_classes: int, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05
) -> dict:
    """Percentile 95% CIs (bootstrap over images) for mAP@0.5, mAP@0.5:0.95 and per-class APs."""
    rng = np.random.default_rng(seed)
    n = len(matches)
    m50, m5095, c50, c5095 = [], [], [], []
    for _ in range(n_boot):
        w = np.bincount(rng.integers(0, n, n), minlength=n)
        r = aggregate(matches, num_classes, weights=w)
        m50.append(r["map50"])
        m5095.append(r["map50_95"])
        c50.append(r["ap50"])
        c5095.append(r["ap50_95"])

    def ci(values) -> list[float]:
        arr = np.asarray(values, dtype=float)
        arr = arr[np.isfinite(arr)]
        if not len(arr):
            return [float("nan"), float("nan")]
        return [float(np.quantile(arr, alpha / 2)), float(np.quantile(arr, 1 - alpha / 2))]

    c50a, c5095a = np.asarray(c50), np.asarray(c5095)
    return {
        "map50": ci(m50),
        "map50_95": ci(m5095),
        "ap50": [ci(c50a[:, c]) for c in range(num_classes)],
        "ap50_95": [ci(c5095a[:, c]) for c in range(num_classes)],
        "n_boot": n_boot,
        "method": "percentile bootstrap over images",
    }
