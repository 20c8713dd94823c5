"""End to end: N clinics' clients upload a 15-photo visit each through the real API, at the same time,
against PostgreSQL + Redis + one real Celery worker; how long until every finding is available?

    python bench/bench_end_to_end.py [--quick] [--clients 4] [--photos 15] [--size 1280x960]

Starts everything it needs and removes it afterwards: a throwaway database (``dentalscan_bench``) on the
PostgreSQL of ``--pg`` (default: the local server, 127.0.0.1:5432, as ``postgres``), Redis database 13 of
``--redis`` (flushed before and after), the web app (gunicorn, 2 processes x 4 threads; ``--runserver``
for Django's server), one Celery worker (``--pool solo``, queue ``gpu``) with the newest shipped photo
model. The demo clinics come from ``manage.py seed_demo --json``; their API keys upload.

Per visit: seconds from the client's first upload request to the moment the API reports all 15 analyses
``done`` (findings included). Prints p50/p95/max over visits, upload latency per photo, and images/s
(all photos / wall time from the first upload to the last analysis done). Writes
``bench/results/end_to_end.json``.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, machine_line, table, write_json  # noqa: E402

from tests.stack import PYTHON, Api, Stack, free_port, wait_until  # noqa: E402

FORBIDDEN_DATABASES = {"test_dentalscan", "dentalscan_dev", "dentalscan", "postgres", "template0", "template1"}


def _real_photos() -> list[Path]:
    """Healthy-looking intraoral photos from the shared data (other sources: they pass the image gate), if present."""
    folder = ROOT.parent / "shared" / "datasets" / "other-source-photos" / "images"
    return sorted(folder.glob("*.jpg")) if folder.is_dir() else []


def jpeg_photo(seed: int, size: tuple[int, int]) -> bytes:
    """A JPEG as a phone or intraoral camera sends it: a real intraoral photo resized to ``size`` where the shared
    data is present (the model runs on it), else a drawn picture (which the image gate refuses as not intraoral:
    the analysis ends ``not_assessable`` without the model)."""
    import numpy as np
    from PIL import Image

    real = _real_photos()
    if real:
        buffer = io.BytesIO()
        with Image.open(real[seed % len(real)]) as photo:
            photo.convert("RGB").resize(size).save(buffer, "JPEG", quality=85 + seed % 10)  # distinct bytes per seed
        return buffer.getvalue()

    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    arr = np.zeros((h, w, 3), np.float32)
    for c in range(3):
        arr[..., c] = 130 + 70 * np.sin(xx / (35 + 11 * c + seed % 9)) * np.cos(yy / (50 + 7 * c))
    for _ in range(8):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(20, 140)
        arr += (((xx - cx) ** 2 + (yy - cy) ** 2) < r * r)[..., None] * rng.uniform(-60, 60, 3)
    arr += rng.normal(0, 5, arr.shape)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB").save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def start_gunicorn(stack: Stack, workers: int = 2, threads: int = 4) -> str:
    import requests

    stack.web_port = free_port()
    proc = stack._spawn(
        [
            PYTHON,
            "-m",
            "gunicorn",
            "config.wsgi:application",
            "--bind",
            f"127.0.0.1:{stack.web_port}",
            "--workers",
            str(workers),
            "--threads",
            str(threads),
            "--timeout",
            "120",
        ],
        "web.log",
    )

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited:\n{stack.log('web.log')[-3000:]}")
        return requests.get(f"{stack.base_url}/api/v1/schema/", timeout=5).status_code < 500

    wait_until(up, timeout=90, what="gunicorn", interval=0.3)
    return stack.base_url


class Visit(threading.Thread):
    def __init__(
        self, api: Api, index: int, photos: list[bytes], barrier: threading.Barrier, mode: str = "sequential"
    ) -> None:
        super().__init__(daemon=True)
        self.api, self.index, self.photos, self.barrier, self.mode = api, index, photos, barrier, mode
        self.upload_seconds: list[float] = []
        self.statuses: dict[str, int] = {}  # how the analyses ended (not_assessable: refused by the image gate)
        self.errors: list[str] = []
        self.started = self.finished = 0.0

    def run(self) -> None:
        try:
            patient = self.api.create_patient(f"bench-{self.index}-{time.time_ns()}", "Bench", f"Visit{self.index}")
            self.barrier.wait()
            self.started = time.perf_counter()
            analyses, visit = [], None
            for i, status, body in self._uploads(patient):
                if status != 201:
                    self.errors.append(f"upload {i}: {status} {str(body)[:200]}")
                    continue
                analyses.append(body["analysis"]["id"])
                visit = body["visit"]
            pending = set(analyses)
            deadline = time.monotonic() + 1800
            while pending and time.monotonic() < deadline:
                response = self.api.get("/api/v1/analyses/", visit=visit)
                if response.status_code == 200:
                    for item in response.json()["results"]:
                        if item["id"] in pending and item["status"] in ("done", "failed", "not_assessable"):
                            if item["status"] == "failed":
                                self.errors.append(f"analysis {item['id']} failed")
                            self.statuses[item["status"]] = self.statuses.get(item["status"], 0) + 1
                            pending.discard(item["id"])
                if pending:
                    time.sleep(0.25)
            if pending:
                self.errors.append(f"{len(pending)} analyses not done in time")
            self.finished = time.perf_counter()
        except Exception as exc:  # noqa: BLE001 - reported in the results
            self.errors.append(repr(exc))
            self.finished = time.perf_counter()

    def _uploads(self, patient: str) -> list[tuple[int, int, Any]]:
        """(index, status, body) per photo: one request at a time (``sequential``), six at a time as the upload
        page sends them (``parallel``), or all in one request to the multi-file endpoint (``batch``)."""

        def one(i: int) -> tuple[int, int, Any]:
            t0 = time.perf_counter()
            status, body = self.api.upload(patient, self.photos[i], name=f"photo{i}.jpg")
            self.upload_seconds.append(time.perf_counter() - t0)
            return i, status, body

        if self.mode == "parallel":
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(6) as pool:
                return list(pool.map(one, range(len(self.photos))))
        if self.mode == "batch":
            t0 = time.perf_counter()
            response = self.api.session.post(
                f"{self.api.base}/api/v1/patients/{patient}/images/batch/",
                files=[("file", (f"photo{i}.jpg", data, "image/jpeg")) for i, data in enumerate(self.photos)],
                data={"modality": "photo"},
                timeout=self.api.timeout,
            )
            self.upload_seconds.append(time.perf_counter() - t0)
            if response.status_code not in (201, 207):
                return [(-1, response.status_code, response.text[:200])]
            return [(r["index"], r["status"], r.get("image") or r.get("error")) for r in response.json()["results"]]
        return [one(i) for i in range(len(self.photos))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2 clients x 5 photos of 640x480")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--photos", type=int, default=15)
    ap.add_argument("--size", default="1280x960")
    ap.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432", help="server URL, without database")
    ap.add_argument("--database", default="dentalscan_bench")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379")
    ap.add_argument("--redis-db", type=int, default=13)
    ap.add_argument("--runserver", action="store_true", help="Django's runserver instead of gunicorn")
    ap.add_argument("--worker-threads", type=int, default=None, help="torch threads in the worker")
    ap.add_argument(
        "--uploads",
        choices=["sequential", "parallel", "batch"],
        default="sequential",
        help="one photo per request one after the other, six at a time (the upload page), or one batch request",
    )
    ap.add_argument("--web-workers", type=int, default=2, help="gunicorn processes")
    ap.add_argument("--web-threads", type=int, default=4, help="threads per gunicorn process")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.quick:
        args.clients, args.photos, args.size = 2, 5, "640x480"
    if args.database in FORBIDDEN_DATABASES:
        raise SystemExit(f"refusing to use the database {args.database!r}")
    if args.redis_db in (0, 15):
        raise SystemExit("refusing Redis database 0 or 15 (the default and the test suite's)")
    import psycopg
    import redis

    size = tuple(int(v) for v in args.size.lower().split("x"))
    admin = f"{args.pg}/postgres"
    broker = redis.Redis.from_url(f"{args.redis}/{args.redis_db}")
    workdir = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    app_role = f"{args.database}_app"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{args.database}"')
    me = broker.client_id()
    others = [c for c in broker.client_list() if int(c.get("db", -1)) == args.redis_db and int(c["id"]) != me]
    if others:
        # A worker left running by an interrupted earlier run would take this run's jobs and fail them all: its
        # master keys are not this run's (it did: 41 of 60 analyses "failed" their integrity check).
        raise SystemExit(
            f"{len(others)} other connection(s) use Redis database {args.redis_db} (a worker of an interrupted run?): "
            "stop them first, or choose --redis-db"
        )
    broker.flushdb()
    stack = Stack(
        database_url=f"{args.pg}/{args.database}",
        redis_url=f"{args.redis}/{args.redis_db}",
        workdir=workdir,
        app_role=app_role,
        extra_env={"RATE_LIMITS_DISABLED": "1"},
        settings_module="bench.settings",
    )
    try:
        t0 = time.perf_counter()
        seed = stack.prepare(shipped=True)
        base_url = (
            stack.start_web()
            if args.runserver
            else start_gunicorn(stack, workers=args.web_workers, threads=args.web_threads)
        )
        worker_env = {"OMP_NUM_THREADS": str(args.worker_threads)} if args.worker_threads else {}
        worker = stack.start_worker(name="bench", **worker_env)
        wait_until(lambda: "ready." in stack.log("bench.log"), timeout=120, what="the worker")
        keys = [c["api_key"] for c in seed["clinics"]]
        # Warm-up (excluded): the worker loads the model on its first task.
        warm = Api(base_url, keys[0])
        status, body = warm.upload(warm.create_patient(f"warm-{time.time_ns()}"), jpeg_photo(999, size))
        assert status == 201, (status, body)
        warm.wait_done([body["analysis"]["id"]], timeout=300, procs=[worker])
        setup_s = time.perf_counter() - t0
        photos = [jpeg_photo(i, size) for i in range(args.photos)]
        barrier = threading.Barrier(args.clients)
        visits = [
            Visit(Api(base_url, keys[i % len(keys)]), i, photos, barrier, args.uploads) for i in range(args.clients)
        ]
        for v in visits:
            v.start()
        for v in visits:
            v.join()
        errors = [e for v in visits for e in v.errors]
        wall = max(v.finished for v in visits) - min(v.started for v in visits)
        latencies = [v.finished - v.started for v in visits]
        uploads = [s for v in visits for s in v.upload_seconds]
        total = args.clients * args.photos
        result = {
            "clients": args.clients,
            "photos_per_visit": args.photos,
            "photo_size": list(size),
            "photo_bytes_mean": int(statistics.mean(len(p) for p in photos)),
            "visit_seconds": [round(x, 2) for x in latencies],
            "visit_p50_s": round(percentile(latencies, 0.5), 2),
            "visit_p95_s": round(percentile(latencies, 0.95), 2),
            "visit_max_s": round(max(latencies), 2),
            "upload_p50_s": round(percentile(uploads, 0.5), 3),
            "upload_p95_s": round(percentile(uploads, 0.95), 3),
            "wall_s": round(wall, 2),
            "images_per_s": round(total / wall, 2),
            "errors": errors,
            "analyses_by_status": {
                k: sum(v.statuses.get(k, 0) for v in visits) for k in sorted({k for v in visits for k in v.statuses})
            },
            "setup_s": round(setup_s, 1),
            "web": "runserver" if args.runserver else f"gunicorn {args.web_workers}x{args.web_threads}",
            "uploads": args.uploads,
            "worker": "celery solo, 1 process",
        }
        info = machine()
        print(
            f"End to end: {args.clients} clients x {args.photos} photos ({size[0]}x{size[1]} JPEG), "
            f"{result['web']}, uploads {args.uploads}, 1 Celery worker (solo), PostgreSQL + Redis"
        )
        print(machine_line(info))
        print(
            table(
                [
                    "clients",
                    "photos",
                    "visit p50 s",
                    "visit p95 s",
                    "visit max s",
                    "upload p50 s",
                    "images/s",
                    "errors",
                ],
                [
                    [
                        args.clients,
                        total,
                        result["visit_p50_s"],
                        result["visit_p95_s"],
                        result["visit_max_s"],
                        result["upload_p50_s"],
                        result["images_per_s"],
                        len(errors),
                    ]
                ],
            )
        )
        print(
            "analyses:",
            ", ".join(f"{n} {k}" for k, n in result["analyses_by_status"].items()),
            "(photos: real intraoral photos from the shared data)" if _real_photos() else "(photos: drawn pictures)",
        )
        for e in errors[:5]:
            print("error:", e)
        path = write_json(
            "end_to_end_quick.json" if args.quick else "end_to_end.json", {"machine": info, **result}, args.out
        )
        print(f"written {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
        return 1 if errors else 0
    finally:
        stack.stop_all()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
            try:
                conn.execute(f'DROP ROLE IF EXISTS "{app_role}"')
            except psycopg.Error:
                pass
        broker.flushdb()
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
