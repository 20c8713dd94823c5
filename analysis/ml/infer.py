"""Inference on a shipped artefact folder (``analysis/models/photo/<version>/`` or ``.../xray/<version>/``).

:func:`make_predictor` / :func:`load_predictor` pick the class from ``model.json``'s ``modality``:
:class:`Predictor` (photo classifier) or :class:`XrayPredictor` (X-ray findings detector, see below).

    >>> from analysis.ml.infer import load_predictor
    >>> p = load_predictor(artifact_dir)
    >>> p.predict([pil_image], explain=True)
    [{"scores": {"caries": 0.12, ...}, "findings": [{"condition": ..., "probability": ..., "box": [x, y, w, h],
      "heatmap": np.ndarray}]}]

Scores are calibrated probabilities ``sigmoid(logit / temperature[label] + logit_bias[label])``;
a finding is reported for each label whose score is >= its shipped threshold. Boxes and heatmaps are in
normalised coordinates of the input image (the preprocessing resizes the whole image, no crop).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from .detection import build_detector, detect_hflip_tta, preprocess_xray, select_device
from .explain import heatmap_box, normalise_cams
from .model import build_model
from .transforms import eval_resize_pil, grey_world, pil_to_uint8, to_model_input


class Predictor:
    def __init__(self, artifact_dir: str | Path, device: str | torch.device | None = None, batch_size: int = 16):
        self.artifact_dir = Path(artifact_dir)
        meta = json.loads((self.artifact_dir / "model.json").read_text())
        self.meta = meta
        self.name = meta["name"]
        self.version = meta["version"]
        self.model_id = f"{self.name}@{self.version}"
        self.labels: list[str] = list(meta["labels"])
        self.thresholds: dict[str, float] = {k: float(v) for k, v in meta["thresholds"].items()}
        temp = meta.get("temperature", 1.0)
        bias = meta.get("logit_bias", 0.0)
        self.temperature = temp if isinstance(temp, dict) else dict.fromkeys(self.labels, float(temp))
        self.logit_bias = bias if isinstance(bias, dict) else dict.fromkeys(self.labels, float(bias))
        self.input_size = int(meta["input_size"])
        self.tta = meta.get("tta", "") or ""
        self.colour_constancy = meta.get("colour_constancy", "") or ""
        self.batch_size = batch_size
        self.device = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        model = build_model(len(self.labels), self.input_size, pretrained=False)
        state = torch.load(self.artifact_dir / "weights.pt", map_location="cpu", weights_only=True)
        state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
        model.load_state_dict(state)
        model.eval().to(self.device)
        if self.device.type == "cpu":
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self._temp = torch.tensor([float(self.temperature[k]) for k in self.labels])
        self._bias = torch.tensor([float(self.logit_bias[k]) for k in self.labels])
        self._lock = threading.Lock()

    def _preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        if self.colour_constancy == "grey_world":  # before the resize, as in training
            images = [grey_world(im) for im in images]
        x = torch.stack([pil_to_uint8(eval_resize_pil(im, self.input_size)) for im in images])
        x = to_model_input(x)
        if self.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        return x.to(self.device)

    def predict(
        self,
        images: Sequence[Image.Image],
        explain: bool = True,
        batch_size: int | None = None,
        min_probability: float | None = None,
    ) -> list[dict]:
        """Scores for every label and findings for labels at or above their threshold, or at or above
        ``min_probability`` when given (the platform stores candidates and lets each clinic choose
        its own operating point)."""
        bs = batch_size or self.batch_size
        results: list[dict] = []
        use_amp = self.device.type == "cuda"
        with self._lock, torch.inference_mode():
            for start in range(0, len(images), bs):
                chunk = list(images[start : start + bs])
                x = self._preprocess(chunk)
                with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=use_amp):
                    if explain:
                        logits, cams = self.model.forward_with_cam(x)
                    else:
                        logits, cams = self.model(x), None
                    if self.tta == "hflip":  # average with the mirrored image (maps flipped back)
                        xf = x.flip(-1)
                        if explain:
                            logits_f, cams_f = self.model.forward_with_cam(xf)
                            cams = (cams.float() + cams_f.float().flip(-1)) / 2
                        else:
                            logits_f = self.model(xf)
                        logits = (logits.float() + logits_f.float()) / 2
                logits = logits.float().cpu()
                probs = torch.sigmoid(logits / self._temp + self._bias).numpy()
                heatmaps = normalise_cams(cams) if explain else None
                for i in range(len(chunk)):
                    scores = {name: float(probs[i, c]) for c, name in enumerate(self.labels)}
                    findings = []
                    for c, name in enumerate(self.labels):
                        cut = self.thresholds[name] if min_probability is None else min_probability
                        if scores[name] >= cut:
                            finding = {"condition": name, "probability": scores[name]}
                            if explain:
                                hm = heatmaps[i, c]
                                finding["box"] = heatmap_box(hm)
                                finding["heatmap"] = hm
                            else:
                                finding["box"] = None
                                finding["heatmap"] = None
                            findings.append(finding)
                    findings.sort(key=lambda f: -f["probability"])
                    results.append({"scores": scores, "findings": findings})
        return results


class XrayPredictor:
    """X-ray findings detector (FCOS on EfficientNet-Lite0 + FPN).

    ``predict`` returns, per image, ``scores`` = the highest box score per class (0 when the class has no
    box) and ``findings`` = every detected box with score >= ``min_probability`` (default: the model's own
    floor, ``score_threshold`` in model.json, 0.001), highest first, each
    ``{"condition", "probability", "box": [x, y, w, h], "heatmap": None}`` with the box normalised to the
    original image (top-left x, y, width, height in 0..1). No per-class threshold is applied here: the
    shipped ``thresholds`` are suggested display operating points (F1-optimal on validation).
    """

    def __init__(
        self, artifact_dir: str | Path, device: str | torch.device | None = None, batch_size: int | None = None
    ):
        self.artifact_dir = Path(artifact_dir)
        meta = json.loads((self.artifact_dir / "model.json").read_text())
        self.meta = meta
        self.name = meta["name"]
        self.version = meta["version"]
        self.model_id = f"{self.name}@{self.version}"
        self.labels: list[str] = list(meta["labels"])
        self.thresholds: dict[str, float] = {k: float(v) for k, v in meta.get("thresholds", {}).items()}
        self.input_size = int(meta["input_size"])
        self.score_threshold = float(meta.get("score_threshold", 0.001))
        self.device = select_device(str(device) if device else None)
        # On CPU one image at a time is faster per image than batches (bench/bench_xray_inference.py: 197 vs
        # 375 ms at batch 4, 512 px, 2 cores): batching pads and runs FCOS's box decoding over the batch.
        self.batch_size = batch_size or (4 if self.device.type == "cuda" else 1)
        model = build_detector(
            len(self.labels),
            self.input_size,
            pretrained=False,
            score_thresh=self.score_threshold,
            detections_per_img=int(meta.get("detections_per_img", 100)),
            nms_thresh=float(meta.get("nms_threshold", 0.6)),
            fpn_channels=int(meta.get("fpn_channels", 96)),
        )
        state = torch.load(self.artifact_dir / "weights.pt", map_location="cpu", weights_only=True)
        state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
        model.load_state_dict(state)
        self.model = model.eval().to(self.device)
        self.tta = meta.get("tta", "") or ""  # "hflip": the mirror image's boxes merged in (model card)
        self._lock = threading.Lock()

    def _preprocess(self, images: Sequence[Image.Image]) -> list[torch.Tensor]:
        return [preprocess_xray(im, self.input_size).float().div_(255.0).to(self.device) for im in images]

    def predict(
        self,
        images: Sequence[Image.Image],
        explain: bool = True,
        batch_size: int | None = None,
        min_probability: float | None = None,
    ) -> list[dict]:
        bs = batch_size or self.batch_size
        floor = self.score_threshold if min_probability is None else float(min_probability)
        size = float(self.input_size)
        results: list[dict] = []
        with self._lock, torch.inference_mode():
            for start in range(0, len(images), bs):
                chunk = list(images[start : start + bs])
                xs = self._preprocess(chunk)
                # fp32 (no autocast): box decoding and NMS stay exact
                dets = detect_hflip_tta(self.model, xs) if self.tta == "hflip" else self.model(xs)
                for d in dets:
                    boxes = (d["boxes"].float().cpu() / size).clamp_(0.0, 1.0).tolist()
                    scores = d["scores"].float().cpu().tolist()
                    labels = d["labels"].cpu().tolist()
                    best = dict.fromkeys(self.labels, 0.0)
                    findings = []
                    for (x1, y1, x2, y2), s, c in zip(boxes, scores, labels, strict=True):
                        name = self.labels[int(c)]
                        best[name] = max(best[name], float(s))
                        if s >= floor:
                            findings.append(
                                {
                                    "condition": name,
                                    "probability": float(s),
                                    "box": [x1, y1, max(0.0, x2 - x1), max(0.0, y2 - y1)],
                                    "heatmap": None,
                                }
                            )
                    findings.sort(key=lambda f: -f["probability"])
                    results.append({"scores": best, "findings": findings})
        return results


def make_predictor(artifact_dir: str | Path, device: str | None = None):
    """:class:`XrayPredictor` for a detection artefact (``modality`` xray), else :class:`Predictor`."""
    meta = json.loads((Path(artifact_dir) / "model.json").read_text())
    if meta.get("modality") == "xray" or meta.get("task") == "detection":
        return XrayPredictor(artifact_dir, device=device)
    return Predictor(artifact_dir, device=device)


_CACHE: dict[tuple[str, str], Predictor | XrayPredictor] = {}
_CACHE_LOCK = threading.Lock()


def load_predictor(artifact_dir: str | Path, device: str | None = None) -> Predictor | XrayPredictor:
    """Load (once per process and artefact folder) the predictor of an artefact (see :func:`make_predictor`)."""
    key = (str(Path(artifact_dir).resolve()), str(device))
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = make_predictor(artifact_dir, device=device)
        return _CACHE[key]


def clear_cache() -> None:
    with _CACHE_LOCK:
        _CACHE.clear()


__all__ = ["Predictor", "XrayPredictor", "make_predictor", "load_predictor", "clear_cache"]
