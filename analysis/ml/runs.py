"""Helpers shared by the photo (``train``) and X-ray (``detect_train``) training loops."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import numpy as np
import torch


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (the per-epoch reseed makes a resumed run repeat the same epoch)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def deadline_ts(deadline: str) -> float | None:
    """``--deadline`` (ISO time, UTC when no zone is given) as a Unix timestamp; None when unset."""
    if not deadline:
        return None
    dt = datetime.fromisoformat(deadline)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()
