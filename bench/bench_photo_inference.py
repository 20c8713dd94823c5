"""Photo inference throughput: images/s through ``load_predictor(...).predict``.

    python bench/bench_photo_inference.py [--artifact analysis/models/photo/1.0.0] [--images 48]

Prints a table (batch 1 and batch 16, with and without explanations) and writes
``bench/results/photo_inference.json``. Synthetic 640x480 RGB images are used (throughput does not depend
on content; every image is resized to the model input size first, and that resize is included).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import latest_artifact  # noqa: E402
from PIL import Image  # noqa: E402

from analysis.ml.infer import load_predictor  # noqa: E402


def synthetic_images(n: int, size=(640, 480), seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8), "RGB") for _ in range(n)]


def measure(predictor, images, batch_size: int, explain: bool, repeats: int) -> dict:
    # warm-up
    predictor.predict(images[:batch_size], explain=explain, batch_size=batch_size)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(0, len(images), batch_size):
            predictor.predict(images[i : i + batch_size], explain=explain, batch_size=batch_size)
        times.append(time.perf_counter() - t0)
    best = min(times)
    return {
        "batch_size": batch_size,
        "explain": explain,
        "images": len(images),
        "repeats": repeats,
        "best_seconds": round(best, 4),
        "median_seconds": round(float(np.median(times)), 4),
        "images_per_s": round(len(images) / best, 2),
        "images_per_s_median": round(len(images) / float(np.median(times)), 2),
        "ms_per_image": round(1000 * best / len(images), 1),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--artifact", type=Path, default=None)
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "photo_inference.json")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    artifact = args.artifact or latest_artifact("photo")
    t0 = time.perf_counter()
    predictor = load_predictor(artifact, device="cpu")
    load_s = time.perf_counter() - t0
    images = synthetic_images(args.images)
    rows = [measure(predictor, images, bs, ex, args.repeats) for bs in (1, 16) for ex in (False, True)]
    print(
        f"{predictor.model_id} on CPU ({torch.get_num_threads()} threads), input {predictor.input_size}px, "
        f"{args.images} images of 640x480, best of {args.repeats}; load {load_s:.2f}s"
    )
    print(f"{'batch':>5} | {'explain':>7} | {'images/s':>9} | {'ms/image':>8}")
    print("-" * 40)
    for r in rows:
        print(f"{r['batch_size']:>5} | {str(r['explain']):>7} | {r['images_per_s']:>9.2f} | {r['ms_per_image']:>8.1f}")
    out = {
        "model_id": predictor.model_id,
        "artifact": str(Path(artifact).resolve().relative_to(ROOT))
        if Path(artifact).resolve().is_relative_to(ROOT)
        else str(artifact),
        "device": "cpu",
        "torch_threads": torch.get_num_threads(),
        "cpu_count": len(os.sched_getaffinity(0)),
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "input_size": predictor.input_size,
        "image_size": [640, 480],
        "load_seconds": round(load_s, 3),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
