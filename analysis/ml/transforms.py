"""Image preprocessing (torchvision.transforms.v2).

Evaluation / inference preprocessing (deterministic, identical for every class and source):
    1. convert to RGB,
    2. resize the *whole* image to ``size x size`` with PIL bilinear (antialiased) resampling, i.e. the
       aspect ratio is squashed, nothing is cropped (lesions at the border stay visible),
    3. scale to [0, 1], normalise with mean 0.5 / std 0.5 -> [-1, 1].
Bounding boxes and heatmaps are therefore expressed directly in normalised coordinates of the original
image.

Training augmentation is designed to break "source" shortcuts (image size, aspect ratio, JPEG quality,
colour cast, sharpness) that separate the public data sets' classes:
random resized crops over a wide aspect range (0.45-2.4, covering the 1.5 and 2.3 aspect ratios of the
source photos, so the squash distortion carries no label information), scale 0.25-1, flips, rotation,
brightness/contrast/saturation/hue jitter, per-channel white-balance gains, random down-and-up-sampling,
Gaussian blur and JPEG re-compression at a random quality.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from .model import MEAN, STD
from .model_input import photo_reduce

EVAL_PREPROCESSING = (
    "RGB; resize whole image to {size}x{size} (PIL bilinear, antialiased, aspect ratio not preserved, "
    "no crop); scale to [0,1]; normalise mean 0.5 std 0.5 -> [-1,1]"
)


def eval_resize_pil(img: Image.Image, size: int) -> Image.Image:
    """Deterministic evaluation resize used by training-time validation, evaluation and inference."""
    return photo_reduce(img, size)


def center_square_resize_pil(img: Image.Image, size: int) -> Image.Image:
    """Shortcut-audit preprocessing: centre crop to a square, then resize (same for every image)."""
    img = img.convert("RGB")
    w, h = img.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return img.crop((left, top, left + s, top + s)).resize((size, size), Image.Resampling.BILINEAR)


def train_cache_resize_pil(img: Image.Image, size: int, max_aspect: float = 2.4) -> Image.Image:
    """Resize once before caching training images: shorter side -> ``size`` (longer side capped)."""
    img = img.convert("RGB")
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    nw, nh = min(nw, int(size * max_aspect)), min(nh, int(size * max_aspect))
    return img.resize((nw, nh), Image.Resampling.BILINEAR)


def pil_to_uint8(img: Image.Image) -> torch.Tensor:
    return F.pil_to_tensor(img.convert("RGB"))


def to_model_input(x: torch.Tensor) -> torch.Tensor:
    """uint8 CHW (or NCHW) -> normalised float."""
    x = x.float().div_(255.0)
    mean = torch.tensor(MEAN, dtype=x.dtype).view(-1, 1, 1)
    std = torch.tensor(STD, dtype=x.dtype).view(-1, 1, 1)
    return (x - mean) / std


class RandomWhiteBalance(torch.nn.Module):
    """Multiply R, G, B by independent random gains (simulates camera white balance / colour cast)."""

    def __init__(self, max_gain: float = 0.15, p: float = 0.7):
        super().__init__()
        self.max_gain, self.p = max_gain, p

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if random.random() >= self.p:
            return img
        gains = torch.empty(3, 1, 1).uniform_(1 - self.max_gain, 1 + self.max_gain)
        return (img.float() * gains).clamp_(0, 255).to(torch.uint8)


class RandomResample(torch.nn.Module):
    """Down-sample then up-sample back (simulates low-resolution sources / phone cameras)."""

    def __init__(self, min_factor: float = 0.35, p: float = 0.3):
        super().__init__()
        self.min_factor, self.p = min_factor, p

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if random.random() >= self.p:
            return img
        h, w = img.shape[-2:]
        f = random.uniform(self.min_factor, 0.9)
        small = F.resize(img, [max(8, int(h * f)), max(8, int(w * f))], antialias=True)
        return F.resize(small, [h, w], antialias=True)


def train_transform(size: int) -> v2.Compose:
    """Augmentation for uint8 CHW tensors (or PIL images); returns a normalised float tensor."""
    return v2.Compose(
        [
            v2.ToImage(),
            v2.RandomResizedCrop(size, scale=(0.25, 1.0), ratio=(0.45, 2.4), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomVerticalFlip(p=0.2),
            v2.RandomApply([v2.RandomRotation(20)], p=0.3),
            v2.RandomApply([v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.4, hue=0.04)], p=0.8),
            RandomWhiteBalance(0.15, p=0.7),
            RandomResample(0.35, p=0.3),
            v2.RandomApply([v2.GaussianBlur(5, sigma=(0.1, 1.8))], p=0.25),
            v2.RandomApply([v2.JPEG(quality=(30, 95))], p=0.5),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(MEAN, STD),
        ]
    )


def eval_transform(size: int) -> v2.Compose:
    """PIL image -> normalised tensor with the documented deterministic resize."""
    return v2.Compose(
        [
            v2.Lambda(lambda im: eval_resize_pil(im, size) if isinstance(im, Image.Image) else im),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(MEAN, STD),
        ]
    )


def tensor_eval_transform() -> v2.Compose:
    """Already-resized uint8 tensor -> normalised tensor."""
    return v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])


def grey_world(img: Image.Image, strength: float = 1.0, max_gain: float = 2.0) -> Image.Image:
    """Grey-world colour constancy: scale each channel so the image's mean colour becomes neutral grey
    (``strength`` 1 = fully, 0 = unchanged; gains clipped to ``[1/max_gain, max_gain]``). Removes the colour
    cast of a camera, a lamp or a white-balance setting, which otherwise tells a model which source (and so
    which label) a photo came from. Used when ``model.json`` says ``"colour_constancy": "grey_world"``."""
    arr = np.asarray(img.convert("RGB"), dtype=np.float32)
    means = arr.reshape(-1, 3).mean(axis=0) + 1e-3
    gains = np.clip((means.mean() / means) ** strength, 1.0 / max_gain, max_gain)
    return Image.fromarray(np.clip(arr * gains, 0, 255).astype(np.uint8))
