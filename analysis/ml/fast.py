"""Faster CPU inference for the photo classifier, with the same outputs as ``infer.Predictor``.

Measured on the 2-core CPU machine (``bench/bench_throughput.py``, bench/README.md), the worker's time per
photo splits into PNG decode + resize (about 30 ms for a 1280x960 original, single-threaded) and the model
(about 30-40 ms per image in eager PyTorch on one thread, whatever the batch size). Two changes help:

1. ``decode_many``: decode and resize the batch's images in a thread pool. Pillow releases the GIL while
   decoding and resizing, so this uses every core instead of one (the model runs after, on all cores).
2. ``OnnxPhotoPredictor``: run the same weights through ONNX Runtime (exported once per artefact with
   ``torch.onnx.export``, cached by the weights' SHA-256). Its fused kernels run EfficientNet-Lite0 about 3x
   faster than eager PyTorch on this CPU; scores match to ~1e-7. Same ``predict`` signature and result
   shape (scores, findings with boxes and heatmaps) as ``Predictor``. The exported graph also outputs the
   pooled features, so an artefact with an ``"ood"`` section gets the same ``ood_score`` / ``unfamiliar`` /
   ``gate`` as ``Predictor``; ``"colour_constancy": "grey_world"`` is applied before the resize here too.

Wiring (owner of infer.py / registry.py / services.py decides):
- ``analysis.registry._load``: ``fast.maybe_onnx(make_predictor(path))`` when
  ``settings.ANALYSIS_ONNX`` is on (falls back to the PyTorch predictor without onnxruntime);
- ``analysis.services.analysis_execute``: read the blobs first, then ``fast.decode_many(datas)``.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import threading
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .explain import heatmap_box, normalise_cams
from .transforms import eval_resize_pil, grey_world

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool  # noqa: PLW0603 - one pool per process
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=max(1, len(os.sched_getaffinity(0))), thread_name_prefix="decode")
        return _pool


def _decode(data: bytes, size: int | None) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return eval_resize_pil(img, size) if size else img


def decode_many(datas: Sequence[bytes], size: int | None = None) -> list[Image.Image]:
    """Decode (and, given ``size``, resize to the model input exactly as ``eval_resize_pil``) in parallel.
    Resizing here is harmless for ``Predictor``: its own resize of an image already at ``size`` is a no-op
    copy. Boxes and heatmaps are normalised, so they do not depend on the pixel size."""
    if len(datas) <= 1:
        return [_decode(d, size) for d in datas]
    return list(_executor().map(lambda d: _decode(d, size), datas))


class _CamModule(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        fmap = self.model.features(x)
        logits = self.model.logits_from_features(fmap)
        cams = torch.relu(torch.einsum("nkhw,ck->nchw", fmap, self.model.head.weight))
        return logits, cams, fmap.mean(dim=(2, 3))


def export_onnx(predictor: Any, path: Path) -> Path:
    """Export ``predictor.model`` (logits, class-activation maps and pooled features, dynamic batch) to ``path``."""
    import copy

    module = _CamModule(copy.deepcopy(predictor.model).to(memory_format=torch.contiguous_format)).eval()
    example = torch.zeros(2, 3, predictor.input_size, predictor.input_size)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    with warnings.catch_warnings():  # the TorchScript exporter's constant-folding notes are noise here
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            str(tmp),
            input_names=["x"],
            output_names=["logits", "cams", "pooled"],
            dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}, "cams": {0: "n"}, "pooled": {0: "n"}},
            opset_version=17,
            dynamo=False,
        )
    os.replace(tmp, path)  # atomic: concurrent workers never read a half-written file
    return path


def _cache_dir() -> Path:
    base = os.environ.get("DENTALSCAN_ONNX_CACHE") or os.path.join(tempfile.gettempdir(), "dentalscan-onnx")
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path


class OnnxPhotoPredictor:
    """``infer.Predictor``'s ``predict`` on ONNX Runtime (CPU). Built from a loaded ``Predictor``."""

    def __init__(self, predictor: Any, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.base = predictor
        for name in (
            "name",
            "version",
            "model_id",
            "labels",
            "thresholds",
            "input_size",
            "batch_size",
            "meta",
            "colour_constancy",
            "ood",
        ):
            setattr(self, name, getattr(predictor, name))
        self.device = torch.device("cpu")
        weights = Path(predictor.artifact_dir) / "weights.pt"
        digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:16]
        # "-v2": the graph has the pooled-features output (files exported before it have two outputs)
        path = _cache_dir() / f"{predictor.name}-{predictor.version}-{digest}-v2.onnx"
        if not path.exists():
            export_onnx(predictor, path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._temp = predictor._temp.numpy()
        self._bias = predictor._bias.numpy()
        self._lock = threading.Lock()

    def _preprocess(self, images: Sequence[Image.Image]) -> np.ndarray:
        size = self.input_size
        if self.colour_constancy == "grey_world":  # before the resize, as Predictor._preprocess
            images = [grey_world(im) for im in images]
        arrays = [
            np.asarray(im if im.size == (size, size) and im.mode == "RGB" else eval_resize_pil(im, size), np.uint8)
            for im in images
        ]
        x = np.stack(arrays).astype(np.float32)
        # to_model_input: x / 255, then (x - 0.5) / 0.5
        x = (x / np.float32(255.0) - np.float32(0.5)) / np.float32(0.5)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def predict(
        self,
        images: Sequence[Image.Image],
        explain: bool = True,
        batch_size: int | None = None,
        min_probability: float | None = None,
    ) -> list[dict]:
        if self.base.tta:  # test-time augmentation is not exported: use the PyTorch path
            return self.base.predict(images, explain=explain, batch_size=batch_size, min_probability=min_probability)
        bs = batch_size or self.batch_size
        results: list[dict] = []
        with self._lock:
            for start in range(0, len(images), bs):
                chunk = list(images[start : start + bs])
                logits, cams, pooled = self.session.run(None, {"x": self._preprocess(chunk)})
                ood_scores = self.ood.score(pooled) if self.ood is not None else None
                probs = 1.0 / (1.0 + np.exp(-(logits / self._temp + self._bias)))
                heatmaps = normalise_cams(torch.from_numpy(cams)) if explain else None
                for i in range(len(chunk)):
                    scores = {name: float(probs[i, c]) for c, name in enumerate(self.labels)}
                    findings = []
                    for c, name in enumerate(self.labels):
                        cut = self.thresholds[name] if min_probability is None else min_probability
                        if scores[name] >= cut:
                            finding: dict[str, Any] = {"condition": name, "probability": scores[name]}
                            if explain:
                                finding["box"] = heatmap_box(heatmaps[i, c])
                                finding["heatmap"] = heatmaps[i, c]
                            else:
                                finding["box"] = finding["heatmap"] = None
                            findings.append(finding)
                    findings.sort(key=lambda f: -f["probability"])
                    result = {"scores": scores, "findings": findings}
                    if ood_scores is not None:
                        self.ood.annotate(result, float(ood_scores[i]))
                    results.append(result)
        return results


def maybe_onnx(predictor: Any) -> Any:
    """The ONNX Runtime version of a photo ``Predictor`` on CPU when onnxruntime is installed; else as is."""
    if getattr(predictor, "device", torch.device("cpu")).type != "cpu" or not hasattr(predictor, "_temp"):
        return predictor
    try:
        return OnnxPhotoPredictor(predictor)
    except ImportError:
        return predictor


__all__ = ["OnnxPhotoPredictor", "decode_many", "export_onnx", "maybe_onnx"]
