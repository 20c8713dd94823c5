"""YOLO-format detection data: ``<root>/images/*.jpg`` + ``<root>/labels/*.txt`` (``class cx cy w h``).

Boxes are kept normalised to the image (0..1) as ``x1, y1, x2, y2`` so they survive any resize.

Roboflow exports name augmented copies of one source radiograph ``<source>_jpg.rf.<hash>.jpg``: the part
before ``_jpg`` (:func:`source_group`) identifies the source image, and every split made here keeps all
copies of one source on the same side (:func:`group_split`).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

XRAY_LABELS = ["Cavity", "Fillings", "Impacted Tooth", "Implant"]
"""Class ids 0..3 of the shared dental-xrays set, in this order."""

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")

_RF_RE = re.compile(r"^(?P<src>.+?)_(?:jpe?g|png|bmp|tiff?)\.rf\.[0-9a-f]+$", re.IGNORECASE)


@dataclass
class DetRecord:
    path: Path
    boxes: np.ndarray  # (N, 4) float32, normalised x1 y1 x2 y2
    labels: np.ndarray  # (N,) int64 class ids
    group: str = ""
    extra: dict = field(default_factory=dict)


def source_group(path: str | Path) -> str:
    """Source-image id of a Roboflow file name (``0001_jpg.rf.abc.jpg`` -> ``0001``); else the stem."""
    stem = Path(path).stem
    m = _RF_RE.match(stem)
    return m.group("src") if m else stem


def read_label_file(path: Path, num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    boxes, labels = [], []
    if path.is_file():
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) < 5:
                continue
            c = int(float(parts[0]))
            cx, cy, w, h = (float(v) for v in parts[1:5])
            if num_classes is not None and not 0 <= c < num_classes:
                continue
            x1, y1 = max(0.0, cx - w / 2), max(0.0, cy - h / 2)
            x2, y2 = min(1.0, cx + w / 2), min(1.0, cy + h / 2)
            if x2 - x1 <= 1e-4 or y2 - y1 <= 1e-4:
                continue
            boxes.append((x1, y1, x2, y2))
            labels.append(c)
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    return b, np.asarray(labels, dtype=np.int64)


def read_yolo_split(root: str | Path, num_classes: int = len(XRAY_LABELS), limit: int = 0) -> list[DetRecord]:
    """All images under ``root/images`` with their boxes from ``root/labels`` (missing file = no boxes)."""
    root = Path(root)
    img_dir = root / "images" if (root / "images").is_dir() else root
    lbl_dir = root / "labels"
    paths = sorted(p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if limit:
        paths = paths[:limit]
    out = []
    for p in paths:
        boxes, labels = read_label_file(lbl_dir / f"{p.stem}.txt", num_classes)
        out.append(DetRecord(path=p, boxes=boxes, labels=labels, group=source_group(p)))
    return out


def group_split(
    records: Sequence[DetRecord], val_fraction: float = 0.15, seed: int = 42
) -> tuple[list[int], list[int]]:
    """Train/validation indices with whole source groups on one side.

    Groups are shuffled with ``seed`` and assigned to validation until it holds ``val_fraction`` of the
    images; a greedy pass then keeps every class present in validation when the training side has it.
    """
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        groups.setdefault(r.group, []).append(i)
    names = sorted(groups)
    rng = random.Random(seed)
    rng.shuffle(names)
    target = val_fraction * len(records)
    val_groups: list[str] = []
    n_val = 0
    for g in names:
        if n_val >= target:
            break
        val_groups.append(g)
        n_val += len(groups[g])
    vset = set(val_groups)
    # make sure each class that exists at all is represented in validation
    all_classes = {int(c) for r in records for c in r.labels}
    have = {int(c) for g in vset for i in groups[g] for c in records[i].labels}
    for c in sorted(all_classes - have):
        for g in names:
            if g not in vset and any(c in records[i].labels for i in groups[g]):
                vset.add(g)
                break
    val = sorted(i for g in vset for i in groups[g])
    train = sorted(i for g in names if g not in vset for i in groups[g])
    return train, val


def shared_groups(a: Sequence[DetRecord], b: Sequence[DetRecord]) -> list[str]:
    return sorted({r.group for r in a} & {r.group for r in b})


def class_counts(records: Sequence[DetRecord], labels: Sequence[str] = XRAY_LABELS) -> dict[str, dict[str, int]]:
    out = {}
    for c, name in enumerate(labels):
        out[name] = {
            "boxes": int(sum(int((r.labels == c).sum()) for r in records)),
            "images": int(sum(int((r.labels == c).any()) for r in records)),
        }
    return out
