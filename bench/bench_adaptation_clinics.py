"""Many simulated clinics adapting the photo model, on the model's features alone (no platform, no database).

    python bench/bench_adaptation_clinics.py [--clinics 20] [--reviewed 40] [--variants shipped,linear,...]

Each simulated clinic is drawn as ``bench_adaptation.py`` draws its one clinic (same photos, same seeds): half of
its reviewed photos healthy-looking from other sources the base model was not trained on, half with disease from
the group *test* split; held back: the other healthy-looking photos and 80 with disease. The reviews are perfect
(every condition decided as the data set says), as the scripted dentist of ``bench_adaptation.py`` makes them.
Features and base logits are computed once (cached under the system temp folder, keyed by the artefact's weights
hash) with ``analysis.ml.adapt.embed``, the same function the platform trains and predicts with.

Prints, per variant of ``analysis.ml.adapt.fit_head``: the held-back healthy-looking photos with any finding and
the fall in sensitivity on held-back photos with disease (mean, worst, and per seed for seeds 0 and 1, which the
platform benchmark also runs). Writes ``bench/results/adaptation_clinics.json``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import ROOT, latest_artifact, machine, machine_line, table, write_json  # noqa: E402

from analysis.ml import adapt  # noqa: E402
from analysis.ml.data import datasets_root, load_rgb, photo_manifest_path, read_manifest  # noqa: E402
from analysis.ml.infer import load_predictor  # noqa: E402
from analysis.ml.splits import train_val_test_split  # noqa: E402

# fit_head options per variant, over the artefact's own (model.json "adaptation": anchors, l2, anchor_weight)
VARIANTS: dict[str, dict[str, Any]] = {
    "shipped": {},
    "no-anchors-l2-1": {"anchors": None, "l2": 1.0},  # the clinic model as shipped until 2026-12-04
    "no-anchors": {"anchors": None},
    "no-memory": {"neighbour_shift": 0.0},
    "anchors-0.25": {"anchor_weight": 0.25},
    "anchors-1": {"anchor_weight": 1.0},
    "l2-3": {"l2": 3.0},
    "l2-30": {"l2": 30.0},
}


def pools(meta: dict[str, Any]) -> tuple[list[tuple[Path, set[str]]], list[tuple[Path, set[str]]]]:
    """(healthy-looking other-source photos not trained on, test-split photos with disease), as bench_adaptation."""
    trained_sources = set(meta.get("trained_on_other_sources") or [])
    other = datasets_root() / "other-source-photos"
    with (other / "manifest.csv").open() as handle:
        healthy = [
            (other / row["file"], set())
            for row in csv.DictReader(handle)
            if row["expected"] == "healthy_looking" and row["source"] not in trained_sources
        ]
    records = read_manifest(photo_manifest_path())
    _, _, test = train_val_test_split(records)
    sick = [(records[i].path, set(records[i].labels)) for i in test if records[i].labels]
    return healthy, sick


def draw(healthy: list, sick: list, reviewed: int, seed: int) -> dict[str, list[int]]:
    """Indices into ``healthy + sick``, drawn exactly as ``bench_adaptation.clinic_photos`` draws the photos."""
    rng = random.Random(seed)
    h = list(range(len(healthy)))
    s = [len(healthy) + i for i in range(len(sick))]
    # shuffle the same lists in the same order as bench_adaptation (it shuffles the (path, labels) lists)
    order_h, order_s = list(healthy), list(sick)
    rng.shuffle(order_h)
    rng.shuffle(order_s)
    index_h = {id(x): i for x, i in zip(healthy, h, strict=True)}
    index_s = {id(x): i for x, i in zip(sick, s, strict=True)}
    hh = [index_h[id(x)] for x in order_h]
    ss = [index_s[id(x)] for x in order_s]
    n_healthy = min(reviewed // 2, len(hh) // 2)
    n_sick = reviewed - n_healthy
    return {"reviewed": hh[:n_healthy] + ss[:n_sick], "healthy": hh[n_healthy:], "sick": ss[n_sick : n_sick + 80]}


def features(artifact: Path, paths: list[Path]) -> tuple[np.ndarray, np.ndarray, Any]:
    predictor = load_predictor(artifact, device="cpu")
    torch_model = getattr(predictor, "base", predictor)
    weights = hashlib.sha256((artifact / "weights.pt").read_bytes()).hexdigest()[:16]
    key = hashlib.sha256(("\n".join(map(str, paths)) + weights).encode()).hexdigest()[:16]
    cache = Path(tempfile.gettempdir()) / f"dentalscan-adapt-features-{key}.npz"
    if cache.exists():
        with np.load(cache) as z:
            return z["features"], z["logits"], torch_model
    feats, logits = [], []
    for start in range(0, len(paths), 16):
        f, z = adapt.embed(torch_model, [load_rgb(p) for p in paths[start : start + 16]])
        feats.append(f)
        logits.append(z)
    f, z = np.concatenate(feats), np.concatenate(logits)
    np.savez(cache, features=f, logits=z)
    return f, z, torch_model


def evaluate(
    probabilities: np.ndarray, truth: np.ndarray, thresholds: np.ndarray, idx: dict[str, list[int]]
) -> tuple[float, float, dict[int, tuple[int, int]]]:
    shown = probabilities >= thresholds[None, :]
    healthy = idx["healthy"]
    ff = float(shown[healthy].any(axis=1).mean())
    sick = idx["sick"]
    hits = shown[sick] & (truth[sick] == 1)
    per = {c: (int(hits[:, c].sum()), int((truth[sick, c] == 1).sum())) for c in range(truth.shape[1])}
    return ff, float(hits.sum() / (truth[sick] == 1).sum()), per


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clinics", type=int, default=20)
    parser.add_argument("--reviewed", type=int, default=40)
    parser.add_argument("--first-seed", type=int, default=0, help="clinic seeds first-seed .. first-seed+clinics-1")
    parser.add_argument("--variants", default="shipped,no-anchors-l2-1", help="comma-separated: " + ", ".join(VARIANTS))
    args = parser.parse_args()
    if not (datasets_root() / "other-source-photos" / "manifest.csv").exists():
        print("needs ../shared/datasets (other-source-photos and intraoral-photos)")
        return 2
    info = machine()
    artifact = latest_artifact("photo")
    import json

    meta = json.loads((artifact / "model.json").read_text())
    healthy, sick = pools(meta)
    paths = [p for p, _ in healthy + sick]
    feats, logits, torch_model = features(artifact, paths)
    labels = list(torch_model.labels)
    truth = np.array([[1.0 if c in t else 0.0 for c in labels] for _, t in healthy + sick], dtype=np.float32)
    temperature = [float(torch_model.temperature[c]) for c in labels]
    bias = [float(torch_model.logit_bias[c]) for c in labels]
    thresholds = np.array([float(torch_model.thresholds[c]) for c in labels])
    base_p = adapt.calibrated(logits, temperature, bias)
    shipped = adapt.fit_options(artifact, meta)
    rows, result = [], {}
    for name in args.variants.split(","):
        options = VARIANTS[name]
        per_seed = []
        for seed in range(args.first_seed, args.first_seed + args.clinics):
            idx = draw(healthy, sick, args.reviewed, seed)
            r = idx["reviewed"]
            ff0, sens0, per0 = evaluate(base_p, truth, thresholds, idx)
            head = adapt.fit_head(feats[r], logits[r], truth[r], labels, temperature, bias, **{**shipped, **options})
            p = adapt.calibrated(head.logits(feats, logits), temperature, bias)
            ff1, sens1, per1 = evaluate(p, truth, thresholds, idx)
            per_seed.append(
                {
                    "seed": seed,
                    "ff_base": ff0,
                    "ff": ff1,
                    "sens_base": sens0,
                    "sens": sens1,
                    "fall": sens0 - sens1,
                    "per_condition": {labels[c]: [per0[c], per1[c]] for c in per0},
                }
            )
        falls = [s["fall"] for s in per_seed]
        ffs = [s["ff"] for s in per_seed]
        result[name] = {"options": {k: v for k, v in options.items() if k != "anchors"}, "clinics": per_seed}
        rows.append(
            [
                name,
                f"{np.mean([s['ff_base'] for s in per_seed]):.0%}",
                f"{np.mean(ffs):.0%} (worst {max(ffs):.0%})",
                f"{np.mean(falls):.3f} (worst {max(falls):.3f})",
                f"{sum(f <= 0.05 for f in falls)}/{len(falls)}",
                f"{per_seed[0]['ff']:.0%} / {per_seed[0]['fall']:.3f}",
                f"{per_seed[1]['ff']:.0%} / {per_seed[1]['fall']:.3f}" if len(per_seed) > 1 else "",
            ]
        )
    print(machine_line(info))
    print(
        f"{artifact.relative_to(ROOT)}: {len(healthy)} healthy-looking, {len(sick)} with disease; "
        f"{args.clinics} clinics of {args.reviewed} reviewed photos"
    )
    print(
        table(
            [
                "variant",
                "held-back healthy flagged, base",
                "adapted",
                "sensitivity fall",
                "clinics fall<=0.05",
                f"seed {args.first_seed} (ff / fall)",
                f"seed {args.first_seed + 1}",
            ],
            rows,
        )
    )
    path = write_json("adaptation_clinics.json", {"machine": info, "args": vars(args), "variants": result})
    print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
