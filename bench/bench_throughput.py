"""Photo model throughput on CPU: the worker's real path against a naive loop and ONNX Runtime.

    python bench/bench_throughput.py [--quick] [--images 32] [--repeats 2] [--size 1280x960] [--threads N]

What each row runs, per image (all start from the encrypted stored PNG, as in storage):
- ``worker, serial decode``: what the Celery task ``analysis.run`` did after reading the blobs until
  2026-12-02 (``analysis.services.analysis_execute``): AES-GCM decrypt, PIL decode + ``load()`` one by one, then
  ``Predictor.predict(pixels, explain=True, min_probability=CANDIDATE_FLOOR)`` (resize, tensor,
  channels-last, ``torch.inference_mode``, model + class-activation maps, calibration, heatmaps and boxes),
  in batches of ``settings.ANALYSIS_BATCH_SIZE`` (16) and of 1.
- ``naive``: a first-tutorial loop: PIL open, torchvision ``Resize/ToTensor/Normalize``, ``model(x)`` one
  image at a time, autograd left on (no ``inference_mode``/``no_grad``), sigmoid. Scores only: it does
  *less* work than the worker (no heatmaps, boxes or decryption).
- ``onnxruntime``: the same model exported with ``torch.onnx.export`` (logits and class-activation maps as
  outputs), decrypt + decode + the same preprocessing and postprocessing as the worker around
  ``InferenceSession.run``, same thread count.
- ``worker, parallel decode``: the path of 2026-12-02 (``analysis.services._load_batch`` then): decrypt, then
  ``analysis.ml.fast.decode_many`` (decode + resize of a batch in a thread pool; Pillow releases the GIL).
- ``worker + fast.py``: parallel decode and ``analysis.ml.fast.OnnxPhotoPredictor`` (ONNX Runtime).
- ``worker (now)``: what ``analysis.run`` does now: it reads the **model-input copy** that intake stored
  beside the original (``analysis.ml.model_input``: the image already reduced to the model's input, a
  lossless 224x224 PNG, encrypted like every variant), decodes the batch in parallel and runs the predictor
  the registry gives it: ONNX Runtime on CPU (``ANALYSIS_ONNX_RUNTIME=on``, the default), or PyTorch (off).
  The upload pays for the copy (reduce + PNG + encrypt, from the pixels intake has already decoded);
  that cost is measured and printed too.

Prints one table and writes ``bench/results/throughput.json``. The X-ray detector is measured too when
``analysis/models/xray/*/weights.pt`` exists (worker path only).
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, machine_line, table, write_json  # noqa: E402

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")
for name in ("DATABASE_URL", "REDIS_URL"):  # nothing here needs a database or a broker
    os.environ.pop(name, None)

import django  # noqa: E402

django.setup()

import numpy as np  # noqa: E402
import torch  # noqa: E402
from django.conf import settings  # noqa: E402
from PIL import Image  # noqa: E402

from analysis.ml.infer import load_predictor  # noqa: E402
from analysis.services import CANDIDATE_FLOOR  # noqa: E402
from core import crypto  # noqa: E402


def newest(modality: str) -> Path | None:
    base = ROOT / "analysis" / "models" / modality
    found = [d for d in base.glob("*") if (d / "model.json").exists() and (d / "weights.pt").exists()]
    found.sort(key=lambda d: [int(x) if x.isdigit() else x for x in d.name.split(".")])
    return found[-1] if found else None


def photo_like(seed: int, size: tuple[int, int]) -> Image.Image:
    """A smooth, photo-like RGB picture (gradients, blobs, mild noise): PNG-compresses like a photo."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    arr = np.zeros((h, w, 3), np.float32)
    for c in range(3):
        arr[..., c] = 120 + 60 * np.sin(xx / (40 + 13 * c + seed % 7)) * np.cos(yy / (55 + 9 * c))
    for _ in range(6):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(20, 120)
        arr += (((xx - cx) ** 2 + (yy - cy) ** 2) < r * r)[..., None] * rng.uniform(-60, 60, 3)
    arr += rng.normal(0, 4, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def stored_blobs(n: int, size: tuple[int, int], key: bytes) -> list[tuple[bytes, bytes]]:
    """(ciphertext, aad) pairs exactly as ``image_ingest`` stores originals (PNG, AES-256-GCM)."""
    base = [photo_like(i, size) for i in range(min(n, 8))]
    blobs = []
    for i in range(n):
        buffer = io.BytesIO()
        base[i % len(base)].save(buffer, "PNG")
        aad = f"image:{i}:original".encode()
        blobs.append((crypto.encrypt(key, buffer.getvalue(), aad), aad))
    return blobs


def model_input_copies(blobs, key: bytes, meta: dict) -> tuple[list[tuple[bytes, bytes]], dict]:  # noqa: ANN001
    """What intake stores beside each original now: the model-input copy (encrypted). Also what it costs the
    upload: reduce + encode + encrypt, from the pixels intake has decoded anyway (ms per image)."""
    from analysis.ml import model_input

    pixels = [decode(key, b, a) for b, a in blobs]
    copies = []
    t0 = time.perf_counter()
    for i, image in enumerate(pixels):
        _, data = model_input.make(image, meta)
        aad = f"image:{i}:model_input".encode()
        copies.append((crypto.encrypt(key, data, aad), aad))
    ms = 1000 * (time.perf_counter() - t0) / len(pixels)
    size = statistics.mean(len(b) for b, _ in copies)
    return copies, {"upload_ms_per_image": round(ms, 2), "copy_bytes_mean": round(size)}


def decode(key: bytes, blob: bytes, aad: bytes) -> Image.Image:
    """The former serial ``_load_pixels`` without the database: decrypt, open, load."""
    pixels = Image.open(io.BytesIO(crypto.decrypt(key, blob, aad)))
    pixels.load()
    return pixels


def timed(run, n_images: int, repeats: int) -> dict:  # noqa: ANN001
    run(warmup=True)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run(warmup=False)
        times.append(time.perf_counter() - t0)
    best, median = min(times), statistics.median(times)
    return {
        "images": n_images,
        "repeats": repeats,
        "best_s": round(best, 4),
        "median_s": round(median, 4),
        "images_per_s": round(n_images / median, 2),
        "images_per_s_best": round(n_images / best, 2),
        "ms_per_image": round(1000 * median / n_images, 2),
    }


# --- the paths ----------------------------------------------------------------------------------
def worker_runner(predictor, blobs, key: bytes, bs: int, parallel: bool = False):  # noqa: ANN001, ANN201
    """Per batch: decrypt + decode (serially, or in parallel like ``_load_batch``), predict."""
    from analysis.ml import fast

    size = predictor.input_size if predictor.meta.get("modality") == "photo" else None  # as _load_batch

    def run(warmup: bool) -> None:
        items = blobs[:bs] if warmup else blobs
        for start in range(0, len(items), bs):
            chunk = items[start : start + bs]
            if parallel:
                pixels = fast.decode_many([crypto.decrypt(key, b, a) for b, a in chunk], size)
            else:
                pixels = [decode(key, b, a) for b, a in chunk]
            out = predictor.predict(pixels, explain=True, min_probability=CANDIDATE_FLOOR, batch_size=bs)
            assert len(out) == len(pixels)

    return run


def naive_runner(artifact: Path, blobs, key: bytes):  # noqa: ANN001, ANN201
    """A first tutorial: the model in eval mode, torchvision transforms, one image at a time."""
    import json

    from torchvision import transforms

    from analysis.ml.model import build_model

    meta = json.loads((artifact / "model.json").read_text())
    model = build_model(len(meta["labels"]), meta["input_size"], pretrained=False)
    model.load_state_dict(torch.load(artifact / "weights.pt", map_location="cpu", weights_only=True))
    model.eval()
    size = meta["input_size"]
    preprocess = transforms.Compose(
        [transforms.Resize((size, size)), transforms.ToTensor(), transforms.Normalize([0.5] * 3, [0.5] * 3)]
    )
    plain = [crypto.decrypt(key, b, a) for b, a in blobs]  # the tutorial reads plain files

    def run(warmup: bool) -> None:
        for data in plain[:2] if warmup else plain:
            img = Image.open(io.BytesIO(data)).convert("RGB")
            x = preprocess(img).unsqueeze(0)
            probs = torch.sigmoid(model(x))
            probs.detach().numpy()

    return run


def check_same_outputs(a: list[dict], b: list[dict]) -> float:
    """Largest score difference between two paths on the same images."""
    return max(abs(x["scores"][k] - y["scores"][k]) for x, y in zip(a, b, strict=True) for k in x["scores"])


def breakdown(predictor, blobs, key: bytes, bs: int) -> dict:  # noqa: ANN001
    """Where PyTorch worker time goes at batch ``bs`` (ms per image), decoding ``blobs`` one by one."""
    from analysis.ml.explain import heatmap_box, normalise_cams

    items = blobs[: max(bs, min(len(blobs), 32))]
    t = {"decode": 0.0, "preprocess": 0.0, "model": 0.0, "postprocess": 0.0}
    for start in range(0, len(items), bs):
        t0 = time.perf_counter()
        pixels = [decode(key, b, a) for b, a in items[start : start + bs]]
        t1 = time.perf_counter()
        with torch.inference_mode():
            x = predictor._preprocess(pixels)
            t2 = time.perf_counter()
            logits, cams = predictor.model.forward_with_cam(x)
            t3 = time.perf_counter()
            hms = normalise_cams(cams)
            for i in range(len(pixels)):
                for c in range(len(predictor.labels)):
                    heatmap_box(hms[i, c])
            t4 = time.perf_counter()
        t["decode"] += t1 - t0
        t["preprocess"] += t2 - t1
        t["model"] += t3 - t2
        t["postprocess"] += t4 - t3
    return {k: round(1000 * v / len(items), 2) for k, v in t.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="16 images, one repeat (a smoke run)")
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--size", default="1280x960", help="stored photo size WxH (default 1280x960)")
    ap.add_argument("--threads", type=int, default=None, help="torch / ORT threads (default: torch's choice)")
    ap.add_argument("--no-onnx", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.quick:
        args.images, args.repeats = 16, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    size = tuple(int(v) for v in args.size.lower().split("x"))
    batch = int(settings.ANALYSIS_BATCH_SIZE)
    artifact = newest("photo")
    if artifact is None:
        raise SystemExit("no photo artefact under analysis/models/photo")
    key = os.urandom(32)
    blobs = stored_blobs(args.images, size, key)
    predictor = load_predictor(artifact, device="cpu")
    rows: list[dict] = []

    def add(path: str, bs: int, runner) -> dict:  # noqa: ANN001
        result = {
            "path": path,
            "model": predictor.model_id,
            "batch_size": bs,
            **timed(runner, len(blobs), args.repeats),
        }
        rows.append(result)
        return result

    naive = add("naive loop (tutorial)", 1, naive_runner(artifact, blobs, key))
    add("worker, serial decode (before)", 1, worker_runner(predictor, blobs, key, 1))
    add("worker, serial decode (before)", batch, worker_runner(predictor, blobs, key, batch))
    add("worker, parallel decode (12-02)", 1, worker_runner(predictor, blobs, key, 1, parallel=True))
    add("worker, parallel decode (12-02)", batch, worker_runner(predictor, blobs, key, batch, parallel=True))
    copies, copy_info = model_input_copies(blobs, key, predictor.meta)
    add("worker (now), copy, ORT off", batch, worker_runner(predictor, copies, key, batch, parallel=True))
    onnx_info: dict = {}
    if not args.no_onnx:
        try:
            import onnxruntime

            from analysis.ml.fast import OnnxPhotoPredictor

            os.environ["DENTALSCAN_ONNX_CACHE"] = tempfile.mkdtemp(prefix="bench-onnx-")
            t0 = time.perf_counter()
            ort_predictor = OnnxPhotoPredictor(predictor, threads=threads)
            sample = [decode(key, b, a) for b, a in blobs[:4]]
            onnx_info = {
                "onnxruntime": onnxruntime.__version__,
                "export_and_load_seconds": round(time.perf_counter() - t0, 2),
                "max_score_difference_vs_torch": check_same_outputs(
                    predictor.predict(sample, min_probability=CANDIDATE_FLOOR),
                    ort_predictor.predict(sample, min_probability=CANDIDATE_FLOOR),
                ),
            }
            add("onnxruntime", 1, worker_runner(ort_predictor, blobs, key, 1))
            add("onnxruntime", batch, worker_runner(ort_predictor, blobs, key, batch))
            add(
                "worker + fast.py (ORT + parallel decode)",
                batch,
                worker_runner(ort_predictor, blobs, key, batch, parallel=True),
            )
            add("worker (now): copy + ORT", 1, worker_runner(ort_predictor, copies, key, 1, parallel=True))
            add("worker (now): copy + ORT", batch, worker_runner(ort_predictor, copies, key, batch, parallel=True))
        except ImportError:
            onnx_info = {"skipped": "onnxruntime is not installed"}
        finally:
            if os.environ.get("DENTALSCAN_ONNX_CACHE", "").startswith(tempfile.gettempdir()):
                import shutil

                shutil.rmtree(os.environ.pop("DENTALSCAN_ONNX_CACHE"), ignore_errors=True)
    xray = newest("xray")
    xray_info = "measured" if xray is not None else "skipped: no analysis/models/xray/*/weights.pt"
    if xray is not None:
        xp = load_predictor(xray, device="cpu")
        xbs = xp.batch_size  # what the worker uses (1 on CPU)
        xblobs = blobs[: max(8, xbs)]
        xcopies, _ = model_input_copies(xblobs, key, xp.meta)
        for label, items in (("xray worker, originals (before)", xblobs), ("xray worker (now): copy", xcopies)):
            rows.append(
                {
                    "path": label,
                    "model": xp.model_id,
                    "batch_size": xbs,
                    **timed(worker_runner(xp, items, key, xbs, parallel=True), len(items), 1),
                }
            )
    for r in rows:
        r["vs_naive"] = round(r["images_per_s"] / naive["images_per_s"], 2)
    split = breakdown(predictor, blobs, key, batch)
    split_copy = breakdown(predictor, copies, key, batch)
    info = machine()
    print(
        f"Photo throughput on CPU: {predictor.model_id}, input {predictor.input_size}px, {len(blobs)} stored "
        f"{size[0]}x{size[1]} PNGs, {threads} threads, median of {args.repeats}"
    )
    print(machine_line(info))
    print(
        table(
            ["path", "model", "batch", "images/s", "ms/image", "x naive"],
            [
                [r["path"], r["model"], r["batch_size"], r["images_per_s"], r["ms_per_image"], r["vs_naive"]]
                for r in rows
            ],
        )
    )
    print(f"PyTorch at batch {batch}, ms/image, originals: " + ", ".join(f"{k} {v}" for k, v in split.items()))
    print(f"PyTorch at batch {batch}, ms/image, copies: " + ", ".join(f"{k} {v}" for k, v in split_copy.items()))
    print(
        f"model-input copy, paid at upload: {copy_info['upload_ms_per_image']} ms/image "
        f"(reduce + PNG + encrypt), {copy_info['copy_bytes_mean']} bytes"
    )
    if onnx_info:
        print("onnx: " + ", ".join(f"{k} {v}" for k, v in onnx_info.items()))
    print(f"x-ray model: {xray_info}")
    payload = {
        "machine": info,
        "artifact": str(artifact.relative_to(ROOT)),
        "input_size": predictor.input_size,
        "stored_image_size": list(size),
        "threads": threads,
        "batch_size_setting": batch,
        "results": rows,
        "worker_breakdown_ms_per_image": split,
        "worker_breakdown_copy_ms_per_image": split_copy,
        "model_input_copy": copy_info,
        "onnx": onnx_info,
        "xray": xray_info,
        "quick": args.quick,
    }
    path = write_json("throughput_quick.json" if args.quick else "throughput.json", payload, args.out)
    print(f"written {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
