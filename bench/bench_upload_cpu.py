"""What one photo upload costs the web process, and what the worker does after it (issue 25, item 3).

    python bench/bench_upload_cpu.py [--uploads 20] [--tree PATH] [--name NAME]

In one process, against a throwaway PostgreSQL database (``dentalscan_bench_upload`` on 127.0.0.1) with Redis
configured (db 14, purged), so the analysis is queued and not run here, as in a deployment with workers: seeds a
clinic and a patient, then calls the upload use case (``analysis.uploads.image_upload``: intake, image gate,
model-input copy, encryption, storage, the rows and the audit event) ``--uploads`` times with 1280x960 JPEG photos
(the shared intraoral photos upscaled, or noise photos when ``../shared/datasets`` is absent), and prints the
CPU (``time.process_time``) and wall time per upload, median and p95. Where the tree has
``patients.services.image_derive`` (the preview and thumbnail made after the upload was answered), it then times
that per image too: work that left the request for a worker.

``--tree``: run another checkout's code (e.g. a ``git worktree`` of an older commit) with this same script.
Writes ``bench/results/upload_cpu_<name>.json``.
"""

from __future__ import annotations

import argparse
import glob
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DB = "dentalscan_bench_upload"


def _photos(n: int) -> list[bytes]:
    import numpy as np
    from PIL import Image

    files = sorted(glob.glob(str(HERE.parent.parent / "shared/datasets/intraoral-photos/images/*.jpg")))[:n]
    out = []
    for i in range(n):
        if files:
            im = Image.open(files[i % len(files)]).convert("RGB").resize((1280, 960), Image.Resampling.BICUBIC)
        else:
            rng = np.random.default_rng(i)
            im = Image.fromarray(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)).resize((1280, 960))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def _stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median_ms": round(1000 * statistics.median(ordered), 1),
        "p95_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 1),
        "mean_ms": round(1000 * statistics.fmean(ordered), 1),
    }


def run_inside(uploads: int) -> dict[str, object]:
    """Runs in the child process, with the tree's own code on sys.path."""
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    call_command("register_model", "--shipped", verbosity=0)
    from config.celery import app

    app.control.purge()
    import datetime as dt

    from analysis.uploads import image_upload
    from clinics import context, services
    from clinics.tenancy import clinic_scope
    from patients import services as patient_services
    from patients.services import patient_create

    clinic = services.clinic_create(name="Upload bench", slug=f"upload-bench-{os.getpid()}")
    photos = _photos(uploads + 3)
    context.actor_var.set(context.Actor(system="bench"))
    derive = getattr(patient_services, "image_derive", None)
    with clinic_scope(clinic.id):
        patient = patient_create(
            external_id="bench-1", given_name="Bench", family_name="Upload", date_of_birth=dt.date(1980, 1, 1)
        )
        cpu, wall, images = [], [], []
        for i, data in enumerate(photos):
            c0, w0 = time.process_time(), time.perf_counter()
            image = image_upload(
                patient=patient, stream=io.BytesIO(data), filename=f"{i}.jpg", size=len(data), modality="photo"
            )
            c1, w1 = time.process_time(), time.perf_counter()
            if i >= 3:  # the first calls load the gate's model and warm caches
                cpu.append(c1 - c0)
                wall.append(w1 - w0)
                images.append(image)
        result: dict[str, object] = {"upload_cpu": _stats(cpu), "upload_wall": _stats(wall), "uploads": len(cpu)}
        if derive is not None:
            dcpu, dwall = [], []
            for image in images:
                c0, w0 = time.process_time(), time.perf_counter()
                derive(image=image)
                dcpu.append(time.process_time() - c0)
                dwall.append(time.perf_counter() - w0)
            result |= {"after_response_cpu": _stats(dcpu), "after_response_wall": _stats(dwall)}
    app.control.purge()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--uploads", type=int, default=20)
    parser.add_argument("--tree", default=str(HERE.parent), help="the checkout whose code runs")
    parser.add_argument("--name", default="this")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        print(json.dumps(run_inside(args.uploads)))
        return
    tree = Path(args.tree).resolve()
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", f"DROP DATABASE IF EXISTS {DB}"], check=True)
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", f"CREATE DATABASE {DB}"], check=True)
    try:
        with tempfile.TemporaryDirectory() as images:
            env = {
                **os.environ,
                "DJANGO_SETTINGS_MODULE": "config.settings.local",
                "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{DB}",
                "REDIS_URL": "redis://127.0.0.1:6379/14",
                "DENTALSCAN_IMAGES_DIR": images,
                "OMP_NUM_THREADS": "1",  # as config.process sets it for a web process beside workers
                "PYTHONPATH": str(tree),
            }
            done = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "--inside", "--uploads", str(args.uploads)],
                cwd=tree,
                env=env,
                capture_output=True,
                text=True,
            )
            if done.returncode:
                sys.exit(done.stderr[-3000:])
            result = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", f"DROP DATABASE IF EXISTS {DB}"])
    commit = subprocess.run(["git", "-C", str(tree), "describe", "--always", "--dirty"], capture_output=True, text=True)
    result |= {"tree": str(tree), "commit": commit.stdout.strip(), "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    print(f"{args.name} ({result['commit']}): {result['uploads']} photo uploads of 1280x960, in one process")
    print(f"  upload (web process): CPU {result['upload_cpu']}; wall {result['upload_wall']}")
    if "after_response_cpu" in result:
        print(f"  preview + thumbnail after the answer (worker): CPU {result['after_response_cpu']}")
    out = HERE / "results" / f"upload_cpu_{args.name}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {out.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
