"""Visual explanations: class-activation heatmaps and boxes.

The classifier is a global-average-pooled conv trunk followed by one linear layer, so Grad-CAM's channel
weights (spatially averaged gradients) are exactly the linear head's weights for that class; the map
``ReLU(sum_k w_ck * A_k)`` computed in :meth:`PhotoClassifier.forward_with_cam` *is* Grad-CAM (up to a
positive factor) and needs no backward pass. Here the map is normalised to [0, 1], upsampled to a small
fixed grid (``HEATMAP_SIZE``) and thresholded to give one box.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

HEATMAP_SIZE = 28
BOX_THRESHOLD = 0.5


def normalise_cams(cams: torch.Tensor, size: int = HEATMAP_SIZE) -> np.ndarray:
    """(N, C, h, w) non-negative maps -> (N, C, size, size) float32 in [0, 1] (per-map max = 1)."""
    cams = cams.float()
    up = F.interpolate(cams, size=(size, size), mode="bilinear", align_corners=False).clamp_min_(0)
    peak = up.flatten(2).amax(dim=2).clamp_min(1e-12)[..., None, None]
    out = (up / peak).clamp_(0, 1)
    return out.cpu().numpy().astype(np.float32)


def heatmap_box(heatmap: np.ndarray, threshold: float = BOX_THRESHOLD) -> list[float]:
    """Box [x, y, w, h] (normalised 0..1) around the largest connected region >= ``threshold``.

    Falls back to the whole image when the map is empty.
    """
    h, w = heatmap.shape
    mask = heatmap >= threshold
    if not mask.any():
        return [0.0, 0.0, 1.0, 1.0]
    try:
        from scipy import ndimage

        lab, n = ndimage.label(mask)
        if n > 1:
            # keep the component holding the most activation mass
            mass = ndimage.sum(heatmap, lab, index=np.arange(1, n + 1))
            mask = lab == (int(np.argmax(mass)) + 1)
    except ImportError:  # pragma: no cover - scipy ships with scikit-learn
        pass
    ys, xs = np.nonzero(mask)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    box = [x0 / w, y0 / h, (x1 - x0) / w, (y1 - y0) / h]
    return [float(min(max(v, 0.0), 1.0)) for v in box]
