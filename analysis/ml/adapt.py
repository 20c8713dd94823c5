"""A clinic's own photo model: the base model's frozen features, with a small correction of its head learned from
that clinic's reviewed images. Plain PyTorch/numpy (no Django): the platform gathers the labels and the images.

The adapted logit of condition ``c`` is the base model's logit plus a linear correction on the base model's pooled
features (the 1280 global-average-pooled channels of EfficientNet-Lite0's last feature map)::

    z'_c = z_c + w_c . (f - mu) / sigma + b_c          p'_c = sigmoid(z'_c / T_c + bias_c)

with the base model's own calibration (``temperature``/``logit_bias`` of its ``model.json``), so the clinic's
thresholds keep their meaning. On top of it, a memory of the clinic's reviewed cases: when the reviewed image most
like a new one (cosine similarity of the standardised features) is one the dentists found healthy (every condition
decided absent), and not one with something present, every condition's calibrated logit is lowered by
``neighbour_shift`` (2.0: a 0.5 probability becomes 0.12). A linear correction learns "this clinic's camera" slowly
from a few dozen images; the nearest reviewed case says at once "a photo like this one was healthy here".

Single clinics vary widely: the clinic's own cross-validated evaluation is what an admin should read before
activating.

Anchors: the correction is fitted on the clinic's reviews *and* on the base model's own validation photos (their
features, base logits and labels, shipped with the artefact as ``anchors.npz``; model.json ``"adaptation"``), each
label's positives and negatives balanced, the anchors weighing ``anchor_weight`` against the clinic's reviews. A
few dozen reviews from one clinic can otherwise teach the correction "lower everything that looks like this
clinic", which also lowers real disease; the anchors keep what the base model knows about disease while the
clinic's healthy cases move it away from its false findings (rehearsal, as in continual learning). With anchors,
a stronger pull to zero (``l2`` 10) is best.

Chosen on simulated clinics (``bench/bench_adaptation_clinics.py``, feature level, base model 1.1.0, each clinic
reviewing 20 healthy-looking other-source photos and 20 test-split photos with disease, drawn as
``bench_adaptation.py`` draws its clinic; held back: the other healthy-looking photos and 80 with disease). Share
of held-back healthy-looking photos with a finding / mean fall in sensitivity (worst), seeds 0-19: base 63% / 0;
memory + linear correction without anchors (l2 1, shipped until 2026-12-04) 15% / 0.061 (0.132); the same with
l2 10: 9% / 0.061 (0.176); with anchors (weight 0.5, l2 10): 9% / 0.014 (0.056). Confirmed on 40 further
clinics (seeds 20-59), chosen before they were run: without anchors 15% / 0.034 (0.147), 28 of 40 clinics within
0.05; with anchors 10% / 0.003 (0.079), 38 of 40 within 0.05 (worst share with a finding 28%).

``w`` and ``b`` start at zero and are pulled towards zero (L2), so with few reviews
the clinic model stays the base model and moves only as far as its dentists' decisions push it. A label that the
reviews do not decide (neither confirmed nor rejected nor absent from a signed report) is left out of the loss
(``nan`` in ``targets``). Training is full-batch L-BFGS on a few hundred rows at most: well under a second on CPU.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

HEAD_FORMAT = "dentalscan-clinic-head-v1"
ANCHORS_FILE = "anchors.npz"


@dataclass(frozen=True)
class Anchors:
    """The base model's own validation photos as the correction sees them: pooled features, raw logits, labels."""

    features: np.ndarray
    logits: np.ndarray
    targets: np.ndarray  # 1 present / 0 absent


def fit_options(artifact_dir: str | Path, meta: dict[str, Any]) -> dict[str, Any]:
    """``fit_head`` keyword options for an artefact: its model.json ``"adaptation"`` section (``l2``,
    ``anchor_weight``, ``neighbour_shift``) and its anchors (checked against their recorded SHA-256), or nothing
    for an artefact without one (then ``fit_head``'s defaults, no anchors)."""
    section = meta.get("adaptation") or {}
    options: dict[str, Any] = {k: float(section[k]) for k in ("l2", "anchor_weight", "neighbour_shift") if k in section}
    if section.get("anchors_file"):
        path = Path(artifact_dir) / section["anchors_file"]
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != section.get("anchors_sha256"):
            raise ValueError(f"{path} does not match the SHA-256 recorded in model.json")
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            options["anchors"] = Anchors(
                features=z["features"].astype(np.float32),
                logits=z["logits"].astype(np.float32),
                targets=z["targets"].astype(np.float32),
            )
    return options


def anchors_fit(
    predictor: Any, images: Sequence[Image.Image], targets: np.ndarray, artifact_dir: str | Path, fitted_on: str
) -> dict[str, Any]:
    """Embed the anchor photos with ``predictor``, write ``anchors.npz`` into ``artifact_dir`` and return the
    model.json ``"adaptation"`` section (the options chosen on simulated clinics, see the module docstring)."""
    features, logits = embed(predictor, images)
    out = io.BytesIO()
    np.savez_compressed(
        out,
        features=features.astype(np.float16),
        logits=logits.astype(np.float32),
        targets=np.asarray(targets, dtype=np.uint8),
    )
    path = Path(artifact_dir) / ANCHORS_FILE
    path.write_bytes(out.getvalue())
    return {
        "method": "linear correction of the head on the frozen pooled features + nearest-reviewed-case memory, "
        "fitted on the clinic's reviews and on the base model's validation photos (anchors)",
        "anchors_file": ANCHORS_FILE,
        "anchors_sha256": hashlib.sha256(out.getvalue()).hexdigest(),
        "anchors": int(len(features)),
        "anchors_fitted_on": fitted_on,
        "l2": 10.0,
        "anchor_weight": 0.5,
        "neighbour_shift": 2.0,
    }


def write_adaptation_section(artifact_dir: str | Path, section: dict[str, Any]) -> None:
    path = Path(artifact_dir) / "model.json"
    meta = json.loads(path.read_text())
    meta["adaptation"] = section
    path.write_text(json.dumps(meta, indent=2) + "\n")


@dataclass
class ClinicHead:
    """The learned correction: ``weight`` (labels x features), ``bias`` (labels), feature standardisation."""

    labels: list[str]
    weight: np.ndarray
    bias: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    temperature: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    memory: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))  # unit rows, standardised
    memory_labels: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))  # 1 / 0 / nan
    neighbour_shift: float = 2.0

    def to_bytes(self) -> bytes:
        out = io.BytesIO()
        np.savez_compressed(
            out,
            format=np.array(HEAD_FORMAT),
            labels=np.array(self.labels),
            weight=self.weight.astype(np.float32),
            bias=self.bias.astype(np.float32),
            mean=self.mean.astype(np.float32),
            scale=self.scale.astype(np.float32),
            temperature=self.temperature.astype(np.float32),
            memory=self.memory.astype(np.float32),
            memory_labels=self.memory_labels.astype(np.float32),
            neighbour_shift=np.array(self.neighbour_shift, dtype=np.float32),
        )
        return out.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> ClinicHead:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            if str(z["format"]) != HEAD_FORMAT:
                raise ValueError(f"not a clinic head ({z['format']})")
            return cls(
                labels=[str(x) for x in z["labels"]],
                weight=z["weight"],
                bias=z["bias"],
                mean=z["mean"],
                scale=z["scale"],
                temperature=z["temperature"],
                memory=z["memory"],
                memory_labels=z["memory_labels"],
                neighbour_shift=float(z["neighbour_shift"]),
            )

    def logits(self, features: np.ndarray, base_logits: np.ndarray) -> np.ndarray:
        """Adapted raw logits (before the base model's calibration), shape (N, labels)."""
        standard = (features - self.mean) / self.scale
        logits = base_logits + standard @ self.weight.T + self.bias
        if len(self.memory) and self.neighbour_shift:
            unit = standard / (np.linalg.norm(standard, axis=1, keepdims=True) + 1e-8)
            similarity = unit @ self.memory.T
            healthy = np.all(self.memory_labels == 0, axis=1)  # every condition decided absent (a signed image)
            if healthy.any():
                to_healthy = similarity[:, healthy].max(axis=1)
                to_other = similarity[:, ~healthy].max(axis=1) if (~healthy).any() else np.full(len(unit), -2.0)
                like_healthy = (to_healthy > to_other)[:, None]
                logits = logits - self.neighbour_shift * like_healthy * self.temperature[None, :]
        return logits


def calibrated(logits: np.ndarray, temperature: Sequence[float], bias: Sequence[float]) -> np.ndarray:
    """The base model's calibration: ``sigmoid(logit / T + bias)`` per label."""
    t = np.asarray(temperature, dtype=np.float64)
    b = np.asarray(bias, dtype=np.float64)
    return 1.0 / (1.0 + np.exp(-(np.asarray(logits, dtype=np.float64) / t + b)))


def fit_head(
    features: np.ndarray,
    base_logits: np.ndarray,
    targets: np.ndarray,
    labels: Sequence[str],
    temperature: Sequence[float],
    logit_bias: Sequence[float],
    l2: float = 1.0,
    max_iter: int = 200,
    neighbour_shift: float = 2.0,
    anchors: Anchors | None = None,
    anchor_weight: float = 0.5,
) -> ClinicHead:
    """Learn the correction from ``targets`` (N x labels: 1 present, 0 absent, nan unknown), and from ``anchors``
    (weighing ``anchor_weight`` against the reviews) when given."""
    import torch  # here, not at the top: the web processes import this module and never train

    features = np.asarray(features, dtype=np.float32)
    d = features.shape[1]
    mean = features.mean(axis=0)
    scale = features.std(axis=0) + 1e-3
    x = torch.from_numpy((features - mean) / scale)
    z = torch.from_numpy(np.asarray(base_logits, dtype=np.float32))
    y = torch.from_numpy(np.nan_to_num(np.asarray(targets, dtype=np.float32), nan=0.0))
    known = torch.from_numpy(~np.isnan(np.asarray(targets, dtype=np.float32))).float()
    t = torch.tensor(np.asarray(temperature, dtype=np.float32))
    b0 = torch.tensor(np.asarray(logit_bias, dtype=np.float32))
    # Each label's positives and negatives weigh the same in total (a clinic sees far more healthy images).
    pos = (y * known).sum(0)
    neg = ((1 - y) * known).sum(0)
    w_pos = torch.where(pos > 0, known.sum(0) / (2 * pos.clamp(min=1)), torch.zeros_like(pos))
    w_neg = torch.where(neg > 0, known.sum(0) / (2 * neg.clamp(min=1)), torch.zeros_like(neg))
    sample_weight = known * (y * w_pos + (1 - y) * w_neg)
    weight = torch.zeros(len(labels), d, requires_grad=True)
    bias = torch.zeros(len(labels), requires_grad=True)
    optimiser = torch.optim.LBFGS([weight, bias], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")
    use_anchors = anchors is not None and len(anchors.targets) > 0 and anchor_weight > 0
    if use_anchors:
        ax = torch.from_numpy(((anchors.features - mean) / scale).astype(np.float32))
        az = torch.from_numpy(anchors.logits.astype(np.float32))
        ay = torch.from_numpy(anchors.targets.astype(np.float32))
        a_pos, a_neg = ay.sum(0).clamp(min=1), (1 - ay).sum(0).clamp(min=1)
        a_weight = ay * (len(ay) / (2 * a_pos)) + (1 - ay) * (len(ay) / (2 * a_neg))

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        logits = (z + x @ weight.T + bias) / t + b0
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, weight=sample_weight, reduction="sum")
        loss = loss / max(1.0, float(known.sum())) + l2 * (weight.pow(2).sum() / d + bias.pow(2).sum()) / 2
        if use_anchors:
            a_logits = (az + ax @ weight.T + bias) / t + b0
            loss = loss + anchor_weight * torch.nn.functional.binary_cross_entropy_with_logits(
                a_logits, ay, weight=a_weight
            )
        loss.backward()
        return loss

    optimiser.step(closure)
    standard = (features - mean) / scale
    return ClinicHead(
        labels=list(labels),
        weight=weight.detach().numpy().copy(),
        bias=bias.detach().numpy().copy(),
        mean=mean,
        scale=scale,
        temperature=np.asarray(temperature, dtype=np.float32),
        memory=standard / (np.linalg.norm(standard, axis=1, keepdims=True) + 1e-8),
        memory_labels=np.asarray(targets, dtype=np.float32),
        neighbour_shift=neighbour_shift,
    )


def embed(predictor: Any, images: Sequence[Image.Image], batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Pooled features (N x 1280) and raw logits (N x labels) of a photo ``Predictor`` (``analysis.ml.infer``),
    preprocessed exactly as its ``predict`` does (and averaged with the mirror image when its ``tta`` says so)."""
    import torch

    with torch.inference_mode():
        return _embed(predictor, images, batch_size)


def _embed(predictor: Any, images: Sequence[Image.Image], batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    feats, logits = [], []
    model = predictor.model
    for start in range(0, len(images), batch_size):
        x = predictor._preprocess(list(images[start : start + batch_size]))
        pooled = model.features(x).float().mean(dim=(2, 3))
        if getattr(predictor, "tta", "") == "hflip":
            pooled = (pooled + model.features(x.flip(-1)).float().mean(dim=(2, 3))) / 2
        feats.append(pooled.cpu().numpy())
        logits.append(model.head(pooled.to(next(model.head.parameters()).dtype)).float().cpu().numpy())
    if not feats:
        return np.zeros((0, 0), np.float32), np.zeros((0, len(predictor.labels)), np.float32)
    return np.concatenate(feats), np.concatenate(logits)


def wilson(successes: int, total: int, z: float = 1.96) -> list[float] | None:
    """95% Wilson score interval of a proportion (None when there is nothing to count)."""
    if total <= 0:
        return None
    p = successes / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


def rates(probabilities: np.ndarray, targets: np.ndarray, thresholds: Sequence[float], labels: Sequence[str]) -> dict:
    """Per label: sensitivity, specificity and PPV at ``thresholds`` with counts and 95% Wilson intervals, on the
    rows whose label is known; plus ``any_finding_on_negatives``: the share of images with no known positive
    and at least one known negative that get any finding."""
    out: dict[str, Any] = {}
    flagged = probabilities >= np.asarray(thresholds)[None, :]
    for c, name in enumerate(labels):
        known = ~np.isnan(targets[:, c])
        y = targets[known, c] == 1
        f = flagged[known, c]
        tp, fn = int((f & y).sum()), int((~f & y).sum())
        tn, fp = int((~f & ~y).sum()), int((f & ~y).sum())
        out[name] = {
            "sensitivity": round(tp / (tp + fn), 4) if tp + fn else None,
            "sensitivity_ci": wilson(tp, tp + fn),
            "specificity": round(tn / (tn + fp), 4) if tn + fp else None,
            "specificity_ci": wilson(tn, tn + fp),
            "ppv": round(tp / (tp + fp), 4) if tp + fp else None,
            "ppv_ci": wilson(tp, tp + fp),
            "positives": tp + fn,
            "negatives": tn + fp,
        }
    negatives = np.array([(np.nan_to_num(row, nan=0) == 0).all() and (row == 0).any() for row in targets], dtype=bool)
    if negatives.any():
        any_flag = flagged[negatives].any(axis=1)
        out["any_finding_on_negatives"] = {
            "rate": round(float(any_flag.mean()), 4),
            "ci": wilson(int(any_flag.sum()), int(negatives.sum())),
            "images": int(negatives.sum()),
        }
    return out
