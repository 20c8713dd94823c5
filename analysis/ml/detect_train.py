"""Training of the X-ray findings detector (FCOS on EfficientNet-Lite0 + FPN).

Recipe (see ``DetTrainConfig``): YOLO-format training folder; validation split carved from it by
*source radiograph* (:func:`analysis.ml.yolo.group_split`: Roboflow copies never straddle train and
validation); images decoded once, converted to greyscale and resized (stretched) to ``input_size``
into an in-memory uint8 cache; augmentation = horizontal flip (p 0.5), random scale 0.75-1.25 with
random crop / zero padding back to the input size (p 0.7), brightness/contrast jitter (p 0.8); AdamW
with linear warm-up and a per-step cosine schedule over ``epochs`` -- or, with ``time_budget_min``, over
whichever runs out first, the planned steps or the wall-clock budget (training then stops when the budget
is spent, so a busy shared CPU still ends with a fully annealed learning rate); fixed seed; validation
COCO mAP after each epoch; ``last.pt`` (resumable: model, optimiser, step/time counters, history) after
every epoch and ``best.pt``
for the best validation mAP@0.5. Uses the GPU when one is present (``device="auto"``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as TF
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler
from tqdm.auto import tqdm

from .data import datasets_root
from .detect_metrics import mean_ap
from .detection import build_detector, detect_hflip_tta, hardware_description, select_device
from .model import load_init_weights
from .model_input import xray_reduce
from .runs import deadline_ts, set_seed
from .yolo import XRAY_LABELS, DetRecord, class_counts, group_split, read_yolo_split


def default_xray_root() -> Path:
    """``$DENTAL_DATASETS/dental-xrays`` or ``<project root>/../shared/datasets/dental-xrays``."""
    return datasets_root() / "dental-xrays"


@dataclass
class DetTrainConfig:
    data: str  # YOLO folder with images/ and labels/ (the shared train/ split)
    run_dir: str
    test_data: str = ""  # optional YOLO folder evaluated by ``evaluate-xray``
    labels: list[str] = field(default_factory=lambda: list(XRAY_LABELS))
    input_size: int = 512
    epochs: int = 9
    batch_size: int = 4
    lr: float = 5e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 150
    val_fraction: float = 0.15
    seed: int = 42
    threads: int = 2
    limit: int = 0  # first N images only (smoke tests); 0 = all
    max_steps: int = 0  # stop each epoch after N steps (smoke tests); 0 = all
    pretrained: bool = True
    device: str = "auto"
    deadline: str = ""  # ISO time (UTC): no new epoch is started that would end after it
    time_budget_min: float = 0.0  # wall-clock training budget incl. validation; 0 = none
    hflip: float = 0.5
    scale_range: tuple[float, float] = (0.75, 1.25)
    scale_p: float = 0.7
    brightness: float = 0.12
    contrast: float = 0.25
    jitter_p: float = 0.8
    min_box_visible: float = 0.4
    # start from these weights instead of ImageNet (a shipped artefact folder or a checkpoint): fine-tuning an
    # earlier version at a new input size; its own schedule, optimiser and best-model selection start afresh
    init_from: str = ""
    # repeat-factor sampling (LVIS): an image is drawn in proportion to max(1, sqrt(t / f_c)) over the classes c
    # it holds, f_c = fraction of training images holding c; 0 = uniform shuffling
    repeat_threshold: float = 0.0
    # exponential moving average of the weights (decay per optimiser step, e.g. 0.998); validation, best.pt and
    # the exported weights then use the averaged model, which is smoother than any single step; 0 = off
    ema_decay: float = 0.0


# ----------------------------------------------------------------------------- cache + augmentation


def cache_grey(records: Sequence[DetRecord], size: int, desc: str = "cache") -> torch.Tensor:
    """(N, size, size) uint8 greyscale, stretched resize with PIL bilinear."""
    out = torch.empty((len(records), size, size), dtype=torch.uint8)
    for i, r in enumerate(tqdm(records, desc=desc, mininterval=10, file=sys.stderr, leave=False)):
        with Image.open(r.path) as im:
            g = xray_reduce(im, size)
        out[i] = torch.from_numpy(np.asarray(g, dtype=np.uint8).copy())
    return out


def load_or_build_cache(path: Path, records: Sequence[DetRecord], size: int) -> torch.Tensor:
    key = [str(r.path) for r in records]
    if path.exists():
        blob = torch.load(path, weights_only=False)
        if blob.get("key") == key and blob.get("size") == size:
            return blob["images"]
    images = cache_grey(records, size, desc=f"cache {path.stem}")
    torch.save({"key": key, "size": size, "images": images}, path)
    return images


def augment(
    grey: torch.Tensor, boxes: np.ndarray, labels: np.ndarray, cfg: DetTrainConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """uint8 (S, S) + normalised xyxy boxes -> float (3, S, S) in [0, 1], pixel boxes, labels."""
    size = grey.shape[-1]
    x = grey.float().div(255.0)[None]  # (1, S, S)
    b = boxes.astype(np.float32).copy() * size
    lab = labels.copy()
    if random.random() < cfg.hflip:
        x = x.flip(-1)
        b[:, [0, 2]] = size - b[:, [2, 0]]
    if random.random() < cfg.scale_p:
        s = random.uniform(*cfg.scale_range)
        new = max(16, int(round(size * s)))
        x = TF.interpolate(x[None], size=(new, new), mode="bilinear", align_corners=False, antialias=s < 1)[0]
        b = b * (new / size)
        if new >= size:
            ox, oy = random.randint(0, new - size), random.randint(0, new - size)
            x = x[:, oy : oy + size, ox : ox + size]
            b[:, [0, 2]] -= ox
            b[:, [1, 3]] -= oy
        else:
            ox, oy = random.randint(0, size - new), random.randint(0, size - new)
            canvas = torch.zeros((1, size, size))
            canvas[:, oy : oy + new, ox : ox + new] = x
            x = canvas
            b[:, [0, 2]] += ox
            b[:, [1, 3]] += oy
        area0 = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        b = np.clip(b, 0, size)
        area1 = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        keep = (
            (area1 >= cfg.min_box_visible * np.maximum(area0, 1e-6))
            & (b[:, 2] - b[:, 0] >= 2)
            & (b[:, 3] - b[:, 1] >= 2)
        )
        b, lab = b[keep], lab[keep]
    if random.random() < cfg.jitter_p:
        c = random.uniform(1 - cfg.contrast, 1 + cfg.contrast)
        br = random.uniform(-cfg.brightness, cfg.brightness)
        m = x.mean()
        x = ((x - m) * c + m + br).clamp_(0, 1)
    return (
        x.expand(3, -1, -1).contiguous(),
        torch.from_numpy(b.reshape(-1, 4)).float(),
        torch.from_numpy(lab.astype(np.int64)),
    )


class DetDataset(Dataset):
    def __init__(self, records: Sequence[DetRecord], images: torch.Tensor, cfg: DetTrainConfig):
        self.records, self.images, self.cfg = list(records), images, cfg

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        r = self.records[i]
        x, b, lab = augment(self.images[i], r.boxes, r.labels, self.cfg)
        return x, {"boxes": b, "labels": lab}


def collate(batch):
    return [b[0] for b in batch], [b[1] for b in batch]


# ----------------------------------------------------------------------------- inference helper


@torch.inference_mode()
def predict_cached(
    model: nn.Module,
    images: torch.Tensor,
    device: torch.device,
    batch_size: int = 8,
    desc: str = "",
    tta: str = "",
) -> list[dict]:
    """Detections (normalised xyxy boxes, scores, labels as numpy) for a cached (N, S, S) uint8 stack;
    ``tta="hflip"`` merges the mirror image's detections (:func:`detection.detect_hflip_tta`)."""
    model.eval()
    size = images.shape[-1]
    out = []
    it = range(0, len(images), batch_size)
    if desc:
        it = tqdm(it, desc=desc, mininterval=10, file=sys.stderr, leave=False)
    for i in it:
        xs = [im.float().div(255.0)[None].expand(3, -1, -1).to(device) for im in images[i : i + batch_size]]
        # fp32 everywhere: the model is small, and box decoding / NMS stay exact
        dets = detect_hflip_tta(model, xs) if tta == "hflip" else model(xs)
        for d in dets:
            out.append(
                {
                    "boxes": (d["boxes"].float().cpu().numpy() / size).clip(0, 1),
                    "scores": d["scores"].float().cpu().numpy(),
                    "labels": d["labels"].cpu().numpy(),
                }
            )
    return out


# ----------------------------------------------------------------------------- training


def prepare(cfg: DetTrainConfig):
    records = read_yolo_split(cfg.data, len(cfg.labels), limit=cfg.limit)
    tr, va = group_split(records, cfg.val_fraction, seed=cfg.seed)
    return records, tr, va


def repeat_factors(records: Sequence[DetRecord], n_classes: int, threshold: float) -> np.ndarray:
    """Per-image repeat factor of repeat-factor sampling (Gupta et al., LVIS 2019): with ``f_c`` the fraction
    of images holding class ``c``, an image's factor is ``max(1, max_c sqrt(threshold / f_c))`` over its
    classes (1 for an image without boxes), so images of rare classes are drawn more often."""
    holds = np.zeros((len(records), n_classes), dtype=bool)
    for i, r in enumerate(records):
        holds[i, np.unique(r.labels.astype(np.int64))] = True
    freq = holds.mean(axis=0)
    per_class = np.where(freq > 0, np.sqrt(threshold / np.maximum(freq, 1e-12)), 1.0)
    per_class = np.maximum(per_class, 1.0)
    return np.where(holds, per_class[None, :], 1.0).max(axis=1, initial=1.0)


def train_loader(ds: DetDataset, cfg: DetTrainConfig, gen: torch.Generator, log=print) -> DataLoader:
    """Shuffled batches, or with ``cfg.repeat_threshold`` repeat-factor sampling (:func:`repeat_factors`)
    with as many draws per epoch as plain shuffling, so epoch time and the schedule are unchanged."""
    sampler = None
    if cfg.repeat_threshold > 0:
        factors = repeat_factors(ds.records, len(cfg.labels), cfg.repeat_threshold)
        sampler = WeightedRandomSampler(
            torch.from_numpy(factors).double(), num_samples=len(ds), replacement=True, generator=gen
        )
        log(
            f"repeat-factor sampling t={cfg.repeat_threshold}: factors {factors.min():.2f}-{factors.max():.2f}; "
            f"{int((factors > factors.min()).sum())} of {len(factors)} images drawn more often than the least-drawn"
        )
    return DataLoader(
        ds,
        batch_size=cfg.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        drop_last=len(ds) > cfg.batch_size,
        collate_fn=collate,
        generator=gen,
        num_workers=0,
    )


def make_ema(model: nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel:
    """Weight EMA with the usual warm-up, ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so early
    averages are not dominated by the starting weights; buffers are averaged too."""

    def avg(ema_p: torch.Tensor, p: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        d = min(decay, (1.0 + float(n)) / (10.0 + float(n)))
        return d * ema_p + (1.0 - d) * p

    return torch.optim.swa_utils.AveragedModel(model, avg_fn=avg, use_buffers=True)


def lr_factor(cfg: DetTrainConfig, step: int, progress: float) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine from 1 to 0.01 as ``progress`` goes 0 -> 1."""
    if step < cfg.warmup_steps:
        return 0.05 + 0.95 * step / max(1, cfg.warmup_steps)
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, max(0.0, progress))))


def train_detector(cfg: DetTrainConfig, resume: bool = True, log=print) -> dict:
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    device = select_device(cfg.device)
    if device.type == "cpu":
        torch.set_num_threads(cfg.threads)
    set_seed(cfg.seed)
    (run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))

    records, tr, va = prepare(cfg)
    train_recs = [records[i] for i in tr]
    val_recs = [records[i] for i in va]
    split = {
        "train": [{"file": str(r.path), "group": r.group} for r in train_recs],
        "val": [{"file": str(r.path), "group": r.group} for r in val_recs],
        "val_groups": sorted({r.group for r in val_recs}),
        "counts": {"train": class_counts(train_recs, cfg.labels), "val": class_counts(val_recs, cfg.labels)},
    }
    (run_dir / "split.json").write_text(json.dumps(split, indent=1))
    assert not ({r.group for r in train_recs} & {r.group for r in val_recs}), "group leak between train and val"
    log(
        f"device={device} images={len(records)} train={len(train_recs)} val={len(val_recs)} "
        f"(val groups {len(split['val_groups'])})"
    )
    train_imgs = load_or_build_cache(run_dir / "cache_train.pt", train_recs, cfg.input_size)
    val_imgs = load_or_build_cache(run_dir / "cache_val.pt", val_recs, cfg.input_size)
    val_gt = [(r.boxes, r.labels) for r in val_recs]

    model = build_detector(len(cfg.labels), cfg.input_size, pretrained=cfg.pretrained and not cfg.init_from)
    if cfg.init_from and not (resume and (run_dir / "last.pt").exists()):
        model.load_state_dict(load_init_weights(cfg.init_from))
        log(f"initialised from {cfg.init_from}")
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema = make_ema(model, cfg.ema_decay) if cfg.ema_decay > 0 else None

    ds = DetDataset(train_recs, train_imgs, cfg)
    gen = torch.Generator()
    loader = train_loader(ds, cfg, gen, log)
    steps_per_epoch = len(loader) if not cfg.max_steps else min(len(loader), cfg.max_steps)
    total_steps = max(1, steps_per_epoch * cfg.epochs)
    budget_s = cfg.time_budget_min * 60.0
    state = {"step": 0, "elapsed": 0.0}  # optimiser steps done, training wall-clock seconds spent

    def progress() -> float:
        p_steps = max(0, state["step"] - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps)
        p_time = state["elapsed"] / budget_s if budget_s else 0.0
        return max(p_steps, p_time)

    def set_lr() -> float:
        lr = cfg.lr * lr_factor(cfg, state["step"], progress())
        for g in opt.param_groups:
            g["lr"] = lr
        return lr

    history: list[dict] = []
    best, best_epoch, start_epoch = -1.0, -1, 0
    last = run_dir / "last.pt"
    if resume and last.exists():
        ck = torch.load(last, map_location="cpu", weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        state.update(ck["state"])
        if ema is not None and "ema" in ck:
            ema.load_state_dict(ck["ema"])
        history, best, best_epoch = ck["history"], ck["best"], ck["best_epoch"]
        start_epoch = ck["epoch"] + 1
        log(f"resumed from {last} at epoch {start_epoch} (best val mAP@0.5 {best:.4f} @ {best_epoch})")

    deadline = deadline_ts(cfg.deadline)
    epoch_time = None
    hardware = hardware_description(device)
    stop = False
    for epoch in range(start_epoch, cfg.epochs):
        if deadline and epoch_time and time.time() + epoch_time > deadline:
            log("deadline reached: not starting another epoch")
            break
        if budget_s and state["elapsed"] >= budget_s:
            log("time budget spent: not starting another epoch")
            break
        t0 = time.time()
        elapsed0 = state["elapsed"]
        gen.manual_seed(cfg.seed * 1000 + epoch)
        set_seed(cfg.seed * 1000 + epoch)
        model.train()
        sums: dict[str, float] = {}
        n = 0
        bar = tqdm(
            loader,
            total=steps_per_epoch,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            mininterval=20 if not sys.stderr.isatty() else 0.5,
            file=sys.stderr,
        )
        for step, (xs, targets) in enumerate(bar):
            if cfg.max_steps and step >= cfg.max_steps:
                break
            state["elapsed"] = elapsed0 + (time.time() - t0)
            if budget_s and state["elapsed"] >= budget_s:
                log(f"time budget spent after {step} steps of epoch {epoch + 1}")
                stop = True
                break
            lr = set_lr()
            xs = [x.to(device) for x in xs]
            targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
            losses = model(xs, targets)
            loss = sum(losses.values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(params, 10.0)
            opt.step()
            if ema is not None:
                ema.update_parameters(model)
            state["step"] += 1
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            n += 1
            bar.set_postfix(loss=f"{sum(sums.values()) / n:.3f}", lr=f"{lr:.2e}", refresh=False)
        bar.close()
        train_seconds = time.time() - t0
        evaluated = ema.module if ema is not None else model  # the weights that best.pt / the export keep
        dets = predict_cached(evaluated, val_imgs, device)
        m = mean_ap(dets, val_gt, len(cfg.labels))
        epoch_time = time.time() - t0
        state["elapsed"] = elapsed0 + epoch_time
        rec = {
            "epoch": epoch,
            "train_loss": {k: v / max(n, 1) for k, v in sums.items()},
            "val_map50": m["map50"],
            "val_map50_95": m["map50_95"],
            "val_ap50": dict(zip(cfg.labels, [float(v) for v in m["ap50"]], strict=True)),
            "train_seconds": round(train_seconds, 1),
            "seconds": round(epoch_time, 1),
            "steps": n,
            "lr_end": opt.param_groups[0]["lr"],
            "progress": round(progress(), 4),
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        history.append(rec)
        log(json.dumps(rec))
        score = m["map50"] if math.isfinite(m["map50"]) else 0.0
        if score > best:
            best, best_epoch = score, epoch
            torch.save(
                {
                    "model": evaluated.state_dict(),
                    "epoch": epoch,
                    "val_map50": m["map50"],
                    "config": dataclasses.asdict(cfg),
                },
                run_dir / "best.pt",
            )
        torch.save(
            {
                "model": model.state_dict(),
                "opt": opt.state_dict(),
                **({"ema": ema.state_dict()} if ema is not None else {}),
                "state": dict(state),
                "history": history,
                "best": best,
                "best_epoch": best_epoch,
                "epoch": epoch,
                "config": dataclasses.asdict(cfg),
                "hardware": hardware,
            },
            run_dir / "last.pt.tmp",
        )
        (run_dir / "last.pt.tmp").replace(last)
        (run_dir / "history.json").write_text(json.dumps(history, indent=2))
        if stop:
            break

    total_train_s = float(sum(h["seconds"] for h in history))
    summary = {
        "best_epoch": best_epoch,
        "best_val_map50": best,
        "epochs_run": len(history),
        "train_seconds_total": round(total_train_s, 1),
        "hardware": hardware,
        "device": str(device),
    }
    (run_dir / "train_summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def config_from_run(run_dir: str | Path) -> DetTrainConfig:
    raw = json.loads((Path(run_dir) / "config.json").read_text())
    fields = {f.name for f in dataclasses.fields(DetTrainConfig)}
    cfg = DetTrainConfig(**{k: v for k, v in raw.items() if k in fields})
    cfg.scale_range = tuple(cfg.scale_range)
    return cfg
