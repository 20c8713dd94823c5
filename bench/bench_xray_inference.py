"""X-ray detector inference time per image on CPU, through ``load_predictor(...).predict``.

    python bench/bench_xray_inference.py [--artifact analysis/models/xray/1.0.0] [--images 12] [--threads 2]

Prints a table and writes ``bench/results/xray_inference.json``. Synthetic panoramic-shaped images are
used: 8-bit greyscale 2048x1024 and 16-bit greyscale 2900x1400 (time hardly depends on content; every image
is converted and resized to the model input first, and that is included, as is box decoding and NMS with
the shipped 0.001 score floor).
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


def synthetic_xrays(n: int, kind: str, seed: int = 0) -> list[Image.Image]:
    """Smooth random greyscale 'panoramics' (a bright arch of blobs on a dark background)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        if kind == "8bit":
            w, h = 2048, 1024
            small = rng.normal(90, 40, (h // 32, w // 32)).clip(0, 255).astype(np.uint8)
            out.append(Image.fromarray(small, "L").resize((w, h), Image.Resampling.BICUBIC))
        else:
            w, h = 2900, 1400
            small = rng.normal(20000, 9000, (h // 32, w // 32)).clip(0, 65535).astype(np.float32)
            big = np.asarray(Image.fromarray(small, "F").resize((w, h), Image.Resampling.BICUBIC))
            arr = big.clip(0, 65535).astype("<u2")
            out.append(Image.frombytes("I;16", (w, h), arr.tobytes()))
    return out


def measure(predictor, images, batch_size: int, repeats: int, label: str) -> dict:
    predictor.predict(images[:batch_size], batch_size=batch_size)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(0, len(images), batch_size):
            predictor.predict(images[i : i + batch_size], batch_size=batch_size)
        times.append(time.perf_counter() - t0)
    best = min(times)
    med = float(np.median(times))
    return {
        "image": label,
        "batch_size": batch_size,
        "images": len(images),
        "repeats": repeats,
        "best_seconds": round(best, 4),
        "median_seconds": round(med, 4),
        "images_per_s": round(len(images) / best, 2),
        "ms_per_image": round(1000 * best / len(images), 1),
        "ms_per_image_median": round(1000 * med / len(images), 1),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--artifact", type=Path, default=None)
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "xray_inference.json")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    artifact = args.artifact or latest_artifact("xray")
    t0 = time.perf_counter()
    predictor = load_predictor(artifact, device="cpu")
    load_s = time.perf_counter() - t0
    sets = {
        "8-bit greyscale 2048x1024": synthetic_xrays(args.images, "8bit"),
        "16-bit greyscale 2900x1400": synthetic_xrays(args.images, "16bit", seed=1),
    }
    rows = []
    for label, images in sets.items():
        for bs in (1, 4):
            rows.append(measure(predictor, images, bs, args.repeats, label))
    print(
        f"{predictor.model_id} on CPU ({torch.get_num_threads()} threads), input {predictor.input_size}px, "
        f"{args.images} synthetic images per row, best of {args.repeats}; load {load_s:.2f}s"
    )
    print(f"{'image':>28} | {'batch':>5} | {'images/s':>9} | {'ms/image':>8} | {'median ms':>9}")
    print("-" * 72)
    for r in rows:
        print(
            f"{r['image']:>28} | {r['batch_size']:>5} | {r['images_per_s']:>9.2f} | {r['ms_per_image']:>8.1f} | "
            f"{r['ms_per_image_median']:>9.1f}"
        )
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
