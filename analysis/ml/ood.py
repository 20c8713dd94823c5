"""Distance of an image's features to a set of training images (out-of-distribution score).

One statistic serves two purposes:

* the image gate's ``not_intraoral`` check (``gate.py``): features of the frozen ImageNet EfficientNet-Lite0;
* the photo model's own ``out_of_distribution`` check (``infer.Predictor`` / ``fast.OnnxPhotoPredictor``):
  the model's global-average-pooled 1280-d final feature map, fitted per artefact by :func:`ood_fit`
  (``python -m analysis.ml ood-fit --artifact-dir DIR``) into ``<artifact_dir>/ood.npz`` and the
  ``"ood"`` section of ``model.json``.

The score is a probabilistic-PCA Mahalanobis distance: the ``k`` leading principal directions of the
training features with their own variances, and the remaining ``D - k`` directions with one shared
(average) variance, so directions the training images never vary in still count. It is normalised by the
dimension: ``score = sqrt(d^2 / D)``, about 1 for a typical training image, larger further away.
No torch at module level: the numpy scoring is all the predictors need.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

OOD_METHOD = "ppca-mahalanobis"
SOFT_QUANTILE = 0.975  # unfamiliar: above the 97.5th percentile of the calibration (validation) images
HARD_QUANTILE = 0.995  # >= 99.5% of the calibration images stay below the hard threshold ...
HARD_MARGIN = 1.25  # ... and it is this much further out than that percentile (refusal must be rare)


def fit_ppca(features: np.ndarray, k: int = 64) -> dict[str, np.ndarray]:
    """Mean, ``k`` principal directions and variances, and the shared residual variance."""
    x = np.asarray(features, dtype=np.float64)
    mean = x.mean(axis=0)
    xc = x - mean
    k = int(min(k, x.shape[0] - 1, x.shape[1] - 1))
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    var = s**2 / max(1, x.shape[0] - 1)
    rest = var[k:]
    resid_var = float(rest.sum() / max(1, x.shape[1] - k))  # directions beyond the data rank count as 0
    resid_var = max(resid_var, 1e-6 * float(var[0]))
    return {
        "mean": mean.astype(np.float32),
        "components": vt[:k].astype(np.float32),
        "variances": np.maximum(var[:k], resid_var).astype(np.float32),
        "resid_var": np.array(resid_var, dtype=np.float32),
    }


def ppca_score(stats: dict[str, np.ndarray], features: np.ndarray) -> np.ndarray:
    """``sqrt(d^2 / D)`` for each row of ``features`` (N, D)."""
    x = np.atleast_2d(np.asarray(features, dtype=np.float64)) - stats["mean"].astype(np.float64)
    comps = stats["components"].astype(np.float64)
    z = x @ comps.T
    resid = np.maximum((x * x).sum(axis=1) - (z * z).sum(axis=1), 0.0)
    d2 = (z * z / stats["variances"].astype(np.float64)).sum(axis=1) + resid / float(stats["resid_var"])
    return np.sqrt(d2 / x.shape[1])


def save_stats(path: Path, stats: dict[str, np.ndarray]) -> None:
    np.savez_compressed(path, **stats)


def load_stats(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def thresholds_from(scores: np.ndarray) -> tuple[float, float]:
    """(soft, hard) from calibration-image scores: soft = 97.5th percentile; hard = 1.25 x the 99.5th
    percentile, so that >= 99.5% of the calibration images stay below it with room to spare."""
    s = np.asarray(scores, dtype=np.float64)
    soft = float(np.quantile(s, SOFT_QUANTILE))
    hard = float(np.quantile(s, HARD_QUANTILE) * HARD_MARGIN)
    return soft, max(hard, soft)


# --------------------------------------------------------------------------- the photo model's own features


def pooled_features(predictor: Any, images: Sequence, batch_size: int = 32, log: Callable | None = None) -> np.ndarray:
    """Global-average-pooled final feature maps (N, 1280) of a photo ``infer.Predictor``'s model, with the
    predictor's own preprocessing. ``images``: PIL images or paths."""
    import torch

    from .data import load_rgb

    out = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            chunk = [
                im if hasattr(im, "size") and hasattr(im, "mode") else load_rgb(im)
                for im in images[start : start + batch_size]
            ]
            x = predictor._preprocess(chunk)
            out.append(predictor.model.features(x).float().mean(dim=(2, 3)).cpu().numpy())
            if log and (start // batch_size) % 20 == 0:
                log(f"ood features {start + len(chunk)}/{len(images)}")
    return np.concatenate(out) if out else np.zeros((0, 1280), np.float32)


def default_photo_split() -> tuple[list, list, str]:
    """(train paths, validation paths, description) of the shared intraoral-photos manifest, with the
    training split (``splits.train_val_test_split``, default fractions and seed)."""
    from .data import photo_manifest_path, read_manifest
    from .splits import train_val_test_split

    manifest = photo_manifest_path()
    records = read_manifest(manifest)
    tr, va, _ = train_val_test_split(records)
    desc = (
        f"intraoral-photos ({manifest.parent.name}/manifest.csv) train split ({len(tr)} images: statistics) and "
        f"validation split ({len(va)} images: thresholds); splits.train_val_test_split(val=0.15, test=0.15, seed=42)"
    )
    return [records[i].path for i in tr], [records[i].path for i in va], desc


def ood_fit(
    artifact_dir: str | Path,
    images: Sequence | None = None,
    val_images: Sequence | None = None,
    *,
    k: int = 64,
    fitted_on: str = "",
    log: Callable | None = None,
) -> dict:
    """Fit the out-of-distribution statistics of a photo artefact in its own feature space.

    ``images``: the training images (PIL images or paths) the statistics are fitted on; ``val_images``: the
    calibration images the thresholds are chosen on. Without ``images``, the shared manifest's train and
    validation splits are used; with ``images`` but no ``val_images``, every 5th image is held out for the
    thresholds. Writes ``<artifact_dir>/ood.npz`` and returns the ``"ood"`` section for ``model.json``
    (the caller writes it; ``python -m analysis.ml ood-fit`` does)."""
    from .infer import Predictor

    artifact_dir = Path(artifact_dir)
    desc = fitted_on
    if images is None:
        images, val_images, auto = default_photo_split()
        desc = desc or auto
    elif val_images is None:
        images = list(images)
        val_images = images[::5]
        images = [im for i, im in enumerate(images) if i % 5]
        desc = (
            desc
            or f"{len(images)} images (statistics), every 5th of the given images ({len(val_images)}) for thresholds"
        )
    predictor = Predictor(artifact_dir, device="cpu", ood=False)
    feats = pooled_features(predictor, list(images), log=log)
    stats = fit_ppca(feats, k=k)
    val_feats = pooled_features(predictor, list(val_images), log=log)
    val_scores = ppca_score(stats, val_feats)
    train_scores = ppca_score(stats, feats)
    soft, hard = thresholds_from(val_scores)
    save_stats(artifact_dir / "ood.npz", stats)
    return {
        "method": OOD_METHOD,
        "features": "global-average-pooled final feature map (1280-d), the model's own preprocessing",
        "score": "sqrt(d^2 / 1280), d^2 = PPCA Mahalanobis distance (k leading components + shared residual variance)",
        "components": int(stats["components"].shape[0]),
        "statistics_file": "ood.npz",
        "soft_threshold": round(soft, 4),
        "hard_threshold": round(hard, 4),
        "threshold_rule": (
            f"soft = {SOFT_QUANTILE:.3f} quantile of the validation scores (above: analysed, unfamiliar=True); "
            f"hard = {HARD_MARGIN} x the {HARD_QUANTILE:.3f} quantile (above: not assessed, out_of_distribution)"
        ),
        "fitted_on": desc,
        "validation_unfamiliar_rate": round(float(np.mean(val_scores > soft)), 4),
        "validation_refused_rate": round(float(np.mean(val_scores > hard)), 4),
        "train_score_median": round(float(np.median(train_scores)), 4),
        "validation_score_median": round(float(np.median(val_scores)), 4),
        "fitted": datetime.now(UTC).replace(microsecond=0).isoformat(),
    }


def write_ood_section(artifact_dir: str | Path, section: dict) -> Path:
    """Put ``section`` into ``model.json`` as ``"ood"`` (everything else kept as is)."""
    path = Path(artifact_dir) / "model.json"
    meta = json.loads(path.read_text())
    meta["ood"] = section
    path.write_text(json.dumps(meta, indent=2, allow_nan=False))
    return path


class OodScorer:
    """The ``"ood"`` section of a ``model.json`` + its statistics file; ``score(pooled)``."""

    def __init__(self, artifact_dir: str | Path, section: dict) -> None:
        self.section = section
        self.stats = load_stats(Path(artifact_dir) / section.get("statistics_file", "ood.npz"))
        self.soft = float(section["soft_threshold"])
        self.hard = float(section["hard_threshold"])

    @classmethod
    def from_meta(cls, artifact_dir: str | Path, meta: dict) -> OodScorer | None:
        section = meta.get("ood")
        return cls(artifact_dir, section) if section else None

    def score(self, pooled: np.ndarray) -> np.ndarray:
        return ppca_score(self.stats, pooled)

    def annotate(self, result: dict, score: float) -> dict:
        """Add ``ood_score``, ``unfamiliar`` and, above the hard threshold, the refusal (no findings)."""
        from .gate import GateResult, message

        result["ood_score"] = float(score)
        result["unfamiliar"] = bool(score > self.soft)
        if score > self.hard:
            result["findings"] = []
            result["gate"] = GateResult(
                assessable=False,
                code="out_of_distribution",
                message=message("out_of_distribution", "photo"),
                unfamiliar=True,
                measures={"ood_score": float(score), "soft_threshold": self.soft, "hard_threshold": self.hard},
            ).as_dict()
        return result


__all__ = ["OodScorer", "fit_ppca", "ood_fit", "ppca_score", "thresholds_from", "write_ood_section"]
