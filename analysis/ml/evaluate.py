"""Held-out evaluation, plots, shortcut audit and artefact export.

Metrics (test split = groups never seen in training or calibration):
per-class and macro ROC-AUC and PR-AUC (average precision); F1, sensitivity, specificity at the shipped
thresholds; expected calibration error (15 equal-width bins over all image x label probabilities, and per
label); 95% bootstrap intervals obtained by resampling *groups* (near-duplicate clusters) with replacement.

Shortcut audit:
(a) the same metrics when every test image is centre-cropped to a square and resized identically
    (removes aspect-ratio / framing differences between sources);
(b) a gradient-boosting model that sees only file/acquisition metadata (image width and height, original
    width and height, aspect ratio, file size, JPEG quantisation-table quality estimate, mean and std of
    each colour channel), trained on the train+validation groups and scored on the same test groups.
    The closer the image model's numbers are to (b), the more it could be explained by such cues.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from core import conditions

from .data import Record, targets
from .train import (
    apply_calibration,
    config_from_run,
    load_or_build_cache,
    load_run_model,
    predict_logits,
    prepare,
)
from .transforms import EVAL_PREPROCESSING

N_BINS = 15


# ----------------------------------------------------------------------------- metric primitives


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    from scipy.stats import rankdata

    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _ap(y: np.ndarray, s: np.ndarray) -> float:
    if y.sum() == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    ys = y[order]
    tp = np.cumsum(ys)
    # handle ties like sklearn: evaluate at distinct score thresholds
    distinct = np.r_[np.nonzero(np.diff(s[order]))[0], len(ys) - 1]
    tp = tp[distinct]
    fp = (distinct + 1) - tp
    precision = tp / (tp + fp)
    recall = tp / ys.sum()
    recall_prev = np.r_[0.0, recall[:-1]]
    return float(np.sum((recall - recall_prev) * precision))


def _confusion(y: np.ndarray, pred: np.ndarray) -> dict:
    tp = int(((pred == 1) & (y == 1)).sum())
    fp = int(((pred == 1) & (y == 0)).sum())
    fn = int(((pred == 0) & (y == 1)).sum())
    tn = int(((pred == 0) & (y == 0)).sum())
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn}


def _rates(c: dict) -> dict:
    tp, fp, fn, tn = c["tp"], c["fp"], c["fn"], c["tn"]
    sens = tp / (tp + fn) if tp + fn else float("nan")
    spec = tn / (tn + fp) if tn + fp else float("nan")
    prec = tp / (tp + fp) if tp + fp else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else float("nan")
    return {"f1": f1, "sensitivity": sens, "specificity": spec, "precision": prec}


def ece(y: np.ndarray, p: np.ndarray, n_bins: int = N_BINS) -> float:
    y, p = np.asarray(y, float).ravel(), np.asarray(p, float).ravel()
    if len(p) == 0:
        return float("nan")
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        m = bins == b
        if m.any():
            total += m.sum() * abs(y[m].mean() - p[m].mean())
    return float(total / len(p))


def reliability_table(y: np.ndarray, p: np.ndarray, n_bins: int = N_BINS) -> list[dict]:
    y, p = np.asarray(y, float).ravel(), np.asarray(p, float).ravel()
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    rows = []
    for b in range(n_bins):
        m = bins == b
        if m.any():
            rows.append(
                {"bin": b, "count": int(m.sum()), "confidence": float(p[m].mean()), "accuracy": float(y[m].mean())}
            )
    return rows


def _nanmean(v) -> float:
    a = np.asarray(v, float)
    return float(np.nanmean(a)) if np.isfinite(a).any() else float("nan")


def point_metrics(y: np.ndarray, p: np.ndarray, thresholds: dict[str, float], labels: Sequence[str]) -> dict:
    per = {}
    for c, name in enumerate(labels):
        pred = (p[:, c] >= thresholds[name]).astype(int)
        conf = _confusion(y[:, c], pred)
        per[name] = {
            "roc_auc": _auc(y[:, c], p[:, c]),
            "pr_auc": _ap(y[:, c], p[:, c]),
            **_rates(conf),
            "ece": ece(y[:, c], p[:, c]),
            "threshold": thresholds[name],
            "confusion": conf,
            "positives": int(y[:, c].sum()),
            "n": len(y),
        }
    out = {"per_class": per}
    for key in ("roc_auc", "pr_auc", "f1", "sensitivity", "specificity"):
        out[f"macro_{key}"] = _nanmean([per[n][key] for n in labels])
    out["ece"] = ece(y, p)
    healthy = y.sum(1) == 0
    any_finding = np.zeros(len(y), bool)
    for c, name in enumerate(labels):
        any_finding |= p[:, c] >= thresholds[name]
    out["healthy_images"] = int(healthy.sum())
    out["healthy_false_alarm_rate"] = float(any_finding[healthy].mean()) if healthy.any() else float("nan")
    out["exact_match"] = float(np.mean(np.all((p >= np.array([thresholds[n] for n in labels])) == (y == 1), axis=1)))
    return out


def bootstrap_ci(
    y: np.ndarray,
    p: np.ndarray,
    groups: Sequence[str],
    thresholds: dict[str, float],
    labels: Sequence[str],
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """95% percentile intervals from resampling groups with replacement."""
    rng = np.random.default_rng(seed)
    uniq, inv = np.unique(np.asarray(groups), return_inverse=True)
    members = [np.nonzero(inv == g)[0] for g in range(len(uniq))]
    keys = ("roc_auc", "pr_auc", "f1", "sensitivity", "specificity")
    samples: dict[str, list[float]] = {}
    for _ in range(n_boot):
        pick = rng.integers(0, len(uniq), len(uniq))
        idx = np.concatenate([members[g] for g in pick])
        yy, pp = y[idx], p[idx]
        per_vals = {k: [] for k in keys}
        for c, name in enumerate(labels):
            pred = (pp[:, c] >= thresholds[name]).astype(int)
            r = _rates(_confusion(yy[:, c], pred))
            vals = {"roc_auc": _auc(yy[:, c], pp[:, c]), "pr_auc": _ap(yy[:, c], pp[:, c]), **r}
            for k in keys:
                samples.setdefault(f"{name}.{k}", []).append(vals[k])
                per_vals[k].append(vals[k])
        for k in keys:
            samples.setdefault(f"macro_{k}", []).append(_nanmean(per_vals[k]))
        samples.setdefault("ece", []).append(ece(yy, pp))
    out = {}
    for key, vals in samples.items():
        a = np.asarray(vals, float)
        a = a[np.isfinite(a)]
        out[key] = [float(np.percentile(a, 2.5)), float(np.percentile(a, 97.5))] if len(a) else [None, None]
    return out


def full_metrics(y, p, groups, thresholds, labels, n_boot=1000) -> dict:
    m = point_metrics(y, p, thresholds, labels)
    if n_boot:
        ci = bootstrap_ci(y, p, groups, thresholds, labels, n_boot=n_boot)
        m["ci95"] = ci
        for name in labels:
            m["per_class"][name]["ci95"] = {k.split(".", 1)[1]: v for k, v in ci.items() if k.startswith(name + ".")}
        m["bootstrap"] = {"n": n_boot, "unit": "group (near-duplicate cluster)", "interval": "percentile 2.5-97.5"}
    return m


# ----------------------------------------------------------------------------- plots


def make_plots(
    y: np.ndarray, p: np.ndarray, thresholds: dict[str, float], labels: Sequence[str], out: Path
) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve, roc_curve

    out.mkdir(parents=True, exist_ok=True)
    written = []

    def save(fig, name):
        path = out / name
        fig.savefig(path, dpi=80, bbox_inches="tight")
        plt.close(fig)
        written.append(str(path))

    fig, axes = plt.subplots(1, len(labels), figsize=(3.2 * len(labels), 3.2))
    for ax, (c, name) in zip(np.atleast_1d(axes), enumerate(labels), strict=True):
        if 0 < y[:, c].sum() < len(y):
            fpr, tpr, _ = roc_curve(y[:, c], p[:, c])
            ax.plot(fpr, tpr, lw=1.5)
            pred = p[:, c] >= thresholds[name]
            sens = (pred & (y[:, c] == 1)).sum() / max(1, y[:, c].sum())
            fpr_t = (pred & (y[:, c] == 0)).sum() / max(1, (y[:, c] == 0).sum())
            ax.plot([fpr_t], [sens], "o", color="C3", ms=4, label="threshold")
            ax.set_title(f"{name} AUC={_auc(y[:, c], p[:, c]):.3f}", fontsize=9)
        ax.plot([0, 1], [0, 1], ":", color="grey", lw=0.8)
        ax.set_xlabel("1 - specificity", fontsize=8)
        ax.set_ylabel("sensitivity", fontsize=8)
        ax.tick_params(labelsize=7)
    save(fig, "roc.png")

    fig, axes = plt.subplots(1, len(labels), figsize=(3.2 * len(labels), 3.2))
    for ax, (c, name) in zip(np.atleast_1d(axes), enumerate(labels), strict=True):
        if y[:, c].sum() > 0:
            prec, rec, _ = precision_recall_curve(y[:, c], p[:, c])
            ax.plot(rec, prec, lw=1.5)
            ax.set_title(f"{name} AP={_ap(y[:, c], p[:, c]):.3f}", fontsize=9)
        ax.set_xlabel("recall", fontsize=8)
        ax.set_ylabel("precision", fontsize=8)
        ax.set_ylim(0, 1.02)
        ax.tick_params(labelsize=7)
    save(fig, "pr.png")

    fig, axes = plt.subplots(1, len(labels), figsize=(2.6 * len(labels), 2.6))
    for ax, (c, name) in zip(np.atleast_1d(axes), enumerate(labels), strict=True):
        pred = (p[:, c] >= thresholds[name]).astype(int)
        conf = _confusion(y[:, c], pred)
        mat = np.array([[conf["tn"], conf["fp"]], [conf["fn"], conf["tp"]]])
        ax.imshow(mat, cmap="Blues")
        for (i, j), v in np.ndenumerate(mat):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=9, color="white" if v > mat.max() / 2 else "black")
        ax.set_xticks([0, 1], ["pred -", "pred +"], fontsize=7)
        ax.set_yticks([0, 1], ["true -", "true +"], fontsize=7)
        ax.set_title(f"{name} (t={thresholds[name]:.2f})", fontsize=9)
    save(fig, "confusion.png")

    fig, ax = plt.subplots(figsize=(3.6, 3.6))
    ax.plot([0, 1], [0, 1], ":", color="grey", lw=0.8)
    rows = reliability_table(y, p)
    ax.plot([r["confidence"] for r in rows], [r["accuracy"] for r in rows], "o-", ms=3, label="all labels")
    for c, name in enumerate(labels):
        rc = reliability_table(y[:, c], p[:, c], n_bins=10)
        ax.plot([r["confidence"] for r in rc], [r["accuracy"] for r in rc], lw=0.8, alpha=0.7, label=name)
    ax.set_xlabel("predicted probability", fontsize=8)
    ax.set_ylabel("observed frequency", fontsize=8)
    ax.set_title(f"Reliability (ECE={ece(y, p):.3f})", fontsize=9)
    ax.legend(fontsize=6)
    ax.tick_params(labelsize=7)
    save(fig, "reliability.png")
    return written


# ----------------------------------------------------------------------------- shortcut audit (b)


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
    from PIL import Image

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
    from sklearn.ensemble import HistGradientBoostingClassifier

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
            aucs[name] = _auc(y[test_idx, c], s)
        out[subset_name] = {
            "roc_auc": aucs,
            "macro_roc_auc": _nanmean([aucs[n] for n in labels]),
            "macro_roc_auc_incl_healthy": _nanmean(list(aucs.values())),
        }
    out["model"] = "sklearn HistGradientBoostingClassifier (200 iterations, lr 0.05), one per label"
    return out


# ----------------------------------------------------------------------------- artefact


def hardware_description() -> str:
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {len(os.sched_getaffinity(0))} CPU cores, {gpu}"


def _is_shared_photo_manifest(data: str) -> bool:
    from .data import photo_manifest_path

    try:
        return Path(data).resolve() == photo_manifest_path().resolve() or (
            Path(data).name == "manifest.csv" and Path(data).parent.name == "intraoral-photos"
        )
    except OSError:
        return False


def json_safe(obj):
    """Replace NaN/inf (undefined metrics, e.g. AUC without positives) by None so the JSON is strict."""
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.floating | np.integer):
        return json_safe(obj.item())
    return obj


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_weights_fp16(state: dict, path: Path) -> None:
    half = {k: (v.detach().half() if v.is_floating_point() else v.detach()).contiguous() for k, v in state.items()}
    buf = io.BytesIO()
    torch.save(half, buf)
    Path(path).write_bytes(buf.getvalue())


def export_artifact(
    artifact_dir: str | Path,
    state_dict: dict,
    *,
    labels: Sequence[str],
    thresholds: dict[str, float],
    temperature: dict[str, float],
    logit_bias: dict[str, float],
    input_size: int,
    tta: str = "",
    name: str = "photo-effnetlite0",
    version: str = "1.0.0",
    metrics_summary: dict | None = None,
    created: str | None = None,
) -> dict:
    """Write ``weights.pt`` (fp16 state dict) and ``model.json``; returns the model.json content."""
    artifact_dir = Path(artifact_dir)
    artifact_dir.mkdir(parents=True, exist_ok=True)
    weights = artifact_dir / "weights.pt"
    save_weights_fp16(state_dict, weights)
    model_json = {
        "name": name,
        "version": version,
        "modality": "photo",
        "architecture": "EfficientNet-Lite0 (ImageNet-pretrained) + GAP + dropout + linear, multi-label sigmoid",
        "labels": list(labels),
        # the platform's condition code of each label (core.conditions; the registry refuses an unmapped label)
        "condition_codes": {label: conditions.canonical(label) for label in labels},
        "thresholds": {k: float(v) for k, v in thresholds.items()},
        "temperature": {k: float(v) for k, v in temperature.items()},
        "logit_bias": {k: float(v) for k, v in logit_bias.items()},
        "calibration": "p = sigmoid(logit / temperature[label] + logit_bias[label])",
        "input_size": int(input_size),
        "preprocessing": EVAL_PREPROCESSING.format(size=input_size)
        + (
            "; test-time augmentation: mean of the logits (and maps) of the image and its horizontal mirror"
            if tta == "hflip"
            else ""
        ),
        "tta": tta,
        "mean": [0.5, 0.5, 0.5],
        "std": [0.5, 0.5, 0.5],
        "weights_file": "weights.pt",
        "weights_dtype": "float16",
        "weights_sha256": sha256_file(weights),
        "explain": f"class-activation map (Grad-CAM equivalent for GAP+linear head) on the "
        f"{input_size // 32}x{input_size // 32} final feature grid, upsampled to a 28x28 heatmap; "
        "box = largest region >= 0.5 of the map maximum",
        "healthy_definition": "no label at or above its threshold",
        "metrics": metrics_summary or {},
        "created": created or datetime.now(UTC).isoformat(timespec="seconds"),
    }
    (artifact_dir / "model.json").write_text(json.dumps(json_safe(model_json), indent=2, allow_nan=False))
    return model_json


def summary_of(m: dict, labels: Sequence[str]) -> dict:
    keep = ("roc_auc", "pr_auc", "f1", "sensitivity", "specificity", "ece")
    s = {
        k: m[k]
        for k in (
            "macro_roc_auc",
            "macro_pr_auc",
            "macro_f1",
            "macro_sensitivity",
            "macro_specificity",
            "ece",
            "healthy_false_alarm_rate",
        )
    }
    s["per_class"] = {n: {k: m["per_class"][n][k] for k in keep} for n in labels}
    if "ci95" in m:
        s["ci95"] = {k: m["ci95"][k] for k in ("macro_roc_auc", "macro_f1", "ece")}
    return s


def evaluate_run(
    run_dir: str | Path,
    artifact_dir: str | Path,
    version: str = "1.0.0",
    name: str = "photo-effnetlite0",
    audit: bool = True,
    n_boot: int = 1000,
    card: bool = True,
    log=print,
) -> dict:
    run_dir, artifact_dir = Path(run_dir), Path(artifact_dir)
    cfg = config_from_run(run_dir)
    torch.set_num_threads(cfg.threads)
    cal = json.loads((run_dir / "calibration.json").read_text())
    labels = cfg.labels
    temps = [cal["temperature"][n] for n in labels]
    biases = [cal["logit_bias"][n] for n in labels]
    thresholds = cal["thresholds"]
    tta = cal.get("tta", "")
    records, tr, va, te = prepare(cfg)
    split_file = run_dir / "split.json"
    if split_file.exists():
        saved = json.loads(split_file.read_text())
        for part, idx in (("train", tr), ("val", va), ("test", te)):
            if [row["file"] for row in saved[part]] != [str(records[i].path) for i in idx]:
                raise RuntimeError(f"recomputed {part} split differs from {split_file}")
    test_recs = [records[i] for i in te]
    y = targets(test_recs, labels)
    groups = [r.group for r in test_recs]
    model, ck = load_run_model(run_dir, cfg, cal.get("checkpoint", "best.pt"))

    log("test split: predicting")
    test_imgs = load_or_build_cache(run_dir / "cache_test.pt", test_recs, cfg.input_size, "eval")
    probs = apply_calibration(predict_logits(model, test_imgs, channels_last=cfg.channels_last, tta=tta), temps, biases)
    metrics = full_metrics(y, probs, groups, thresholds, labels, n_boot=n_boot)

    by_source = {}
    for src in sorted({r.source for r in test_recs}):
        idx = [i for i, r in enumerate(test_recs) if r.source == src]
        pm = point_metrics(y[idx], probs[idx], thresholds, labels)
        by_source[src] = {
            "n": len(idx),
            "macro_roc_auc": pm["macro_roc_auc"],
            "macro_f1": pm["macro_f1"],
            "healthy_false_alarm_rate": pm["healthy_false_alarm_rate"],
            "roc_auc": {n: pm["per_class"][n]["roc_auc"] for n in labels},
        }

    result: dict = {
        "model": f"{name}@{version}",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "labels": labels,
        "split": {
            "train": len(tr),
            "val": len(va),
            "test": len(te),
            "test_groups": len(set(groups)),
            "seed": cfg.seed,
            "method": "group-aware (near-duplicate clusters), stratified by label set",
        },
        "data": {
            "name": Path(cfg.data).name,
            "shared_intraoral_photos": _is_shared_photo_manifest(cfg.data),
            "images": len(records),
        },
        "test": metrics,
        "test_by_source": by_source,
        "calibration": {
            "tta": tta,
            "val_macro_auc_by_tta": cal.get("val_macro_auc_by_tta", {}),
            "method": "per-class temperature + offset (Platt) fitted on validation",
            "temperature": cal["temperature"],
            "logit_bias": cal["logit_bias"],
        },
        "thresholds": thresholds,
        "threshold_rule": cal.get("threshold_rule", ""),
        "training": {
            "config": {
                k: v
                for k, v in json.loads((run_dir / "config.json").read_text()).items()
                if k not in ("data", "run_dir")
            },
            "best_epoch": ck.get("epoch"),
            "history": json.loads((run_dir / "history.json").read_text())
            if (run_dir / "history.json").exists()
            else [],
        },
        "reliability": reliability_table(y, probs),
        "hardware": hardware_description(),
        "torch_version": torch.__version__,
    }

    if audit:
        log("shortcut audit (a): centre-crop square")
        crop_imgs = load_or_build_cache(run_dir / "cache_test_crop.pt", test_recs, cfg.input_size, "crop")
        crop_probs = apply_calibration(
            predict_logits(model, crop_imgs, channels_last=cfg.channels_last, tta=tta), temps, biases
        )
        crop = full_metrics(y, crop_probs, groups, thresholds, labels, n_boot=min(n_boot, 200))
        log("shortcut audit (b): metadata-only model")
        meta = metadata_shortcut_audit(records, list(tr) + list(va), list(te), labels)
        result["shortcut_audit"] = {
            "center_crop_square": {
                k: crop[k] for k in ("macro_roc_auc", "macro_pr_auc", "macro_f1", "ece", "healthy_false_alarm_rate")
            }
            | {
                "per_class_roc_auc": {n: crop["per_class"][n]["roc_auc"] for n in labels},
                "per_class_f1": {n: crop["per_class"][n]["f1"] for n in labels},
                "ci95": {k: crop["ci95"][k] for k in ("macro_roc_auc", "macro_f1")} if "ci95" in crop else {},
            },
            "metadata_only": meta,
        }

    result["plots"] = [
        str(Path(p).relative_to(artifact_dir)) for p in make_plots(y, probs, thresholds, labels, artifact_dir / "plots")
    ]
    result["summary"] = summary_of(metrics, labels)
    if audit:
        result["summary"]["shortcut_audit"] = {
            "center_crop_macro_roc_auc": result["shortcut_audit"]["center_crop_square"]["macro_roc_auc"],
            "center_crop_macro_f1": result["shortcut_audit"]["center_crop_square"]["macro_f1"],
            "metadata_only_macro_roc_auc": result["shortcut_audit"]["metadata_only"]["all_metadata"]["macro_roc_auc"],
        }
    export_artifact(
        artifact_dir,
        ck["model"],
        labels=labels,
        thresholds=thresholds,
        temperature=cal["temperature"],
        logit_bias=cal["logit_bias"],
        input_size=cfg.input_size,
        tta=tta,
        name=name,
        version=version,
        metrics_summary=result["summary"],
        created=result["created"],
    )
    (artifact_dir / "metrics.json").write_text(json.dumps(json_safe(result), indent=2, allow_nan=False))
    if card:
        from .card import write_card

        write_card(artifact_dir)
    log(f"artefact written to {artifact_dir}")
    return result
