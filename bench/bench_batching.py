"""Many small visits against one large one: does the worker batch across analyses?

    python bench/bench_batching.py [--images 10] [--rounds 3]

Against PostgreSQL + Redis + one real Celery worker (``--pool solo``, queue ``gpu``) and the web app (gunicorn),
with the newest shipped photo model and real intraoral photos from ``../shared/datasets`` (the image gate refuses
drawn pictures, so the model would never run on them; without the data the benchmark says so and stops).

Each round, the worker is paused (SIGSTOP) while the photos are uploaded through the REST API, so that every
analysis is queued at once, then resumed (SIGCONT); the time is from the resume to the last analysis finished
(``finished_at`` in the database). Two shapes, alternating, ``--rounds`` each:

- ``one visit``: one patient, ``--images`` photos in one visit (batched as one visit's siblings);
- ``small visits``: ``--images`` patients with one photo each (one analysis a visit: batched only when the
  worker takes queued analyses of other visits into its batch, ``ANALYSIS_BATCH_WAIT_MS``/``ANALYSIS_BATCH_SIZE``).

Prints images/s of each (median over rounds) and the ratio small/one. Writes ``bench/results/batching.json``.
"""

from __future__ import annotations

import argparse
import csv
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import ROOT, machine, machine_line, table, write_json  # noqa: E402
from bench_end_to_end import FORBIDDEN_DATABASES, start_gunicorn  # noqa: E402

from tests.stack import Api, Stack, wait_until  # noqa: E402

DATASETS = ROOT.parent / "shared" / "datasets" / "intraoral-photos"


def photos(count: int, offset: int) -> list[bytes]:
    """``count`` different real intraoral photos (with disease, so the model has findings to explain)."""
    with (DATASETS / "manifest.csv").open() as handle:
        rows = [row for row in csv.DictReader(handle) if row["labels"] != "healthy"]
    chosen = rows[offset * 7 % len(rows) :: 7][:count]
    return [(DATASETS / row["file"]).read_bytes() for row in chosen]


def round_trip(
    stack: Stack, worker, api: Api, admin_url: str, database: str, shape: str, images: list[bytes], tag: str
):  # noqa: ANN001, ANN201, PLR0913
    import psycopg

    os.kill(worker.pid, signal.SIGSTOP)
    ids: list[str] = []
    try:
        if shape == "one visit":
            patient = api.create_patient(f"{tag}-one")
            patients = [patient] * len(images)
        else:
            patients = [api.create_patient(f"{tag}-{i}") for i in range(len(images))]
        for patient, data in zip(patients, images, strict=True):
            status, body = api.upload(patient, data, name="photo.jpg")
            assert status == 201, (status, body)
            ids.append(body["analysis"]["id"])
    finally:
        resumed = time.time()
        os.kill(worker.pid, signal.SIGCONT)
    final = api.wait_done(ids, timeout=600, procs=[worker])
    with psycopg.connect(f"{admin_url}/{database}") as conn:
        rows = conn.execute(
            "SELECT status, extract(epoch FROM finished_at) FROM analysis_analysis WHERE id = ANY(%s)",
            [ids],
        ).fetchall()
    statuses = sorted({s for s, _ in rows})
    last = max(float(f) for _, f in rows if f is not None)
    seconds = last - resumed
    return {
        "shape": shape,
        "seconds": round(seconds, 3),
        "images_per_s": round(len(ids) / seconds, 2),
        "statuses": statuses,
        "api_statuses": sorted(set(final.values())),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432", help="server URL, without database")
    ap.add_argument("--database", default="dentalscan_bench_batching")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379")
    ap.add_argument("--redis-db", type=int, default=12)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if not DATASETS.exists():
        print(f"needs real intraoral photos at {DATASETS} (the image gate refuses drawn ones): not run")
        return 0
    if args.database in FORBIDDEN_DATABASES:
        raise SystemExit(f"refusing to use the database {args.database!r}")
    if args.redis_db in (0, 15):
        raise SystemExit("refusing Redis database 0 or 15 (the default and the test suite's)")
    import psycopg
    import redis

    broker = redis.Redis.from_url(f"{args.redis}/{args.redis_db}")
    with psycopg.connect(f"{args.pg}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{args.database}"')
    broker.flushdb()
    stack = Stack(
        database_url=f"{args.pg}/{args.database}",
        redis_url=f"{args.redis}/{args.redis_db}",
        workdir=Path(tempfile.mkdtemp(prefix="bench-batching-")),
        app_role=f"{args.database}_app",
        extra_env={"RATE_LIMITS_DISABLED": "1"},
        settings_module="bench.settings",
    )
    try:
        seed = stack.prepare(shipped=True)
        base_url = start_gunicorn(stack)
        worker = stack.start_worker(name="bench")
        wait_until(lambda: "ready." in stack.log("bench.log"), timeout=120, what="the worker")
        api = Api(base_url, seed["clinics"][0]["api_key"])
        # Warm-up (excluded): the worker loads the model on its first batch; one round of each shape.
        runs = []
        for r in range(args.rounds + 1):
            for shape in ("one visit", "small visits"):
                result = round_trip(
                    stack,
                    worker,
                    api,
                    args.pg,
                    args.database,
                    shape,
                    photos(args.images, 2 * r + (shape != "one visit")),
                    f"r{r}-{time.time_ns()}",
                )
                if r:
                    runs.append(result)
                print(
                    f"  round {r}{' (warm-up)' if not r else ''}: {shape}: {result['images_per_s']} images/s "
                    f"({result['seconds']} s, {result['statuses']})",
                    flush=True,
                )
        one = statistics.median(x["images_per_s"] for x in runs if x["shape"] == "one visit")
        small = statistics.median(x["images_per_s"] for x in runs if x["shape"] == "small visits")
        info = machine()
        print(
            f"Batching across analyses: {args.images} photos queued at once, 1 Celery worker (solo), "
            f"batch size {os.environ.get('ANALYSIS_BATCH_SIZE', 16)}, "
            f"wait {os.environ.get('ANALYSIS_BATCH_WAIT_MS', 50)} ms, PostgreSQL + Redis"
        )
        print(machine_line(info))
        print(
            table(
                ["shape", "images/s (median)", "rounds"],
                [["one visit of N photos", one, args.rounds], ["N visits of 1 photo", small, args.rounds]],
            )
        )
        print(f"small visits / one visit: {small / one:.2f}")
        write_json(
            "batching.json",
            {
                "machine": info,
                "images": args.images,
                "runs": runs,
                "one_visit_images_per_s": one,
                "small_visits_images_per_s": small,
                "ratio": round(small / one, 3),
            },
            args.out,
        )
    finally:
        stack.stop_all()
        broker.flushdb()
        with psycopg.connect(f"{args.pg}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
