"""Model-input copies: an image already reduced exactly as a model's own preprocessing reduces it.

Decoding and resizing a stored full-size PNG (1280x960: ~26 ms) cost the worker about as much as the photo
model itself (bench/bench_throughput.py, 2 CPU cores). Intake decodes every upload anyway (to validate it
and rebuild it without metadata), so it also keeps the image at the active model's input size (a 224x224
PNG: ~1.8 ms to decode and preprocess). The worker uses that copy only when its ``spec`` equals the
model's: any other model (another input size or preprocessing) reads the original as before, so results
never depend on which copy was read: :func:`reduce` is the first step of the predictors' own
preprocessing, and applying that step to its own output changes nothing (a resize to the same size is a
copy; an 8-bit greyscale image is windowed as is).

No torch here: the web process makes these copies at upload.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image

# Bump a version when the reduction changes, so that copies made by the old code are not used.
PHOTO_SPEC = "photo-rgb8-stretch-bilinear-v1-{size}"
XRAY_SPEC = "xray-grey8-p0.5-99.5-stretch-bilinear-v1-{size}"


def xray_to_uint8_grey(img: Image.Image) -> np.ndarray:
    """Any Pillow image (8/16-bit greyscale, RGB, palette, ...) -> HxW uint8 array.

    16-bit (and 32-bit/float) images are windowed to 8 bit between their 0.5th and 99.5th percentiles."""
    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float32)
        if arr.ndim == 3:
            arr = arr.mean(-1)
        lo, hi = np.percentile(arr, [0.5, 99.5]) if arr.size else (0.0, 1.0)
        if hi <= lo:
            lo, hi = float(arr.min()), float(arr.max())
        if hi <= lo:
            return np.zeros(arr.shape, dtype=np.uint8)
        return np.clip((arr - lo) * (255.0 / (hi - lo)), 0, 255).round().astype(np.uint8)
    if mode in ("RGBA", "LA", "PA", "P"):
        img = img.convert("RGBA")
        bg = Image.new("RGBA", img.size, (0, 0, 0, 255))
        img = Image.alpha_composite(bg, img)
    if img.mode != "L":
        img = img.convert("L")
    return np.asarray(img, dtype=np.uint8)


def photo_reduce(img: Image.Image, size: int) -> Image.Image:
    """The photo classifier's resize: RGB, whole image stretched to size x size, PIL bilinear."""
    return img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)


def xray_reduce(img: Image.Image, size: int) -> Image.Image:
    """The X-ray detector's reduction: 8-bit greyscale (16-bit windowed), stretched to size x size."""
    im = Image.fromarray(xray_to_uint8_grey(img), mode="L")
    if im.size != (size, size):
        im = im.resize((size, size), Image.Resampling.BILINEAR)
    return im


def spec(meta: Mapping[str, Any]) -> str:
    """What a model's input copy must be, from its ``model.json``; "" when it takes no copy."""
    size = int(meta.get("input_size") or 0)
    if size <= 0 or meta.get("colour_constancy"):
        # colour constancy runs on the whole original before the resize (infer.Predictor.prepare): a reduced
        # copy would not give exactly the same pixels, so such a model reads the original
        return ""
    if meta.get("modality") == "photo":
        return PHOTO_SPEC.format(size=size)
    if meta.get("modality") == "xray" and meta.get("resize", "stretch") == "stretch":
        return XRAY_SPEC.format(size=size)
    return ""


def reduce(img: Image.Image, meta: Mapping[str, Any]) -> Image.Image:
    size = int(meta["input_size"])
    return photo_reduce(img, size) if meta.get("modality") == "photo" else xray_reduce(img, size)


def encode(img: Image.Image) -> bytes:
    """Lossless (PNG): the copy must give the model exactly the pixels the original would."""
    buf = io.BytesIO()
    img.save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def decode(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def make(img: Image.Image, meta: Mapping[str, Any]) -> tuple[str, bytes] | None:
    """``(spec, PNG bytes)`` of the copy for this model, or None when the model takes none."""
    s = spec(meta)
    return (s, encode(reduce(img, meta))) if s else None


__all__ = ["PHOTO_SPEC", "XRAY_SPEC", "decode", "encode", "make", "reduce", "spec", "xray_to_uint8_grey"]
