"""Data access: manifest CSV (multi-label photos), labelled image folders, YOLO-format boxes.

Everything is reduced to a list of :class:`Record` so splitting, caching and training code do not care
where the images came from.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from . import LABELS

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
PROJECT_ROOT = Path(__file__).resolve().parents[2]
HEALTHY_NAMES = {"healthy", "normal", "none", "no_finding", "nofinding"}


def datasets_root() -> Path:
    """``$DENTAL_DATASETS`` or ``<project root>/../shared/datasets``."""
    env = os.environ.get("DENTAL_DATASETS")
    return Path(env) if env else PROJECT_ROOT.parent / "shared" / "datasets"


def photo_manifest_path() -> Path:
    return datasets_root() / "intraoral-photos" / "manifest.csv"


@dataclass(frozen=True)
class Record:
    path: Path
    labels: tuple[str, ...]  # subset of LABELS; empty = healthy
    group: str
    source: str = ""
    original_size: str = ""

    @property
    def label_key(self) -> str:
        return ";".join(self.labels) if self.labels else "healthy"

    def target(self, labels: Sequence[str] = LABELS) -> np.ndarray:
        return np.array([1.0 if name in self.labels else 0.0 for name in labels], dtype=np.float32)


def _parse_labels(text: str, labels: Sequence[str]) -> tuple[str, ...]:
    parts = {p.strip().lower() for p in text.replace(",", ";").split(";") if p.strip()}
    unknown = parts - set(labels) - HEALTHY_NAMES
    if unknown:
        raise ValueError(f"unknown label(s) {sorted(unknown)}; expected {list(labels)} or 'healthy'")
    return tuple(name for name in labels if name in parts)


def read_manifest(path: str | Path, labels: Sequence[str] = LABELS) -> list[Record]:
    """Read a manifest CSV with columns ``file, labels[, group, source, original_size]``.

    ``file`` is relative to the manifest's folder. ``labels`` is ``;``-separated; ``healthy`` (or an
    empty cell) means none of ``labels``. A missing ``group`` makes every file its own group.
    """
    path = Path(path)
    base = path.parent
    records = []
    with path.open(newline="", encoding="utf-8") as fh:
        for i, row in enumerate(csv.DictReader(fh)):
            file = row["file"]
            records.append(
                Record(
                    path=(base / file).resolve(),
                    labels=_parse_labels(row.get("labels", "") or "", labels),
                    group=row.get("group") or f"file{i:06d}",
                    source=row.get("source", "") or "",
                    original_size=row.get("original_size", "") or "",
                )
            )
    return records


def _file_digest(path: Path) -> str:
    h = hashlib.sha1(usedforsecurity=False)
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_image_folder(root: str | Path, labels: Sequence[str] = LABELS) -> list[Record]:
    """ImageFolder-style layout for "retrain on your own labelled folder".

    ``root/<label>/*.jpg`` where ``<label>`` is one of ``labels`` or ``healthy``; nested sub-folders
    are allowed. A folder name like ``calculus+gingivitis`` (``+`` or ``;``) gives several labels.
    Byte-identical files found in several label folders are merged into one record with the union
    of their labels. Each distinct file is its own group unless a ``groups.csv`` (``file,group``,
    paths relative to ``root``) is present.
    """
    root = Path(root)
    by_digest: dict[str, dict] = {}
    for label_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        names = label_dir.name.replace("+", ";")
        folder_labels = _parse_labels(names, labels)
        for file in sorted(label_dir.rglob("*")):
            if file.suffix.lower() not in IMAGE_EXTENSIONS or not file.is_file():
                continue
            digest = _file_digest(file)
            entry = by_digest.setdefault(digest, {"path": file.resolve(), "labels": set()})
            entry["labels"].update(folder_labels)
    if not by_digest:
        raise ValueError(f"no images found under {root}/<label>/")
    groups: dict[Path, str] = {}
    groups_csv = root / "groups.csv"
    if groups_csv.exists():
        with groups_csv.open(newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                groups[(root / row["file"]).resolve()] = row["group"]
    records = []
    for digest, entry in sorted(by_digest.items(), key=lambda kv: str(kv[1]["path"])):
        records.append(
            Record(
                path=entry["path"],
                labels=tuple(name for name in labels if name in entry["labels"]),
                group=groups.get(entry["path"], digest[:16]),
                source=root.name,
            )
        )
    return records


def read_records(data: str | Path, labels: Sequence[str] = LABELS) -> list[Record]:
    """A manifest CSV file or an image folder."""
    data = Path(data)
    if data.is_dir():
        if (data / "manifest.csv").exists():
            return read_manifest(data / "manifest.csv", labels)
        return read_image_folder(data, labels)
    return read_manifest(data, labels)


def targets(records: Sequence[Record], labels: Sequence[str] = LABELS) -> np.ndarray:
    return np.stack([r.target(labels) for r in records]) if records else np.zeros((0, len(labels)), np.float32)


def load_rgb(path: str | Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


class MultiLabelDataset(Dataset):
    """Records -> (image tensor, multi-hot float target).

    ``images`` may hold pre-decoded images (uint8 CHW tensors or PIL images) aligned with ``records``
    to avoid decoding JPEGs every epoch; otherwise files are opened lazily.
    """

    def __init__(
        self,
        records: Sequence[Record],
        transform: Callable | None = None,
        images: Sequence | None = None,
        labels: Sequence[str] = LABELS,
    ):
        self.records = list(records)
        self.transform = transform
        self.images = images
        self.labels = list(labels)
        if images is not None and len(images) != len(self.records):
            raise ValueError("images and records differ in length")

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        img = self.images[i] if self.images is not None else load_rgb(self.records[i].path)
        if self.transform is not None:
            img = self.transform(img)
        return img, torch.from_numpy(self.records[i].target(self.labels))


# --------------------------------------------------------------------------- YOLO (X-ray work)


@dataclass
class YoloSample:
    image: Path
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))  # cx, cy, w, h (0..1)
    classes: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))


def read_yolo_split(split_dir: str | Path) -> list[YoloSample]:
    """Read ``<split>/images/*.jpg`` + ``<split>/labels/*.txt`` (``class cx cy w h`` per line)."""
    split_dir = Path(split_dir)
    samples = []
    for img in sorted((split_dir / "images").iterdir()):
        if img.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        label_file = split_dir / "labels" / (img.stem + ".txt")
        boxes, classes = [], []
        if label_file.exists():
            for line in label_file.read_text().splitlines():
                parts = line.split()
                if len(parts) < 5:
                    continue
                classes.append(int(float(parts[0])))
                boxes.append([float(v) for v in parts[1:5]])
        samples.append(
            YoloSample(
                image=img,
                boxes=np.array(boxes, np.float32).reshape(-1, 4),
                classes=np.array(classes, np.int64),
            )
        )
    return samples


def yolo_to_xyxy(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Normalised (cx, cy, w, h) -> absolute (x1, y1, x2, y2)."""
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    out = np.empty_like(b)
    out[:, 0] = (b[:, 0] - b[:, 2] / 2) * width
    out[:, 1] = (b[:, 1] - b[:, 3] / 2) * height
    out[:, 2] = (b[:, 0] + b[:, 2] / 2) * width
    out[:, 3] = (b[:, 1] + b[:, 3] / 2) * height
    return out
