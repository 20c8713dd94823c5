"""Model card (Markdown) of the X-ray findings detector, generated from ``model.json`` + ``metrics.json``.

Every number in the card is read from those two files (written by :mod:`analysis.ml.detect_eval`) and,
when it measured this model, ``bench/results/xray_inference.json`` (written by ``bench/bench_xray_inference.py``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from .card import _ci, _f  # the photo card's number formatting: "n/a" for missing, " (lo–hi)" intervals

ATTRIBUTION = (
    'Training and test images: the Roboflow Universe dataset "Рентгеновские снимки" (workspace dental-uispo, '
    "project -bhjcu), as exported into the public GitHub repository `AayushKarna/dental-detection-backend`; "
    "licence as stated by the export: **CC BY 4.0** (https://creativecommons.org/licenses/by/4.0/). "
    "The images were used unchanged except for the greyscale conversion and resizing described below; no image "
    "is shipped with the model."
)

CLASS_LIMITS = {
    "Cavity": (
        "Cavity boxes cover whole teeth in the training labels (not the carious lesion itself), so a Cavity box "
        "marks *which tooth* is suspicious, not where the lesion is, and it cannot localise a lesion within a "
        "tooth. Cavity is the rarest class in test/ (see the box counts above), so its test AP is very uncertain."
    ),
    "Fillings": (
        "Some Fillings boxes in the source labels are noisy (the data curators' note); the learned box extent "
        "inherits that noise, which lowers AP at strict IoU (mAP@0.5:0.95) more than at IoU 0.5."
    ),
    "Impacted Tooth": ("Few examples in training (see the box counts above), so its AP has wide intervals."),
    "Implant": (
        "Some Implant boxes in the source labels are noisy (the data curators' note); as for Fillings, strict-IoU "
        "numbers are affected most."
    ),
}


def _split_table(name: str, res: dict, labels) -> list[str]:
    ci = res.get("ci95", {})
    rows = [
        f"**{name}** — {res['images']} images: mAP@0.5 **{_f(res['map50'])}**{_ci(ci.get('map50'))}, "
        f"mAP@0.5:0.95 **{_f(res['map50_95'])}**{_ci(ci.get('map50_95'))}, mAP@0.75 {_f(res.get('map75'))}",
        "",
        "| class | GT boxes (images) | AP@0.5 (95% CI) | AP@0.5:0.95 (95% CI) | precision / recall / F1 at threshold |",
        "| --- | --- | --- | --- | --- |",
    ]
    op = res.get("operating_point", {})
    for name_c in labels:
        pc = res["per_class"][name_c]
        o = op.get(name_c, {})
        rows.append(
            f"| {name_c} | {pc['gt_boxes']} ({pc['gt_images']}) | {_f(pc['ap50'])}{_ci(pc.get('ap50_ci95'))} | "
            f"{_f(pc['ap50_95'])}{_ci(pc.get('ap50_95_ci95'))} | "
            f"{_f(o.get('precision'), 2)} / {_f(o.get('recall'), 2)} / {_f(o.get('f1'), 2)} "
            f"@ {_f(o.get('threshold'), 3)} |"
        )
    rows.append("")
    return rows


def render_xray_card(model: dict, metrics: dict, bench: dict | None = None) -> str:
    labels = model["labels"]
    training = metrics.get("training", {})
    cfg = training.get("config", {})
    hist = training.get("history", [])
    tsum = training.get("summary", {})
    data = metrics.get("data", {})
    counts = data.get("counts", {})
    overlap = metrics.get("test_train_overlap")
    aug = model.get("augmentation", {})
    lines: list[str] = []
    add = lines.append
    add(f"# Model card — {model['name']} {model['version']}")
    add("")
    add(
        f"Object detector for dental panoramic X-rays: boxes for {', '.join(labels)}. "
        f"Architecture: {model['architecture']}."
    )
    add("")
    add("## Intended use and limits of validation")
    add(
        "- **Decision support only**: every box is a suggestion for a dentist, who reviews the radiograph and "
        "makes the diagnosis."
    )
    add(
        "- **Only panoramic X-rays were validated.** No bitewing or periapical radiographs exist in the data "
        "used here; on those the model is unvalidated and its output must not be trusted."
    )
    add(
        "- Output per image: every detected box with its score (down to "
        f"{model.get('score_threshold')}; at most {model.get('detections_per_img')} boxes after per-class NMS at "
        f"IoU {model.get('nms_threshold')}), each with a box `[x, y, w, h]` normalised to the original image, "
        "and per class the highest box score. The per-class `thresholds` in model.json are *suggested* display "
        f"operating points ({metrics.get('threshold_rule')}); scores are detector confidences, not calibrated "
        "probabilities."
    )
    add("")
    add("## Data and attribution")
    add(f"- {ATTRIBUTION}")
    add(
        "- The export's own validation split (154 images) was held out by the data curators as an independent "
        "set and is not available here; training images that were near-duplicates of it were removed."
    )
    tr, va, te = counts.get("train", {}), counts.get("val", {}), counts.get("test", {})
    if tr.get("classes"):
        add(
            "- Boxes (images) per class — "
            + "; ".join(
                f"{n}: train {tr['classes'][n]['boxes']} ({tr['classes'][n]['images']}), val "
                f"{va['classes'][n]['boxes']} ({va['classes'][n]['images']}), test "
                f"{te.get('classes', {}).get(n, {}).get('boxes')} ({te.get('classes', {}).get(n, {}).get('images')})"
                for n in labels
            )
            + "."
        )
    add(
        f"- Training: {tr.get('images')} images ({tr.get('groups')} source radiographs); validation (carved from "
        f"`train/`): {va.get('images')} images ({va.get('groups')} source radiographs); test (`test/`, the "
        f"shared test split): {te.get('images')} images ({te.get('groups')} source prefixes). All images are "
        "640x640 JPEGs that the export had already stretched to a square."
    )
    add(
        "- **Group-aware validation split.** Roboflow stores augmented copies of one source radiograph as "
        "`<source>_jpg.rf.<hash>.jpg`. The validation split groups by `<source>`, so copies of one radiograph "
        f"never straddle train and validation ({data.get('split')})."
    )
    vo = metrics.get("val_train_overlap")
    if vo:
        add(
            f"- Validation vs training images: {vo.get('test_images_with_near_duplicate_in_train')} of "
            f"{vo.get('test_images')} validation images have a near-identical training image (32x32 thumbnail "
            f"correlation >= {vo.get('near_duplicate_threshold')}, mirror included); the most similar training "
            f"image typically correlates {_f(vo.get('max_thumb_corr_any_other_train_image', {}).get('median'))}."
        )
    if overlap:
        shared = overlap.get("prefixes_shared_with_train", [])
        corr_s = overlap.get("max_thumb_corr_same_prefix", {})
        corr_o = overlap.get("max_thumb_corr_any_other_train_image", {})
        add(
            f"- **test/ vs train/:** {len(shared)} of {overlap.get('test_source_prefixes')} test source prefixes "
            f"({overlap.get('test_images_with_shared_prefix')} of {overlap.get('test_images')} test images) also "
            f"occur in `train/`. But **{overlap.get('test_images_with_near_duplicate_in_train')} test images have a "
            f"near-identical copy in `train/`** (thumbnail correlation >= {overlap.get('near_duplicate_threshold')}; "
            f"{overlap.get('near_duplicates_mirrored')} of them are left/right mirrored copies, i.e. Roboflow flip "
            "augmentations of the test radiograph). The other shared prefixes look like different radiographs that "
            "merely share a number: their correlation with the same-prefix training images (median "
            f"{_f(corr_s.get('median'))}, min {_f(corr_s.get('min'))}) is no higher than with unrelated training "
            f"images (median best match {_f(corr_o.get('median'))})."
        )
        for key, what in (
            ("test_without_near_duplicate", "test images without a near-identical training image"),
            ("test_unshared_prefix_only", "test images whose prefix does not occur in `train/`"),
        ):
            sub = overlap.get(key)
            if sub:
                add(
                    f"  - On the {sub['images']} {what}: mAP@0.5 {_f(sub['map50'])}{_ci(sub.get('map50_ci95'))}, "
                    f"mAP@0.5:0.95 {_f(sub['map50_95'])}."
                )
        add(
            "  The full test/ numbers below can therefore be optimistic (compare the subsets above); the "
            "group-aware validation split, where no image has a near-identical training image, is the cleaner "
            "estimate."
        )
    add("")
    add("## Results")
    add(
        f"COCO-style AP ({metrics.get('metric_definition')}). 95% confidence intervals: "
        f"{metrics.get('val', {}).get('ci95', {}).get('method', 'bootstrap')} "
        f"({metrics.get('val', {}).get('ci95', {}).get('n_boot')} resamples). Evaluated with the shipped fp16 "
        f"weights, checkpoint of epoch {(metrics.get('checkpoint', {}).get('epoch') or 0) + 1} (best validation "
        "mAP@0.5)."
    )
    if metrics.get("tta") == "hflip":
        by = metrics.get("val_map50_by_tta", {})
        add("")
        add(
            "**Test-time augmentation (shipped, used by the platform):** each image is also run mirrored "
            "left/right, the mirror's boxes are mapped back, and both sets are merged by the model's per-class "
            f"NMS (IoU {model.get('nms_threshold')}) and 100-box limit; it doubles inference time. Chosen on "
            f"validation only (mAP@0.5 without {_f(by.get('none'))}, with {_f(by.get('hflip'))}); every number "
            "below includes it."
        )
    add("")
    lines += _split_table("Validation (group-aware, from train/)", metrics["val"], labels)
    if "test" in metrics:
        lines += _split_table("Test (shared `test/` split)", metrics["test"], labels)
    target = 0.75
    vm, tm = metrics["val"]["map50"], metrics.get("test", {}).get("map50")
    verdict = []
    for nm, v in (("validation", vm), ("test", tm)):
        if v is not None and math.isfinite(v):
            verdict.append(f"{nm} mAP@0.5 {_f(v)} {'meets' if v >= target else '**does not meet**'} the 0.75 target")
    add(
        "- As in COCO, a class without ground truth in an image set is left out of the mean; in a bootstrap "
        "resample that happens to contain no Cavity box (only a few test images have one), mAP averages the three "
        "easier classes, which is why the test interval is wide and skewed upward."
    )
    add(
        "- " + "; ".join(verdict) + ". Public reference on the export's held-out split (not the same images): "
        "YOLOv8n, COCO-pretrained, 800 px, 50 epochs on a GPU: mAP@0.5 0.90, mAP@0.5:0.95 0.64."
    )
    add(
        "- Precision-recall curves (IoU 0.5): `plots/pr_val.png`, `plots/pr_test.png`; "
        "training curve: `plots/training.png`."
    )
    add("")
    add("## Per-class limits")
    for name in labels:
        add(f"- **{name}**: {CLASS_LIMITS.get(name, '')}")
    add("")
    add("## Preprocessing")
    add(f"- {model['preprocessing']}.")
    add(
        "- Accepts 8-bit and 16-bit greyscale and RGB images of any size. **Resize, not letterbox**: the whole "
        "image is stretched to the square input, because the training images were themselves stretched to "
        "640x640 by the export; box coordinates map back to the original image by plain normalisation."
    )
    add(
        "- 16-bit images are windowed by percentiles (0.5–99.5) per image; DICOM windowing tags are not used. "
        "16-bit input was only tested on synthetic images: no real 16-bit radiograph exists in this data."
    )
    add("")
    add("## Training")
    add(
        f"- Input {cfg.get('input_size')} px (reduced from 640 to train on CPU), batch {cfg.get('batch_size')}, "
        f"AdamW lr {cfg.get('lr')} (weight decay {cfg.get('weight_decay')}), {cfg.get('warmup_steps')} warm-up "
        f"steps then cosine decay, {tsum.get('epochs_run', len(hist))} of {cfg.get('epochs')} planned epochs, "
        f"seed {cfg.get('seed')}. Stem and first blocks (stride ≤ 4) frozen; backbone BatchNorm statistics frozen."
    )
    add(
        f"- Augmentation: horizontal flip (p {aug.get('horizontal_flip')}), random scale "
        f"{aug.get('scale')} with crop/zero-pad back to the input (p {aug.get('scale_p')}), brightness ±"
        f"{aug.get('brightness')} and contrast ±{aug.get('contrast')} (p {aug.get('jitter_p')})."
    )
    add(
        "- **Left/right flips were used.** A mirrored panoramic looks like a valid radiograph of the other side of "
        "the mouth, so the model has no notion of anatomical side: it must never be used to decide whether a "
        "finding is on the patient's left or right, or to number teeth. Tooth side and number come from the box "
        "position on the correctly oriented image, read by the dentist. (None of the four classes depends on side.)"
    )
    hw = training.get("hardware") or model.get("trained_on")
    secs = tsum.get("train_seconds_total") or sum(h.get("seconds", 0.0) for h in hist)
    add(
        f"- Trained on: **{hw}**; training time {_f((secs or 0) / 60, 1)} min "
        f"({len(hist)} epoch(s) incl. per-epoch validation). Evaluation machine: {metrics.get('evaluation_hardware')}."
    )
    if cfg.get("init_from"):
        add(
            f"- **Fine-tuned from `{cfg['init_from']}`** (its weights, not ImageNet's, were the starting point; "
            "a fresh optimiser and schedule). The training time above is this run only; add the earlier model's "
            "(its card) for the total."
        )
    if training.get("note"):
        add(f"- {training['note']}")
    if hist:
        add("")
        add("| epoch | train loss | val mAP@0.5 | val mAP@0.5:0.95 | minutes |")
        add("| --- | --- | --- | --- | --- |")
        for h in hist:
            add(
                f"| {h['epoch'] + 1} | {_f(sum(h['train_loss'].values()))} | {_f(h['val_map50'])} | "
                f"{_f(h['val_map50_95'])} | {_f(h['seconds'] / 60, 1)} |"
            )
    add("")
    if bench:
        add("## Inference speed (CPU)")
        for row in bench.get("results", []):
            add(
                f"- {row.get('image')}, batch {row.get('batch_size')}: {_f(row.get('ms_per_image'), 1)} ms/image "
                f"(best of {row.get('repeats')}; median {_f(row.get('ms_per_image_median'), 1)} ms), incl. "
                "preprocessing and box decoding"
            )
        add(
            f"- {bench.get('cpu_count')} CPU cores, {bench.get('torch_threads')} torch threads, torch "
            f"{bench.get('torch')}; measured {bench.get('measured_at')} by `bench/bench_xray_inference.py`."
        )
        add("")
    add("## Files")
    add(
        f"- `weights.pt`: fp16 state dict (sha256 `{model['weights_sha256']}`); `model.json`: labels, "
        "thresholds, preprocessing; `metrics.json`: every number in this card; `plots/`: PR and training curves."
    )
    version = model.get("version", "1.0.0")
    run = f"var/ml-runs/xray/{version}"
    init = cfg.get("init_from") or ""
    add(
        f"- Reproduce: `python -m analysis.ml train-xray --run-dir {run} --input-size "
        f"{cfg.get('input_size')} --epochs {cfg.get('epochs')}"
        + (f" --lr {cfg.get('lr'):g} --warmup-steps {cfg.get('warmup_steps')}" if init else "")
        + (f" --time-budget-min {cfg.get('time_budget_min'):g}" if cfg.get("time_budget_min") else "")
        + (f" --init-from {init}" if init else "")
        + f"` then `python -m analysis.ml evaluate-xray --run-dir {run} --artifact-dir analysis/models/xray/"
        f"{version} --version {version}" + (" --tta auto" if metrics.get("tta") else "") + "`."
    )
    add("")
    return "\n".join(lines)


def write_xray_card(artifact_dir: str | Path) -> Path:
    artifact_dir = Path(artifact_dir)
    model = json.loads((artifact_dir / "model.json").read_text())
    metrics = json.loads((artifact_dir / "metrics.json").read_text())
    bench_path = Path(__file__).resolve().parents[2] / "bench" / "results" / "xray_inference.json"
    bench = json.loads(bench_path.read_text()) if bench_path.exists() else None
    if bench and bench.get("model_id") != f"{model['name']}@{model['version']}":
        bench = None
    path = artifact_dir / "MODEL_CARD.md"
    path.write_text(render_xray_card(model, metrics, bench))
    return path
