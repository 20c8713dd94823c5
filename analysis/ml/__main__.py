"""Command line: ``python -m analysis.ml {train,calibrate,evaluate,card,ood-fit,anchors-fit,train-xray,...}``.

Examples::

    # train on the shared manifest (or on your own folder: --data path/to/folder/<label>/*.jpg)
    python -m analysis.ml train --data ../shared/datasets/intraoral-photos/manifest.csv \
        --run-dir var/ml-runs/photo-1.0.0 --input-size 224 --epochs 10
    # held-out test metrics, plots, shortcut audit, and the shippable artefact
    python -m analysis.ml evaluate --run-dir var/ml-runs/photo-1.0.0 \
        --artifact-dir analysis/models/photo/1.0.0 --version 1.0.0
    python -m analysis.ml card --artifact-dir analysis/models/photo/1.0.0
    # out-of-distribution statistics in the model's own feature space: ood.npz + model.json "ood"
    python -m analysis.ml ood-fit --artifact-dir analysis/models/photo/1.1.0
    # the validation photos a clinic's model is fitted beside (anchors.npz + model.json "adaptation")
    python -m analysis.ml anchors-fit --artifact-dir analysis/models/photo/1.1.0

    # X-ray findings detector (FCOS on EfficientNet-Lite0 + FPN), YOLO-format data
    python -m analysis.ml train-xray --data ../shared/datasets/dental-xrays/train \
        --run-dir var/ml-runs/xray/1.0.0 --input-size 512 --epochs 9
    python -m analysis.ml evaluate-xray --run-dir var/ml-runs/xray/1.0.0 \
        --test-data ../shared/datasets/dental-xrays/test --artifact-dir analysis/models/xray/1.0.0 --version 1.0.0
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _add_train(sub):
    p = sub.add_parser("train", help="train (or resume) a photo classifier, then calibrate on validation")
    p.add_argument(
        "--data",
        default=None,
        help="manifest CSV, or an image folder laid out as <folder>/<label>/*.jpg "
        "(labels: caries, gingivitis, calculus, ulcer, healthy). "
        "Default: the shared intraoral-photos manifest",
    )
    p.add_argument("--run-dir", required=True, help="checkpoints/logs go here (e.g. var/ml-runs/photo-1.0.0)")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--epochs", type=int, default=8, help="total epochs incl. head warm-up")
    p.add_argument("--warmup-epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=6e-4)
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--val-fraction", type=float, default=0.15)
    p.add_argument("--test-fraction", type=float, default=0.15)
    p.add_argument("--num-workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--limit", type=int, default=0, help="use only N images (smoke test)")
    p.add_argument("--deadline", default="", help="ISO UTC time; no new epoch is started that would end after it")
    p.add_argument("--no-resume", action="store_true", help="ignore an existing last.pt")
    p.add_argument("--no-pretrained", action="store_true")
    p.add_argument(
        "--init-from",
        default="",
        metavar="ARTIFACT_DIR_OR_CHECKPOINT",
        help="start from an earlier model's weights (e.g. analysis/models/photo/1.0.0) instead of ImageNet",
    )
    p.add_argument(
        "--export",
        default=None,
        metavar="ARTIFACT_DIR",
        help="after training, also evaluate and write the artefact + model card here",
    )
    p.add_argument("--version", default="1.0.0")
    p.add_argument("--colour-constancy", choices=["", "grey_world"], default="", help="applied to every image")
    p.add_argument("--freeze-blocks", type=int, default=0, help="freeze the stem and the first N backbone blocks")
    p.add_argument("--healthy-weight", type=float, default=1.0, help="loss weight of no-label (healthy) images")
    p.add_argument("--extra-negatives", default="", help="manifest CSV of extra healthy photos (training only)")
    p.add_argument("--extra-sources", default="", help="comma-separated sources taken from --extra-negatives")
    p.add_argument("--extra-repeat", type=int, default=1, help="repeats of each extra negative per epoch")
    p.add_argument(
        "--healthy-specificity",
        type=float,
        default=0.0,
        help="raise thresholds (except caries) until this fraction of healthy validation images stays below",
    )


def _add_calibrate(sub):
    p = sub.add_parser("calibrate", help="re-fit temperature + thresholds on validation for a run")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--checkpoint", default="best.pt")
    p.add_argument(
        "--tta",
        choices=["none", "hflip", "auto"],
        default="none",
        help="test-time augmentation; auto = hflip only if it raises validation macro ROC-AUC",
    )


def _add_evaluate(sub):
    p = sub.add_parser("evaluate", help="test-split metrics, plots, shortcut audit; writes the artefact")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--artifact-dir", required=True)
    p.add_argument("--version", default="1.0.0")
    p.add_argument("--name", default="photo-effnetlite0")
    p.add_argument("--no-audit", action="store_true", help="skip the shortcut audit")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--no-card", action="store_true", help="do not (re)generate MODEL_CARD.md")


def _add_card(sub):
    p = sub.add_parser("card", help="(re)generate MODEL_CARD.md from model.json + metrics.json")
    p.add_argument("--artifact-dir", required=True)


def _add_ood_fit(sub):
    p = sub.add_parser(
        "ood-fit",
        help="fit a photo artefact's out-of-distribution statistics (ood.npz) and write model.json's \"ood\" section",
    )
    p.add_argument("--artifact-dir", required=True)
    p.add_argument(
        "--data",
        default=None,
        help="manifest CSV or labelled image folder (default: the shared intraoral-photos manifest); the "
        "statistics use its train split, the thresholds its validation split (splits.train_val_test_split)",
    )
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--val-fraction", type=float, default=0.15)
    p.add_argument("--test-fraction", type=float, default=0.15)
    p.add_argument("--components", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-write", action="store_true", help="print the section; leave model.json as it is")


def _add_anchors_fit(sub):
    p = sub.add_parser(
        "anchors-fit",
        help='embed a photo artefact\'s validation photos (anchors.npz) for clinic models; model.json "adaptation"',
    )
    p.add_argument("--artifact-dir", required=True)
    p.add_argument("--data", default=None, help="manifest CSV or labelled image folder (default: shared manifest)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--val-fraction", type=float, default=0.15)
    p.add_argument("--test-fraction", type=float, default=0.15)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-write", action="store_true", help="print the section; leave model.json as it is")


def _add_train_xray(sub):
    p = sub.add_parser("train-xray", help="train (or resume) the X-ray findings detector on YOLO-format data")
    p.add_argument("--data", default=None, help="YOLO folder (images/, labels/); default: shared dental-xrays/train")
    p.add_argument("--run-dir", required=True, help="checkpoints/logs go here (e.g. var/ml-runs/xray/1.0.0)")
    p.add_argument("--input-size", type=int, default=512)
    p.add_argument("--epochs", type=int, default=9)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup-steps", type=int, default=150)
    p.add_argument("--val-fraction", type=float, default=0.15)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda, cuda:1, mps")
    p.add_argument("--limit", type=int, default=0, help="use only the first N images (smoke test)")
    p.add_argument("--max-steps", type=int, default=0, help="at most N steps per epoch (smoke test)")
    p.add_argument("--deadline", default="", help="ISO UTC time; no new epoch is started that would end after it")
    p.add_argument(
        "--time-budget-min",
        type=float,
        default=0.0,
        help="wall-clock budget (minutes, incl. validation): the cosine schedule ends and training stops "
        "when it is spent, even before --epochs",
    )
    p.add_argument("--no-resume", action="store_true", help="ignore an existing last.pt")
    p.add_argument("--no-pretrained", action="store_true")
    p.add_argument(
        "--init-from",
        default="",
        metavar="ARTIFACT_DIR_OR_CHECKPOINT",
        help="start from an earlier model's weights (e.g. analysis/models/xray/1.0.0) instead of ImageNet",
    )
    p.add_argument(
        "--repeat-threshold",
        type=float,
        default=0.0,
        help="repeat-factor sampling threshold t (e.g. 1.0): images of classes held by fewer than a fraction t "
        "of the training images are drawn more often; 0 = plain shuffling",
    )
    p.add_argument(
        "--ema-decay",
        type=float,
        default=0.0,
        help="keep an exponential moving average of the weights (decay per step, e.g. 0.998); validation, best.pt "
        "and the exported weights use it; 0 = off",
    )


def _add_evaluate_xray(sub):
    p = sub.add_parser("evaluate-xray", help="validation + test mAP, CIs, PR curves; writes the X-ray artefact")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--test-data", default=None, help="YOLO test folder; default: shared dental-xrays/test")
    p.add_argument("--artifact-dir", required=True)
    p.add_argument("--version", default="1.0.0")
    p.add_argument("--name", default="xray-fcos-effnetlite0")
    p.add_argument("--checkpoint", default="best.pt")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--device", default="auto")
    p.add_argument("--no-card", action="store_true", help="do not (re)generate MODEL_CARD.md")
    p.add_argument("--training-note", default="", help="free text about the training run for the model card")
    p.add_argument(
        "--tta",
        choices=["none", "hflip", "auto"],
        default="none",
        help="test-time augmentation; auto = hflip (mirror image merged by NMS) only if it raises validation mAP",
    )


def _add_card_xray(sub):
    p = sub.add_parser("card-xray", help="(re)generate the X-ray MODEL_CARD.md from model.json + metrics.json")
    p.add_argument("--artifact-dir", required=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m analysis.ml", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_calibrate(sub)
    _add_evaluate(sub)
    _add_card(sub)
    _add_ood_fit(sub)
    _add_anchors_fit(sub)
    _add_train_xray(sub)
    _add_evaluate_xray(sub)
    _add_card_xray(sub)
    args = parser.parse_args(argv)

    if args.command == "train-xray":
        # lazy: the command's modules load torch (1.5-3 s); --help answers in 0.02 s without it
        from .detect_train import DetTrainConfig, default_xray_root, train_detector

        data = args.data or str(default_xray_root() / "train")
        cfg = DetTrainConfig(
            data=str(Path(data).resolve()),
            run_dir=args.run_dir,
            input_size=args.input_size,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            warmup_steps=args.warmup_steps,
            val_fraction=args.val_fraction,
            seed=args.seed,
            threads=args.threads,
            device=args.device,
            limit=args.limit,
            max_steps=args.max_steps,
            deadline=args.deadline,
            time_budget_min=args.time_budget_min,
            pretrained=not args.no_pretrained,
            init_from=args.init_from,
            repeat_threshold=args.repeat_threshold,
            ema_decay=args.ema_decay,
        )
        summary = train_detector(cfg, resume=not args.no_resume, log=lambda m: print(m, flush=True))
        print(json.dumps(summary, indent=2))
        return 0
    if args.command == "evaluate-xray":
        # lazy: the command's modules load torch (1.5-3 s); --help answers in 0.02 s without it
        from .detect_eval import evaluate_detector_run
        from .detect_train import default_xray_root

        test = args.test_data or str(default_xray_root() / "test")
        metrics = evaluate_detector_run(
            args.run_dir,
            args.artifact_dir,
            test_data=test,
            version=args.version,
            name=args.name,
            which=args.checkpoint,
            n_boot=args.bootstrap,
            device=args.device,
            card=not args.no_card,
            training_note=args.training_note,
            tta=args.tta,
            log=lambda m: print(m, flush=True),
        )
        print(json.dumps(metrics["summary"], indent=2))
        return 0
    if args.command == "card-xray":
        # lazy: the command's modules load torch (1.5-3 s); --help answers in 0.02 s without it
        from .detect_card import write_xray_card

        print(write_xray_card(args.artifact_dir))
        return 0

    if args.command == "train":
        # lazy: the command's modules load torch (1.5-3 s); --help answers in 0.02 s without it
        from .data import photo_manifest_path
        from .train import TrainConfig, train

        data = args.data or str(photo_manifest_path())
        cfg = TrainConfig(
            data=str(Path(data).resolve()),
            run_dir=args.run_dir,
            input_size=args.input_size,
            epochs=args.epochs,
            warmup_epochs=args.warmup_epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            patience=args.patience,
            seed=args.seed,
            val_fraction=args.val_fraction,
            test_fraction=args.test_fraction,
            num_workers=args.num_workers,
            threads=args.threads,
            limit=args.limit,
            deadline=args.deadline,
            pretrained=not args.no_pretrained,
            init_from=args.init_from,
            colour_constancy=args.colour_constancy,
            freeze_blocks=args.freeze_blocks,
            healthy_weight=args.healthy_weight,
            extra_negatives=args.extra_negatives,
            extra_sources=args.extra_sources,
            extra_repeat=args.extra_repeat,
            healthy_specificity=args.healthy_specificity,
        )
        summary = train(cfg, resume=not args.no_resume, log=lambda m: print(m, flush=True))
        print(json.dumps(summary, indent=2))
        if args.export:
            # lazy: the command's modules load torch (1.5-3 s); --help answers in 0.02 s without it
            from .evaluate import evaluate_run

            evaluate_run(args.run_dir, args.export, version=args.version)
        return 0
    if args.command == "calibrate":
        # lazy: the command's modules load torch (1.5-3 s); --help answers in 0.02 s without it
        from .train import calibrate, config_from_run

        calibrate(
            config_from_run(args.run_dir),
            which=args.checkpoint,
            log=lambda m: print(m, flush=True),
            tta="" if args.tta == "none" else args.tta,
        )
        return 0
    if args.command == "evaluate":
        # lazy: the command's modules load torch (1.5-3 s); --help answers in 0.02 s without it
        from .evaluate import evaluate_run

        metrics = evaluate_run(
            args.run_dir,
            args.artifact_dir,
            version=args.version,
            name=args.name,
            audit=not args.no_audit,
            n_boot=args.bootstrap,
            card=not args.no_card,
        )
        print(json.dumps(metrics["summary"], indent=2))
        return 0
    if args.command == "ood-fit":
        # lazy: the command's modules load torch (1.5-3 s); --help answers in 0.02 s without it
        import torch

        from .data import photo_manifest_path, read_records
        from .ood import ood_fit, write_ood_section
        from .splits import train_val_test_split

        torch.set_num_threads(args.threads)
        data = Path(args.data or photo_manifest_path())
        records = read_records(data)
        tr, va, _ = train_val_test_split(records, args.val_fraction, args.test_fraction, seed=args.seed)
        fitted_on = (
            f"{data.name}: train split ({len(tr)} images: statistics), validation split ({len(va)} images: "
            f"thresholds); splits.train_val_test_split(val={args.val_fraction}, test={args.test_fraction}, "
            f"seed={args.seed})"
        )
        section = ood_fit(
            args.artifact_dir,
            [records[i].path for i in tr],
            [records[i].path for i in va],
            k=args.components,
            fitted_on=fitted_on,
            log=lambda m: print(m, flush=True),
        )
        if not args.no_write:
            write_ood_section(args.artifact_dir, section)
        print(json.dumps(section, indent=2))
        return 0
    if args.command == "anchors-fit":
        # lazy: the command's modules load torch (1.5-3 s); --help answers in 0.02 s without it
        import torch

        from .adapt import anchors_fit, write_adaptation_section
        from .data import load_rgb, photo_manifest_path, read_records, targets
        from .infer import load_predictor
        from .splits import train_val_test_split

        torch.set_num_threads(args.threads)
        data = Path(args.data or photo_manifest_path())
        records = read_records(data)
        _, va, _ = train_val_test_split(records, args.val_fraction, args.test_fraction, seed=args.seed)
        predictor = load_predictor(args.artifact_dir, device="cpu")
        torch_model = getattr(predictor, "base", predictor)
        chosen = [records[i] for i in va]
        section = anchors_fit(
            torch_model,
            [load_rgb(r.path) for r in chosen],
            targets(chosen, torch_model.labels),
            args.artifact_dir,
            fitted_on=f"{data.name}: validation split ({len(va)} images); splits.train_val_test_split("
            f"val={args.val_fraction}, test={args.test_fraction}, seed={args.seed})",
        )
        if not args.no_write:
            write_adaptation_section(args.artifact_dir, section)
        print(json.dumps(section, indent=2))
        return 0
    if args.command == "card":
        # lazy: the command's modules load torch (1.5-3 s); --help answers in 0.02 s without it
        from .card import write_card

        path = write_card(args.artifact_dir)
        print(path)
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
