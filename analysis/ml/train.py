"""Training, calibration and threshold selection for the photo classifier.

Recipe (see ``TrainConfig``): group-aware stratified train/val/test split; images decoded and resized
once into memory; stage 1 = head warm-up with a frozen backbone; stage 2 = full fine-tune with AdamW and
a one-cycle (cosine) schedule; BCE-with-logits with per-class ``pos_weight`` = sqrt(neg/pos);
early stopping on validation macro ROC-AUC; a resumable checkpoint (``last.pt``) after every epoch and
``best.pt`` for the best validation epoch. After training the best weights are round-tripped through
fp16 (the shipped format) and, on the validation split only, a per-class temperature and offset
(Platt scaling) is fitted and per-class operating thresholds are chosen (F1-optimal; F2-optimal for
caries, which favours sensitivity).
"""

from __future__ import annotations

import csv
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
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from . import LABELS
from .data import MultiLabelDataset, Record, load_rgb, read_records, targets
from .metrics import macro, roc_auc_per_class
from .model import build_model, load_init_weights
from .runs import deadline_ts, set_seed
from .splits import train_val_test_split
from .transforms import (
    center_square_resize_pil,
    eval_resize_pil,
    grey_world,
    pil_to_uint8,
    to_model_input,
    train_cache_resize_pil,
    train_transform,
)


@dataclass
class TrainConfig:
    data: str
    run_dir: str
    labels: list[str] = field(default_factory=lambda: list(LABELS))
    input_size: int = 224
    epochs: int = 8  # total, including warm-up epochs
    warmup_epochs: int = 1  # head-only epochs with frozen backbone
    batch_size: int = 32
    lr: float = 6e-4  # backbone peak lr; head gets 5x
    head_lr: float = 3e-3
    weight_decay: float = 0.02
    patience: int = 3
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 42
    num_workers: int = 1
    threads: int = 2
    limit: int = 0  # use only this many images (smoke tests); 0 = all
    pretrained: bool = True
    deadline: str = ""  # ISO time (UTC); stop starting new epochs that would end after it
    sensitive_label: str = "caries"
    sensitive_beta: float = 2.0
    channels_last: bool = True
    # start from an earlier model's weights (artefact folder or checkpoint) instead of ImageNet's, e.g. to
    # fine-tune it at a higher resolution; optimiser, schedule and early stopping start afresh
    init_from: str = ""
    # "grey_world": every image (train, validation, test, inference) is colour-balanced before the resize
    colour_constancy: str = ""
    # freeze the stem and the first N backbone blocks (their BatchNorm statistics too); 0 = train all
    freeze_blocks: int = 0
    # loss weight of images with no label (healthy: a negative for every condition); 1 = as the others
    healthy_weight: float = 1.0
    # extra healthy negatives for training only: a manifest CSV (file, source, ...) and the sources to take
    # from it (comma-separated); each such image is repeated ``extra_repeat`` times per epoch. Sources used
    # here must not be the ones a false-finding rate is reported on.
    extra_negatives: str = ""
    extra_sources: str = ""
    extra_repeat: int = 1
    # thresholds: besides the F-beta rule, every label except ``sensitive_label`` is raised until at least this
    # fraction of the healthy validation images stays below it (0 = F-beta rule only)
    healthy_specificity: float = 0.0


# ----------------------------------------------------------------------------- caching


def colour_balance(img, colour_constancy: str = ""):
    """The colour constancy named in ``model.json`` (``""`` = none, ``"grey_world"``), applied before the resize."""
    if colour_constancy == "grey_world":
        return grey_world(img)
    if colour_constancy:
        raise ValueError(f"unknown colour_constancy {colour_constancy!r}")
    return img


def cache_images(
    records: Sequence[Record], size: int, mode: str, desc: str = "", colour_constancy: str = ""
) -> list[torch.Tensor]:
    """Decode + resize once. mode: 'train' (shorter side=size), 'eval' (squash), 'crop' (audit)."""
    fn = {"train": train_cache_resize_pil, "eval": eval_resize_pil, "crop": center_square_resize_pil}[mode]
    out = []
    for r in tqdm(records, desc=desc or f"cache {mode}", mininterval=10, file=sys.stderr, leave=False):
        out.append(pil_to_uint8(fn(colour_balance(load_rgb(r.path), colour_constancy), size)))
    return out


def load_or_build_cache(
    path: Path, records: Sequence[Record], size: int, mode: str, colour_constancy: str = ""
) -> list[torch.Tensor]:
    key = [str(r.path) for r in records]
    if path.exists():
        blob = torch.load(path, weights_only=False)
        if (
            blob.get("key") == key
            and blob.get("size") == size
            and blob.get("mode") == mode
            and blob.get("colour_constancy", "") == colour_constancy
        ):
            return blob["images"]
    images = cache_images(records, size, mode, colour_constancy=colour_constancy)
    torch.save({"key": key, "size": size, "mode": mode, "colour_constancy": colour_constancy, "images": images}, path)
    return images


def extra_negative_records(cfg: TrainConfig) -> list[Record]:
    """Healthy-looking photos of ``cfg.extra_sources`` from ``cfg.extra_negatives`` (no label = negative)."""
    if not cfg.extra_negatives or not cfg.extra_sources:
        return []
    wanted = {s.strip() for s in cfg.extra_sources.split(",") if s.strip()}
    base = Path(cfg.extra_negatives).parent
    out = []
    with Path(cfg.extra_negatives).open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            source = row.get("source", "")
            if source in wanted or source.split("/")[0] in wanted:
                out.append(
                    Record(path=(base / row["file"]).resolve(), labels=(), group="extra:" + row["file"], source=source)
                )
    return out


# ----------------------------------------------------------------------------- inference helpers


@torch.inference_mode()
def predict_logits(
    model: nn.Module,
    images: Sequence[torch.Tensor],
    batch_size: int = 64,
    channels_last: bool = True,
    tta: str = "",
) -> np.ndarray:
    """images: uint8 CHW tensors already resized to the model input size.

    ``tta="hflip"`` averages the logits of the image and its horizontal mirror.
    """
    model.eval()
    outs = []
    for i in range(0, len(images), batch_size):
        x = to_model_input(torch.stack(list(images[i : i + batch_size])))
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        logits = model(x).float()
        if tta == "hflip":
            logits = (logits + model(x.flip(-1)).float()) / 2
        outs.append(logits.cpu())
    return torch.cat(outs).numpy() if outs else np.zeros((0, getattr(model, "num_labels", 0)), np.float32)


def fit_calibration(logits: np.ndarray, y: np.ndarray, iters: int = 200) -> tuple[list[float], list[float]]:
    """Per-class temperature T and offset b minimising BCE of sigmoid(logit / T + b) on validation."""
    temps, biases = [], []
    for c in range(logits.shape[1]):
        z = torch.tensor(logits[:, c], dtype=torch.float64)
        t = torch.tensor(y[:, c], dtype=torch.float64)
        if t.sum() == 0 or t.sum() == len(t):
            temps.append(1.0)
            biases.append(0.0)
            continue
        log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
        b = torch.zeros((), dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([log_t, b], lr=0.5, max_iter=iters, line_search_fn="strong_wolfe")

        def closure(z=z, t=t, log_t=log_t, b=b, opt=opt):
            opt.zero_grad()
            loss = nn.functional.binary_cross_entropy_with_logits(z / log_t.exp() + b, t)
            # weak prior keeps the fit sane on tiny validation sets
            loss = loss + 1e-3 * (log_t**2 + b**2)
            loss.backward()
            return loss

        opt.step(closure)
        temps.append(float(log_t.detach().exp().clamp(0.05, 20.0)))
        biases.append(float(b.detach().clamp(-10, 10)))
    return temps, biases


def apply_calibration(logits: np.ndarray, temps: Sequence[float], biases: Sequence[float]) -> np.ndarray:
    z = logits / np.asarray(temps, dtype=np.float64) + np.asarray(biases, dtype=np.float64)
    return 1.0 / (1.0 + np.exp(-z))


def choose_thresholds(
    probs: np.ndarray, y: np.ndarray, labels: Sequence[str], sensitive_label: str = "caries", beta: float = 2.0
) -> dict[str, float]:
    """F-beta-optimal threshold per class on validation (beta=1, or ``beta`` for the sensitive label)."""
    grid = np.round(np.arange(0.05, 0.951, 0.01), 2)
    out = {}
    for c, name in enumerate(labels):
        b2 = (beta if name == sensitive_label else 1.0) ** 2
        best, best_t = -1.0, 0.5
        for t in grid:
            pred = probs[:, c] >= t
            tp = float((pred & (y[:, c] == 1)).sum())
            fp = float((pred & (y[:, c] == 0)).sum())
            fn = float((~pred & (y[:, c] == 1)).sum())
            denom = (1 + b2) * tp + b2 * fn + fp
            f = (1 + b2) * tp / denom if denom else 0.0
            if f > best + 1e-9:
                best, best_t = f, float(t)
        out[name] = best_t
    return out


def raise_for_healthy_specificity(
    thresholds: dict[str, float],
    probs: np.ndarray,
    y: np.ndarray,
    labels: Sequence[str],
    specificity: float,
    keep: Sequence[str] = (),
) -> dict[str, float]:
    """Raise each label's threshold (not those in ``keep``) to the lowest grid value at which at least
    ``specificity`` of the healthy (no-label) validation images score below it."""
    healthy = y.sum(1) == 0
    if not healthy.any():
        return dict(thresholds)
    grid = np.round(np.arange(0.05, 0.951, 0.01), 2)
    out = dict(thresholds)
    for c, name in enumerate(labels):
        if name in keep:
            continue
        t_spec = next((float(t) for t in grid if (probs[healthy, c] < t).mean() >= specificity), 0.95)
        out[name] = max(out[name], t_spec)
    return out


# ----------------------------------------------------------------------------- training


def prepare(cfg: TrainConfig):
    """Records, split and cached images (also used by evaluation)."""
    records = read_records(cfg.data, cfg.labels)
    if cfg.limit and cfg.limit < len(records):
        rng = random.Random(cfg.seed)
        idx = list(range(len(records)))
        rng.shuffle(idx)
        records = [records[i] for i in sorted(idx[: cfg.limit])]
    tr, va, te = train_val_test_split(records, cfg.val_fraction, cfg.test_fraction, seed=cfg.seed)
    return records, tr, va, te


def write_split(run_dir: Path, records: Sequence[Record], tr, va, te) -> None:
    split = {
        name: [
            {"file": str(records[i].path), "group": records[i].group, "labels": list(records[i].labels)} for i in idx
        ]
        for name, idx in (("train", tr), ("val", va), ("test", te))
    }
    (run_dir / "split.json").write_text(json.dumps(split))


def _frozen_modules(model, freeze_blocks: int) -> list[nn.Module]:
    if freeze_blocks <= 0:
        return []
    bb = model.backbone
    return [bb._conv_stem, bb._bn0, *list(bb._blocks)[:freeze_blocks]]


def _set_backbone_trainable(model, trainable: bool, freeze_blocks: int = 0) -> None:
    for p in model.backbone.parameters():
        p.requires_grad_(trainable)
    for m in _frozen_modules(model, freeze_blocks):
        for p in m.parameters():
            p.requires_grad_(False)


def _make_main_optimizer(model, cfg: TrainConfig, steps_per_epoch: int):
    params = [
        {"params": list(model.backbone.parameters()), "lr": cfg.lr},
        {"params": list(model.head.parameters()), "lr": cfg.lr * 5},
    ]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = max(1, steps_per_epoch * max(1, cfg.epochs - cfg.warmup_epochs))
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt,
        max_lr=[cfg.lr, cfg.lr * 5],
        total_steps=total,
        pct_start=0.1,
        anneal_strategy="cos",
        div_factor=20.0,
        final_div_factor=100.0,
    )
    return opt, sched


def train(cfg: TrainConfig, resume: bool = True, log=print) -> dict:
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    set_seed(cfg.seed)
    (run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))

    records, tr, va, te = prepare(cfg)
    write_split(run_dir, records, tr, va, te)
    log(f"records={len(records)} train={len(tr)} val={len(va)} test={len(te)}")
    train_recs = [records[i] for i in tr]
    val_recs = [records[i] for i in va]
    cc = cfg.colour_constancy
    extra = extra_negative_records(cfg)
    if extra:
        log(f"extra healthy negatives: {len(extra)} images x {cfg.extra_repeat} ({cfg.extra_sources})")
    train_imgs = load_or_build_cache(run_dir / "cache_train.pt", train_recs, cfg.input_size, "train", cc)
    if extra:
        extra_imgs = load_or_build_cache(run_dir / "cache_extra.pt", extra, cfg.input_size, "train", cc)
        train_recs = train_recs + extra * cfg.extra_repeat
        train_imgs = list(train_imgs) + list(extra_imgs) * cfg.extra_repeat
    val_imgs = load_or_build_cache(run_dir / "cache_val.pt", val_recs, cfg.input_size, "eval", cc)
    y_train = targets(train_recs, cfg.labels)
    y_val = targets(val_recs, cfg.labels)

    pos = y_train.sum(0)
    neg = len(y_train) - pos
    pos_weight = torch.tensor(np.sqrt(np.maximum(neg, 1) / np.maximum(pos, 1)), dtype=torch.float32)
    bce = nn.BCEWithLogitsLoss(pos_weight=pos_weight, reduction="none")

    def criterion(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = bce(logits, y)
        if cfg.healthy_weight != 1.0:
            w = 1.0 + (cfg.healthy_weight - 1.0) * (y.sum(1, keepdim=True) == 0).float()
            return (loss * w).sum() / (w.sum() * y.shape[1])
        return loss.mean()

    log(f"pos_weight={pos_weight.numpy().round(3).tolist()}")

    model = build_model(len(cfg.labels), cfg.input_size, pretrained=cfg.pretrained and not cfg.init_from)
    if cfg.init_from and not (resume and (run_dir / "last.pt").exists()):
        model.load_state_dict(load_init_weights(cfg.init_from))
        log(f"initialised from {cfg.init_from}")
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)

    ds = MultiLabelDataset(train_recs, train_transform(cfg.input_size), images=train_imgs, labels=cfg.labels)
    gen = torch.Generator()
    loader = DataLoader(
        ds,
        batch_size=cfg.batch_size,
        shuffle=True,
        drop_last=len(ds) > cfg.batch_size,
        num_workers=cfg.num_workers,
        generator=gen,
        persistent_workers=cfg.num_workers > 0,
        worker_init_fn=lambda wid: (
            random.seed(torch.initial_seed() % 2**31),
            np.random.seed(torch.initial_seed() % 2**31),
        ),
    )
    steps_per_epoch = len(loader)

    history: list[dict] = []
    best_auc, best_epoch, start_epoch = -1.0, -1, 0
    head_opt = torch.optim.AdamW(model.head.parameters(), lr=cfg.head_lr, weight_decay=cfg.weight_decay)
    main_opt, main_sched = _make_main_optimizer(model, cfg, steps_per_epoch)

    last = run_dir / "last.pt"
    if resume and last.exists():
        ck = torch.load(last, map_location="cpu", weights_only=False)
        model.load_state_dict(ck["model"])
        head_opt.load_state_dict(ck["head_opt"])
        main_opt.load_state_dict(ck["main_opt"])
        main_sched.load_state_dict(ck["main_sched"])
        history, best_auc, best_epoch = ck["history"], ck["best_auc"], ck["best_epoch"]
        start_epoch = ck["epoch"] + 1
        log(f"resumed from {last} at epoch {start_epoch} (best macro AUC {best_auc:.4f} @ {best_epoch})")

    deadline = deadline_ts(cfg.deadline)
    epoch_time = None
    for epoch in range(start_epoch, cfg.epochs):
        if best_epoch >= 0 and epoch - best_epoch > cfg.patience:
            log(f"early stopping: no val macro-AUC gain for {cfg.patience} epochs")
            break
        if deadline and epoch_time and time.time() + epoch_time > deadline:
            log("deadline reached: not starting another epoch")
            break
        t0 = time.time()
        gen.manual_seed(cfg.seed * 1000 + epoch)
        set_seed(cfg.seed * 1000 + epoch)
        warm = epoch < cfg.warmup_epochs
        _set_backbone_trainable(model, not warm, cfg.freeze_blocks)
        model.train()
        if warm:  # frozen backbone: keep its BatchNorm statistics too
            model.backbone.eval()
        for m in _frozen_modules(model, cfg.freeze_blocks):
            m.eval()
        opt = head_opt if warm else main_opt
        total_loss, n = 0.0, 0
        bar = tqdm(
            loader,
            desc=f"epoch {epoch + 1}/{cfg.epochs}{' (head)' if warm else ''}",
            mininterval=20 if not sys.stderr.isatty() else 0.5,
            file=sys.stderr,
        )
        for x, y in bar:
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            logits = model(x)
            loss = criterion(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            if not warm:
                main_sched.step()
            total_loss += loss.item() * len(x)
            n += len(x)
            bar.set_postfix(loss=f"{total_loss / n:.4f}")
        val_logits = predict_logits(model, val_imgs, channels_last=cfg.channels_last)
        val_loss = float(criterion(torch.from_numpy(val_logits), torch.from_numpy(y_val)))
        aucs = roc_auc_per_class(y_val, 1 / (1 + np.exp(-val_logits)))
        m_auc = macro(aucs)
        m_auc_sel = m_auc if math.isfinite(m_auc) else 0.0
        epoch_time = time.time() - t0
        rec = {
            "epoch": epoch,
            "stage": "head" if warm else "full",
            "train_loss": total_loss / max(n, 1),
            "val_loss": val_loss,
            "val_macro_auc": m_auc,
            "val_auc": dict(zip(cfg.labels, aucs, strict=True)),
            "seconds": round(epoch_time, 1),
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        history.append(rec)
        log(json.dumps(rec))
        if m_auc_sel > best_auc:
            best_auc, best_epoch = m_auc_sel, epoch
            torch.save(
                {
                    "model": model.state_dict(),
                    "epoch": epoch,
                    "val_macro_auc": m_auc,
                    "config": dataclasses.asdict(cfg),
                },
                run_dir / "best.pt",
            )
        torch.save(
            {
                "model": model.state_dict(),
                "head_opt": head_opt.state_dict(),
                "main_opt": main_opt.state_dict(),
                "main_sched": main_sched.state_dict(),
                "history": history,
                "best_auc": best_auc,
                "best_epoch": best_epoch,
                "epoch": epoch,
                "config": dataclasses.asdict(cfg),
            },
            run_dir / "last.pt.tmp",
        )
        (run_dir / "last.pt.tmp").replace(last)
        (run_dir / "history.json").write_text(json.dumps(history, indent=2))

    summary = calibrate(cfg, records=records, val_idx=va, val_imgs=val_imgs, log=log)
    summary.update({"best_epoch": best_epoch, "best_val_macro_auc": best_auc, "epochs_run": len(history)})
    (run_dir / "train_summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def load_run_model(run_dir: Path, cfg: TrainConfig, which: str = "best.pt", fp16_roundtrip: bool = True):
    ck = torch.load(Path(run_dir) / which, map_location="cpu", weights_only=False)
    model = build_model(len(cfg.labels), cfg.input_size, pretrained=False)
    state = ck["model"]
    if fp16_roundtrip:  # evaluate exactly what is shipped (fp16 weights)
        state = {k: (v.half().float() if v.is_floating_point() else v) for k, v in state.items()}
    model.load_state_dict(state)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.eval()
    return model, ck


def calibrate(
    cfg: TrainConfig, records=None, val_idx=None, val_imgs=None, which: str = "best.pt", log=print, tta: str = ""
) -> dict:
    """Fit temperature/offset and thresholds on the validation split; writes calibration.json.

    ``tta``: "" (none), "hflip", or "auto" (use hflip only if it raises the validation macro ROC-AUC).
    """
    run_dir = Path(cfg.run_dir)
    torch.set_num_threads(cfg.threads)
    if records is None:
        records, _, val_idx, _ = prepare(cfg)
    val_recs = [records[i] for i in val_idx]
    if val_imgs is None:
        val_imgs = load_or_build_cache(run_dir / "cache_val.pt", val_recs, cfg.input_size, "eval", cfg.colour_constancy)
    y_val = targets(val_recs, cfg.labels)
    model, ck = load_run_model(run_dir, cfg, which)
    logits = predict_logits(model, val_imgs, channels_last=cfg.channels_last)
    tta_report = {"none": macro(roc_auc_per_class(y_val, logits))}
    if tta in ("auto", "hflip"):
        flip_logits = predict_logits(model, val_imgs, channels_last=cfg.channels_last, tta="hflip")
        tta_report["hflip"] = macro(roc_auc_per_class(y_val, flip_logits))
        if tta == "hflip" or tta_report["hflip"] > tta_report["none"]:
            tta, logits = "hflip", flip_logits
        else:
            tta = ""
    temps, biases = fit_calibration(logits, y_val)
    probs = apply_calibration(logits, temps, biases)
    thresholds = choose_thresholds(probs, y_val, cfg.labels, cfg.sensitive_label, cfg.sensitive_beta)
    rule = f"F1-optimal on validation; F{cfg.sensitive_beta:g}-optimal for {cfg.sensitive_label}"
    if cfg.healthy_specificity > 0:
        thresholds = raise_for_healthy_specificity(
            thresholds, probs, y_val, cfg.labels, cfg.healthy_specificity, keep=(cfg.sensitive_label,)
        )
        rule += (
            f"; every other label raised, where needed, until >= {cfg.healthy_specificity:.0%} of the healthy "
            "validation images stay below it"
        )
    cal = {
        "checkpoint": which,
        "epoch": ck.get("epoch"),
        "temperature": dict(zip(cfg.labels, temps, strict=True)),
        "logit_bias": dict(zip(cfg.labels, biases, strict=True)),
        "thresholds": thresholds,
        "threshold_rule": rule,
        "colour_constancy": cfg.colour_constancy,
        "val_macro_auc": macro(roc_auc_per_class(y_val, probs)),
        "tta": tta,
        "val_macro_auc_by_tta": tta_report,
    }
    (run_dir / "calibration.json").write_text(json.dumps(cal, indent=2))
    log(f"calibration: {json.dumps(cal)}")
    return cal


def config_from_run(run_dir: str | Path) -> TrainConfig:
    raw = json.loads((Path(run_dir) / "config.json").read_text())
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in raw.items() if k in fields})
