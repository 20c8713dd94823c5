"""Evaluation and export of the X-ray findings detector.

``evaluate_detector_run`` loads a run's checkpoint (round-tripped through fp16, i.e. exactly the shipped
weights), predicts the group-aware validation split and the test folder, computes COCO-style mAP@0.5
and mAP@0.5:0.95 overall and per class with percentile-bootstrap 95% CIs over images, draws PR curves,
checks which test images share a source prefix (and near-identical pixels) with training images, and
writes the artefact folder: ``weights.pt`` (fp16 state dict), ``model.json``, ``metrics.json``,
``plots/*.png`` and ``MODEL_CARD.md``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core import conditions

from .artifacts import hardware_description, json_safe, sha256_file, write_json, write_weights
from .detect_card import write_xray_card
from .detect_metrics import IOU_THRESHOLDS, ImageMatches, aggregate, bootstrap_map, compute_matches, mean_ap
from .detect_train import DetTrainConfig, config_from_run, load_or_build_cache, predict_cached, prepare
from .detection import FPN_CHANNELS, PREPROCESSING, build_detector, select_device
from .yolo import DetRecord, class_counts, read_yolo_split, shared_groups

ARCHITECTURE = (
    "torchvision FCOS (anchor-free, GroupNorm heads, focal loss + GIoU + centerness) on an ImageNet-pretrained "
    "EfficientNet-Lite0 trunk (stride 8/16/32 features) + FPN with {ch} channels and P6/P7"
)


def load_detector_checkpoint(run_dir: Path, cfg: DetTrainConfig, which: str = "best.pt", fp16_roundtrip=True):
    ck = torch.load(Path(run_dir) / which, map_location="cpu", weights_only=False)
    model = build_detector(len(cfg.labels), cfg.input_size, pretrained=False)
    state = ck["model"]
    if fp16_roundtrip:  # evaluate exactly what is shipped
        state = {k: (v.half().float() if v.is_floating_point() else v) for k, v in state.items()}
    model.load_state_dict(state)
    model.eval()
    return model, ck


def f1_thresholds(matches: Sequence[ImageMatches], labels: Sequence[str]) -> dict[str, float]:
    """Per-class score threshold maximising F1 at IoU 0.5 (validation); 0.5 where undefined."""
    out = {}
    for c, name in enumerate(labels):
        scores = np.concatenate([m.scores[c] for m in matches]) if matches else np.zeros(0)
        tp = np.concatenate([m.tp[c][0] for m in matches]) if matches else np.zeros(0, bool)
        n_gt = int(sum(int(m.n_gt[c]) for m in matches))
        if not len(scores) or not n_gt:
            out[name] = 0.5
            continue
        order = np.argsort(-scores, kind="mergesort")
        s, t = scores[order], tp[order]
        tpc = np.cumsum(t)
        fpc = np.cumsum(~t)
        prec = tpc / (tpc + fpc)
        rec = tpc / n_gt
        f1 = 2 * prec * rec / np.maximum(prec + rec, 1e-12)
        i = int(np.argmax(f1))
        out[name] = round(float(s[i]), 4)
    return out


def operating_point(matches: Sequence[ImageMatches], labels: Sequence[str], thresholds: dict[str, float]) -> dict:
    """Precision / recall / F1 at IoU 0.5 at the given per-class score thresholds."""
    out = {}
    for c, name in enumerate(labels):
        thr = thresholds[name]
        tp = fp = 0
        n_gt = 0
        for m in matches:
            keep = m.scores[c] >= thr
            tp += int(m.tp[c][0][keep].sum())
            fp += int((~m.tp[c][0][keep]).sum())
            n_gt += int(m.n_gt[c])
        p = tp / (tp + fp) if tp + fp else float("nan")
        r = tp / n_gt if n_gt else float("nan")
        f1 = 2 * p * r / (p + r) if (tp and n_gt) else 0.0
        out[name] = {"threshold": thr, "precision": p, "recall": r, "f1": f1, "tp": tp, "fp": fp, "gt": n_gt}
    return out


def summarise(matches: Sequence[ImageMatches], labels: Sequence[str], n_boot: int, seed: int = 0) -> dict:
    agg = aggregate(matches, len(labels))
    res = {
        "images": len(matches),
        "map50": agg["map50"],
        "map50_95": agg["map50_95"],
        "map75": agg["map75"],
        "per_class": {
            name: {
                "ap50": float(agg["ap50"][c]),
                "ap50_95": float(agg["ap50_95"][c]),
                "ap75": float(agg["ap75"][c]),
                "gt_boxes": int(sum(int(m.n_gt[c]) for m in matches)),
                "gt_images": int(sum(int(m.n_gt[c] > 0) for m in matches)),
            }
            for c, name in enumerate(labels)
        },
    }
    if n_boot and matches:
        b = bootstrap_map(matches, len(labels), n_boot=n_boot, seed=seed)
        res["ci95"] = {"map50": b["map50"], "map50_95": b["map50_95"], "method": b["method"], "n_boot": n_boot}
        for c, name in enumerate(labels):
            res["per_class"][name]["ap50_ci95"] = b["ap50"][c]
            res["per_class"][name]["ap50_95_ci95"] = b["ap50_95"][c]
    return res


def pr_plot(matches: Sequence[ImageMatches], labels: Sequence[str], title: str, path: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    agg = aggregate(matches, len(labels), curves=True)
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    for c, name in enumerate(labels):
        r, p = agg["pr_curves"].get(c, (np.zeros(0), np.zeros(0)))
        if len(r):
            env = np.maximum.accumulate(p[::-1])[::-1]
            ax.plot(r, env, lw=1.6, label=f"{name} AP50={agg['ap50'][c]:.3f}")
        else:
            ax.plot([], [], label=f"{name} (no GT)" if not np.isfinite(agg["ap50"][c]) else f"{name} AP50=0")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision (interpolated)")
    ax.set_title(f"{title}: mAP@0.5={agg['map50']:.3f}, mAP@0.5:0.95={agg['map50_95']:.3f}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return str(path)


def training_plot(history: Sequence[dict], path: Path) -> str | None:
    if not history:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] + 1 for h in history]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.4))
    ax[0].plot(ep, [sum(h["train_loss"].values()) for h in history], marker="o")
    ax[0].set_title("training loss (sum)")
    ax[0].set_xlabel("epoch")
    ax[1].plot(ep, [h["val_map50"] for h in history], marker="o", label="val mAP@0.5")
    ax[1].plot(ep, [h["val_map50_95"] for h in history], marker="o", label="val mAP@0.5:0.95")
    ax[1].set_xlabel("epoch")
    ax[1].set_ylim(0, 1)
    ax[1].legend(fontsize=8)
    ax[1].grid(alpha=0.3)
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)
    return str(path)


def _thumbs(records: Sequence[DetRecord], size: int = 32) -> np.ndarray:
    out = np.zeros((len(records), size * size), dtype=np.float32)
    for i, r in enumerate(records):
        with Image.open(r.path) as im:
            a = np.asarray(im.convert("L").resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)
        a = a.ravel() - a.mean()
        out[i] = a / max(float(np.linalg.norm(a)), 1e-6)
    return out


NEAR_DUPLICATE_CORR = 0.98


def overlap_report(train: Sequence[DetRecord], test: Sequence[DetRecord]) -> dict:
    """Which ``test`` images share a Roboflow source prefix with ``train`` images, and which have a
    near-identical training image (thumbnail correlation >= ``NEAR_DUPLICATE_CORR``, the mirrored image
    included, since Roboflow copies may be flipped)."""
    shared = shared_groups(train, test)
    tr_t = _thumbs(train)
    te_t = _thumbs(test)
    te_m = _thumbs_mirror(test)
    plain = te_t @ tr_t.T
    mirrored = te_m @ tr_t.T
    corr = np.maximum(plain, mirrored)  # (n_test, n_train)
    tr_groups = np.array([r.group for r in train])
    same, other, per_image = [], [], []
    for i, r in enumerate(test):
        mask = tr_groups == r.group
        if mask.any():
            same.append(float(corr[i, mask].max()))
        if (~mask).any():
            other.append(float(corr[i, ~mask].max()))
        j = int(corr[i].argmax()) if corr.shape[1] else -1
        best = float(corr[i, j]) if j >= 0 else float("nan")
        per_image.append(
            {
                "file": r.path.name,
                "prefix_in_train": bool(mask.any()),
                "best_train_corr": round(best, 4),
                "best_train_file": train[j].path.name if j >= 0 else None,
                "best_is_mirrored": bool(j >= 0 and mirrored[i, j] > plain[i, j]),
                "near_duplicate": bool(best >= NEAR_DUPLICATE_CORR),
            }
        )
    return {
        "test_images": len(test),
        "test_source_prefixes": len({r.group for r in test}),
        "prefixes_shared_with_train": shared,
        "test_images_with_shared_prefix": int(sum(r.group in set(shared) for r in test)),
        "near_duplicate_threshold": NEAR_DUPLICATE_CORR,
        "test_images_with_near_duplicate_in_train": int(sum(x["near_duplicate"] for x in per_image)),
        "near_duplicates_mirrored": int(sum(x["near_duplicate"] and x["best_is_mirrored"] for x in per_image)),
        "max_thumb_corr_same_prefix": {
            "median": float(np.median(same)) if same else None,
            "min": float(np.min(same)) if same else None,
            "max": float(np.max(same)) if same else None,
        },
        "max_thumb_corr_any_other_train_image": {
            "median": float(np.median(other)) if other else None,
            "max": float(np.max(other)) if other else None,
        },
        "per_image": per_image,
        "method": "32x32 greyscale thumbnails, zero-mean unit-norm, Pearson correlation (also vs the mirror image)",
    }


def _thumbs_mirror(records: Sequence[DetRecord], size: int = 32) -> np.ndarray:
    t = _thumbs(records, size).reshape(len(records), size, size)[:, :, ::-1]
    return np.ascontiguousarray(t.reshape(len(records), -1))


def export_detector_artifact(
    artifact_dir: str | Path,
    state_dict: dict,
    *,
    labels: Sequence[str],
    thresholds: dict[str, float],
    input_size: int,
    name: str,
    version: str,
    cfg: DetTrainConfig | None = None,
    extra: dict | None = None,
) -> dict:
    """Write ``weights.pt`` (fp16 state dict) and ``model.json``; returns the model.json content."""
    artifact_dir = Path(artifact_dir)
    weights = write_weights(artifact_dir, state_dict)
    cfg = cfg or DetTrainConfig(data="", run_dir="", input_size=input_size)
    model_json = {
        "name": name,
        "version": version,
        "modality": "xray",
        "task": "detection",
        "architecture": ARCHITECTURE.format(ch=FPN_CHANNELS),
        "labels": list(labels),
        # the platform's condition code of each label (core.conditions; the registry refuses an unmapped label)
        "condition_codes": {label: conditions.canonical(label) for label in labels},
        "thresholds": dict(thresholds),
        "score_threshold": 0.001,
        "detections_per_img": 100,
        "nms_threshold": 0.6,
        "fpn_channels": FPN_CHANNELS,
        "input_size": input_size,
        "resize": "stretch",
        "preprocessing": PREPROCESSING.format(size=input_size),
        "mean": [0.5, 0.5, 0.5],
        "std": [0.5, 0.5, 0.5],
        "box_format": "[x, y, width, height] normalised to the original image (0..1), top-left origin",
        "augmentation": {
            "horizontal_flip": cfg.hflip,
            "scale": list(cfg.scale_range),
            "scale_p": cfg.scale_p,
            "brightness": cfg.brightness,
            "contrast": cfg.contrast,
            "jitter_p": cfg.jitter_p,
        },
        "weights_file": "weights.pt",
        "weights_dtype": "float16",
        "weights_sha256": sha256_file(weights),
    }
    model_json.update(extra or {})
    model_json.setdefault("created", datetime.now(UTC).isoformat(timespec="seconds"))
    write_json(artifact_dir / "model.json", model_json)
    return model_json


def evaluate_detector_run(
    run_dir: str | Path,
    artifact_dir: str | Path,
    *,
    test_data: str | Path | None,
    version: str = "1.0.0",
    name: str = "xray-fcos-effnetlite0",
    which: str = "best.pt",
    n_boot: int = 1000,
    device: str = "auto",
    card: bool = True,
    training_note: str = "",
    tta: str = "none",
    log=print,
) -> dict:
    run_dir, artifact_dir = Path(run_dir), Path(artifact_dir)
    cfg = config_from_run(run_dir)
    dev = select_device(device)
    if dev.type == "cpu":
        torch.set_num_threads(cfg.threads)
    labels = list(cfg.labels)
    records, tr, va = prepare(cfg)
    train_recs = [records[i] for i in tr]
    val_recs = [records[i] for i in va]
    model, ck = load_detector_checkpoint(run_dir, cfg, which)
    model.to(dev)

    val_imgs = load_or_build_cache(run_dir / "cache_val.pt", val_recs, cfg.input_size)
    val_gt = [(r.boxes, r.labels) for r in val_recs]
    t0 = time.time()
    val_dets = predict_cached(model, val_imgs, dev, desc="predict val")
    val_seconds = time.time() - t0
    tta_report = {"none": mean_ap(val_dets, val_gt, len(labels))["map50"]}
    if tta in ("auto", "hflip"):  # decided on validation only
        flip_dets = predict_cached(model, val_imgs, dev, desc="predict val (hflip)", tta="hflip")
        tta_report["hflip"] = mean_ap(flip_dets, val_gt, len(labels))["map50"]
        if tta == "hflip" or tta_report["hflip"] > tta_report["none"]:
            tta, val_dets = "hflip", flip_dets
    tta = "hflip" if tta == "hflip" else ""
    log(f"test-time augmentation: {tta or 'none'} (validation mAP@0.5 by choice: {tta_report})")
    val_matches = compute_matches(val_dets, val_gt, len(labels))
    thresholds = f1_thresholds(val_matches, labels)
    result: dict = {
        "model": f"{name}@{version}",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "labels": labels,
        "iou_thresholds": [float(t) for t in IOU_THRESHOLDS],
        "metric_definition": (
            "COCO-style: greedy matching per image (max 100 detections, highest score first) to the best "
            "unmatched same-class ground truth; 101-point interpolated AP; mAP = mean over classes with ground "
            "truth; mAP@0.5:0.95 averages IoU 0.50:0.05:0.95"
        ),
        "checkpoint": {"file": which, "epoch": ck.get("epoch"), "val_map50_at_training": ck.get("val_map50")},
        "tta": tta,
        "val_map50_by_tta": tta_report,
        "val": summarise(val_matches, labels, n_boot, seed=1),
        "thresholds": thresholds,
        "threshold_rule": "per class, the score maximising F1 at IoU 0.5 on the validation split",
    }
    result["val"]["operating_point"] = operating_point(val_matches, labels, thresholds)
    result["val"]["seconds_per_image"] = val_seconds / max(1, len(val_recs))
    plots = artifact_dir / "plots"
    written = [pr_plot(val_matches, labels, "validation (group split of train/)", plots / "pr_val.png")]
    log(f"val mAP@0.5={result['val']['map50']:.4f} mAP@0.5:0.95={result['val']['map50_95']:.4f}")

    test_recs: list[DetRecord] = []
    if test_data and Path(test_data).is_dir():
        test_recs = read_yolo_split(test_data, len(labels))
        test_imgs = load_or_build_cache(run_dir / "cache_test.pt", test_recs, cfg.input_size)
        test_dets = predict_cached(model, test_imgs, dev, desc="predict test", tta=tta)
        test_matches = compute_matches(test_dets, [(r.boxes, r.labels) for r in test_recs], len(labels))
        result["test"] = summarise(test_matches, labels, n_boot, seed=2)
        result["test"]["operating_point"] = operating_point(test_matches, labels, thresholds)
        result["test"]["folder"] = str(test_data)
        written.append(pr_plot(test_matches, labels, "test/ (shared test split)", plots / "pr_test.png"))
        overlap = overlap_report(train_recs + val_recs, test_recs)
        shared = set(overlap["prefixes_shared_with_train"])
        subsets = {
            "test_unshared_prefix_only": [i for i, r in enumerate(test_recs) if r.group not in shared],
            "test_without_near_duplicate": [i for i, x in enumerate(overlap["per_image"]) if not x["near_duplicate"]],
        }
        for key, idx in subsets.items():
            if idx and len(idx) < len(test_recs):
                sub = summarise([test_matches[i] for i in idx], labels, n_boot, seed=3)
                overlap[key] = {
                    "images": len(idx),
                    "map50": sub["map50"],
                    "map50_95": sub["map50_95"],
                    "map50_ci95": sub.get("ci95", {}).get("map50"),
                    "ap50": {k: v["ap50"] for k, v in sub["per_class"].items()},
                }
        result["test_train_overlap"] = overlap
        if val_recs:
            val_overlap = overlap_report(train_recs, val_recs)
            result["val_train_overlap"] = {
                k: val_overlap[k]
                for k in (
                    "test_images",
                    "test_images_with_near_duplicate_in_train",
                    "near_duplicate_threshold",
                    "max_thumb_corr_any_other_train_image",
                    "method",
                )
            }
        log(f"test mAP@0.5={result['test']['map50']:.4f} mAP@0.5:0.95={result['test']['map50_95']:.4f}")

    history = ck.get("history") or json.loads((run_dir / "history.json").read_text())
    if (p := training_plot(history, plots / "training.png")) is not None:
        written.append(p)
    last = (
        torch.load(run_dir / "last.pt", map_location="cpu", weights_only=False)
        if (run_dir / "last.pt").exists()
        else {}
    )
    history = last.get("history", history)
    summary_path = run_dir / "train_summary.json"
    train_summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    result["data"] = {
        "train_folder": cfg.data,
        "test_folder": str(test_data) if test_data else None,
        "split": "validation carved from train/ by Roboflow source prefix (text before '_jpg'), "
        f"val_fraction={cfg.val_fraction}, seed={cfg.seed}; no prefix is on both sides",
        "counts": {
            "train": {
                "images": len(train_recs),
                "groups": len({r.group for r in train_recs}),
                "classes": class_counts(train_recs, labels),
            },
            "val": {
                "images": len(val_recs),
                "groups": len({r.group for r in val_recs}),
                "classes": class_counts(val_recs, labels),
            },
            "test": {
                "images": len(test_recs),
                "groups": len({r.group for r in test_recs}),
                "classes": class_counts(test_recs, labels),
            },
        },
    }
    result["training"] = {
        "config": json.loads((run_dir / "config.json").read_text()),
        "history": history,
        "summary": train_summary,
        "hardware": last.get("hardware") or train_summary.get("hardware"),
        "machine": hardware_description(),
        "note": training_note,
    }
    result["evaluation_hardware"] = hardware_description()
    result["torch_version"] = torch.__version__
    result["plots"] = [str(Path(p).relative_to(artifact_dir)) for p in written]
    result["summary"] = {
        "val_map50": result["val"]["map50"],
        "val_map50_95": result["val"]["map50_95"],
        "val_map50_ci95": result["val"].get("ci95", {}).get("map50"),
        "test_map50": result.get("test", {}).get("map50"),
        "test_map50_95": result.get("test", {}).get("map50_95"),
        "test_map50_ci95": result.get("test", {}).get("ci95", {}).get("map50"),
        "per_class_ap50": {
            split: {k: v["ap50"] for k, v in result[split]["per_class"].items()}
            for split in ("val", "test")
            if split in result
        },
    }

    export_detector_artifact(
        artifact_dir,
        ck["model"],
        labels=labels,
        thresholds=thresholds,
        input_size=cfg.input_size,
        name=name,
        version=version,
        cfg=cfg,
        extra={
            "threshold_rule": result["threshold_rule"]
            + " (display suggestion; every box >= score_threshold is output)",
            "trained_on": result["training"]["hardware"],
            "metrics": json_safe(result["summary"]),
            "created": result["created"],
            "tta": tta,
        },
    )
    write_json(artifact_dir / "metrics.json", result)
    if card:
        write_xray_card(artifact_dir)
    return result
