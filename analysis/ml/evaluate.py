"""Held-out evaluation of a photo-classifier run, and its artefact.

``evaluate_run`` predicts the test split (groups never seen in training or calibration) with the run's calibrated
model, computes the metrics with group-bootstrap intervals (``metrics``), runs the shortcut audit
(``shortcut_audit``), draws the plots (``plots``) and writes the artefact folder (``artifacts``) with its model
card (``card``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import torch

from .artifacts import export_artifact, hardware_description, write_json
from .card import write_card
from .data import photo_manifest_path, targets
from .false_findings import false_finding_rates, other_source_manifest
from .metrics import full_metrics, point_metrics, reliability_table, summary_of
from .plots import make_plots
from .shortcut_audit import audit_summary, center_crop_audit, metadata_shortcut_audit
from .train import (
    apply_calibration,
    config_from_run,
    extra_negative_records,
    load_or_build_cache,
    load_run_model,
    predict_logits,
    prepare,
)


def _is_shared_photo_manifest(data: str) -> bool:
    try:
        return Path(data).resolve() == photo_manifest_path().resolve() or (
            Path(data).name == "manifest.csv" and Path(data).parent.name == "intraoral-photos"
        )
    except OSError:
        return False


def other_source_report(artifact_dir: Path, compare_with: str | Path | None = None) -> dict:
    """False-finding rates on the other-source photos for this artefact (and ``compare_with``, measured the
    same way). Per-image scores are kept for this artefact only."""
    out = {"this": false_finding_rates(artifact_dir)}
    if compare_with:
        other = false_finding_rates(compare_with)
        other.pop("images", None)
        out["compare"] = other
    return out


def evaluate_run(
    run_dir: str | Path,
    artifact_dir: str | Path,
    version: str = "1.0.0",
    name: str = "photo-effnetlite0",
    audit: bool = True,
    n_boot: int = 1000,
    card: bool = True,
    log=print,
    other_sources: bool = True,
    compare_with: str | Path | None = None,
) -> dict:
    """``compare_with``: another artefact measured the same way on the other-source photos (default: the one
    this run was fine-tuned from, if any)."""
    run_dir, artifact_dir = Path(run_dir), Path(artifact_dir)
    cfg = config_from_run(run_dir)
    if compare_with is None and cfg.init_from and Path(cfg.init_from).is_dir():
        compare_with = cfg.init_from
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
    cc = cfg.colour_constancy
    test_imgs = load_or_build_cache(run_dir / "cache_test.pt", test_recs, cfg.input_size, "eval", cc)
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
        crop_imgs = load_or_build_cache(run_dir / "cache_test_crop.pt", test_recs, cfg.input_size, "crop", cc)
        crop_probs = apply_calibration(
            predict_logits(model, crop_imgs, channels_last=cfg.channels_last, tta=tta), temps, biases
        )
        crop = full_metrics(y, crop_probs, groups, thresholds, labels, n_boot=min(n_boot, 200))
        log("shortcut audit (b): metadata-only model")
        meta = metadata_shortcut_audit(records, list(tr) + list(va), list(te), labels)
        result["shortcut_audit"] = {"center_crop_square": center_crop_audit(crop, labels), "metadata_only": meta}

    result["plots"] = [
        str(Path(p).relative_to(artifact_dir)) for p in make_plots(y, probs, thresholds, labels, artifact_dir / "plots")
    ]
    result["summary"] = summary_of(metrics, labels)
    if audit:
        result["summary"]["shortcut_audit"] = audit_summary(result["shortcut_audit"])
    extra = extra_negative_records(cfg)
    trained_sources = sorted({r.source for r in extra})
    if extra:
        result["training"]["extra_negatives"] = {
            "sources": trained_sources,
            "images": len(extra),
            "repeat": cfg.extra_repeat,
            "note": "other-source healthy-looking photos used as extra healthy negatives (training split only)",
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
        colour_constancy=cc,
        trained_on_other_sources=trained_sources,
    )
    if other_sources and other_source_manifest().exists():
        log("false findings on other-source photos")
        result["other_sources"] = other_source_report(artifact_dir, compare_with)
    write_json(artifact_dir / "metrics.json", result)
    if card:
        write_card(artifact_dir)
    log(f"artefact written to {artifact_dir}")
    return result
