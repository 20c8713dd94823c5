"""The files of a shippable model artefact and the helpers both exports share (photo here, X-ray in ``detect_eval``).

An artefact folder holds ``weights.pt`` (fp16 state dict), ``model.json`` (labels, condition codes, thresholds,
calibration, preprocessing, weights hash, metrics summary), ``metrics.json``, ``plots/`` and ``MODEL_CARD.md``.
JSON is written strict: undefined metrics (NaN) become ``null``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from core import conditions

from .transforms import EVAL_PREPROCESSING


def hardware_description() -> str:
    """The evaluating machine: CPU model, usable CPU cores, GPU (``detection.hardware_description`` for training)."""
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


def write_weights(artifact_dir: Path, state_dict: dict) -> Path:
    """Create the artefact folder and write ``weights.pt`` (the fp16 state dict) into it; returns its path."""
    artifact_dir.mkdir(parents=True, exist_ok=True)
    weights = artifact_dir / "weights.pt"
    save_weights_fp16(state_dict, weights)
    return weights


def write_json(path: Path, content: dict) -> None:
    """``model.json`` / ``metrics.json``: indented, strict (undefined numbers as ``null``)."""
    path.write_text(json.dumps(json_safe(content), indent=2, allow_nan=False))


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
    colour_constancy: str = "",
    trained_on_other_sources: Sequence[str] = (),
) -> dict:
    """Write ``weights.pt`` (fp16 state dict) and ``model.json``; returns the model.json content."""
    artifact_dir = Path(artifact_dir)
    weights = write_weights(artifact_dir, state_dict)
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
        "preprocessing": (
            "grey-world colour constancy on the whole image (each channel scaled so the mean colour is neutral "
            "grey, gains clipped to [0.5, 2]); then "
            if colour_constancy == "grey_world"
            else ""
        )
        + EVAL_PREPROCESSING.format(size=input_size)
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
    if colour_constancy:
        model_json["colour_constancy"] = colour_constancy
    if trained_on_other_sources:
        # other-source photos used as extra healthy negatives in training: never report false findings on these
        model_json["trained_on_other_sources"] = list(trained_on_other_sources)
    write_json(artifact_dir / "model.json", model_json)
    return model_json
