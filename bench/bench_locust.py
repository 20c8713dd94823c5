"""The mixed rush-hour scenario under Locust: staff, dentists and an integrator of one clinic at once.

    python bench/bench_locust.py [--users 50] [--mix 20,20,10] [--seconds 60] [--locust /path/to/locust]

Builds what ``bench_api_load.py`` builds (a throwaway PostgreSQL database, the demo clinics, ``--patients``
patients with one visit, 2 photos, a finished analysis each and ``--findings`` findings in all), adds an account
for each simulated staff member and dentist (dentists with a TOTP authenticator), starts the web app (gunicorn
2 processes x 4 threads, persistent database connections as in production, rate limits lifted) with Redis as
the broker and no worker (uploads queue their analyses), and runs ``bench/locustfile.py`` headless against
127.0.0.1: ``--users`` people (staff, dentists, integrators as ``--mix``), each sending about one request per
second, for ``--seconds``. Prints p50/p95/max and requests/s per kind of request and the error count; writes Locust's
CSV files (``bench/results/locust_mixed_*.csv``) and ``bench/results/locust_mixed.json``.

Locust is not one of the app's dependencies (``pip install locust==2.47.0`` in an environment of its own;
``--locust`` names its executable). Locust, the server and PostgreSQL share the machine's CPUs.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cpu_log  # noqa: E402
from _common import RESULTS, ROOT, cpu_snapshot, cpu_used, machine, machine_line, table, write_json  # noqa: E402
from bench_api_load import GENERATE  # noqa: E402
from bench_end_to_end import FORBIDDEN_DATABASES, _real_photos, jpeg_photo, start_gunicorn  # noqa: E402

from tests.stack import Stack, wait_until  # noqa: E402

ACCOUNTS = r"""
import json
from clinics import mfa, services
from clinics.models import Clinic, Role
from clinics.tenancy import clinic_scope
from analysis.models import Finding
from patients.models import Visit

clinic = Clinic.objects.get(pk="{clinic}")
staff, dentists = [], []
with clinic_scope(clinic.id):
    for i in range({staff}):
        email, password = f"staff{{i}}@load.test", f"Load-staff-password-{{i}}"
        services.member_add(email=email, role=Role.STAFF, password=password, full_name=f"Staff {{i}}")
        staff.append({{"email": email, "password": password}})
    for i in range({dentists}):
        email, password = f"dentist{{i}}@load.test", f"Load-dentist-password-{{i}}"
        member = services.member_add(email=email, role=Role.DENTIST, password=password, full_name=f"Dentist {{i}}")
        secret = ("JBSWY3DPEHPK3PXP" + "ABCDEFGHIJKLMNOP"[i % 16] * 16)[:32]
        mfa.demo_enrol(member.user, secret)
        dentists.append({{"email": email, "password": password, "totp_secret": secret}})
    visits = [str(v) for v in Visit.objects.values_list("id", flat=True)[:1000]]
    findings = [str(f) for f in Finding.objects.filter(image__visit_id__in=visits[:300]).values_list("id", flat=True)]
print(json.dumps({{"staff": staff, "dentists": dentists, "visits": visits, "findings": findings}}))
"""


def photo_jpeg() -> bytes:
    """The staff's upload: a real intraoral photo at 1024x768 where the shared data is present, so the image gate
    passes it and the worker runs the model, sharing the 2 cores as it would at a practice (a drawn picture, the
    fallback, is refused by the gate as not intraoral and costs the worker almost nothing)."""
    return jpeg_photo(0, (1024, 768))


def photo_kind() -> str:
    return "a real intraoral photo" if _real_photos() else "a drawn picture (the gate refuses it)"


class LockWaits(threading.Thread):
    """Samples PostgreSQL every 0.5 s: how many of the database's sessions wait on a lock, and on which statement."""

    def __init__(self, url: str, database: str) -> None:
        super().__init__(daemon=True)
        self.url, self.database, self.stop, self.samples = url, database, threading.Event(), 0
        self.waiting: dict[str, int] = {}

    def run(self) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.stop.wait(0.5):
                self.samples += 1
                rows = conn.execute(
                    "SELECT left(regexp_replace(query, '\\s+', ' ', 'g'), 90) FROM pg_stat_activity "
                    "WHERE datname = %s AND wait_event_type = 'Lock'",
                    [self.database],
                ).fetchall()
                for (query,) in rows:
                    self.waiting[query] = self.waiting.get(query, 0) + 1


def server_errors(log: str) -> dict[str, int]:
    """The exceptions that ended requests with a 500 (the last line of each traceback in the web log)."""
    found: dict[str, int] = {}
    lines = log.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("Traceback") and "Internal Server Error" in "".join(lines[max(0, i - 2) : i]):
            j = i + 1
            while j < len(lines) and (lines[j].startswith(" ") or not lines[j].strip()):
                j += 1
            if j < len(lines):
                found[lines[j][:120]] = found.get(lines[j][:120], 0) + 1
    return found


def analyses_by_status(url: str) -> dict[str, int]:
    """How many analyses ended how (the uploads of the run queue one each), read as the database owner."""
    import psycopg

    with psycopg.connect(url) as conn:
        return dict(conn.execute("SELECT status, count(*) FROM analysis_analysis GROUP BY status").fetchall())


def read_stats(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=50)
    ap.add_argument("--mix", default="", help="staff,dentists,integrators (default: 40%%, 40%%, 20%% of --users)")
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--spawn-rate", type=float, default=10)
    ap.add_argument(
        "--warmup",
        type=float,
        default=0,
        help="seconds of the same scenario run first and not measured (default 0: measured from a cold start; "
        "else >= 31)",
    )
    ap.add_argument(
        "--pacing",
        choices=["poisson", "constant"],
        default="poisson",
        help="poisson: each person's tasks start at random, about one a second (default); constant: Locust's "
        "constant_throughput, whose people started in one batch keep sending at the same instant (bursts)",
    )
    ap.add_argument("--upload-every", type=float, default=30, help="each staff member uploads a photo every N s")
    ap.add_argument("--patients", type=int, default=1000)
    ap.add_argument("--findings", type=int, default=20000)
    ap.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/13")
    ap.add_argument("--database", default="dentalscan_bench_locust")
    ap.add_argument("--locust", default=shutil.which("locust") or "locust")
    ap.add_argument("--name", default="locust_mixed", help="file name prefix under bench/results/")
    ap.add_argument("--web-workers", type=int, default=2, help="gunicorn processes")
    ap.add_argument("--web-threads", type=int, default=4, help="threads per gunicorn process")
    ap.add_argument("--celery-workers", type=int, default=0, help="Celery workers (solo, queue gpu) for the uploads")
    args = ap.parse_args(argv)
    if 0 < args.warmup < 31:
        ap.error("--warmup must be 0 or at least 31 s (the dentists' TOTP log-ins of the measured run need a new code)")
    if args.database in FORBIDDEN_DATABASES:
        raise SystemExit(f"refusing to use the database {args.database!r}")
    if args.mix:
        staff, dentists, integrators = (int(n) for n in args.mix.split(","))
    else:
        staff = dentists = round(args.users * 0.4)
        integrators = args.users - staff - dentists
    import psycopg

    admin = f"{args.pg}/postgres"
    app_role = f"{args.database}_app"
    workdir = Path(tempfile.mkdtemp(prefix="bench-locust-"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{args.database}"')
    stack = Stack(
        database_url=f"{args.pg}/{args.database}",
        redis_url=args.redis,
        workdir=workdir,
        app_role=app_role,
        settings_module="bench.settings",
        extra_env={
            "RATE_LIMITS_DISABLED": "1",
            "DATABASE_CONN_MAX_AGE": "60",
            "BENCH_CPU_LOG": str(workdir / "cpu.log"),
        },
    )
    try:
        seed = stack.prepare(shipped=True)
        clinic = seed["clinics"][0]
        data = json.loads(
            stack.python(GENERATE.format(patients=args.patients, findings=args.findings, clinic=clinic["id"]))
        )
        data.update(json.loads(stack.python(ACCOUNTS.format(clinic=clinic["id"], staff=staff, dentists=dentists))))
        stack.manage("shell", "-c", "from django.db import connection; connection.cursor().execute('ANALYZE')")
        (workdir / "photo.jpg").write_bytes(photo_jpeg())
        data.update(
            api_key=clinic["api_key"],
            photo=str(workdir / "photo.jpg"),
            patient_pages=max(1, args.patients // 50),
            analysis_pages=max(1, len(data["images"]) // 50),
        )
        (workdir / "data.json").write_text(json.dumps(data))
        base = start_gunicorn(stack, workers=args.web_workers, threads=args.web_threads)
        web_pid = stack.procs[-1].pid
        for index in range(args.celery_workers):
            stack.start_worker(name=f"bench{index}")
        for index in range(args.celery_workers):
            wait_until(lambda i=index: "ready." in stack.log(f"bench{i}.log"), timeout=180, what="a worker")
        prefix = workdir / "locust"

        def locust(seconds: float, csv_prefix: Path) -> subprocess.CompletedProcess:
            return subprocess.run(  # noqa: S603
                [
                    args.locust,
                    "-f",
                    str(ROOT / "bench" / "locustfile.py"),
                    "--headless",
                    "--host",
                    base,
                    "--users",
                    str(staff + dentists + integrators),
                    "--spawn-rate",
                    str(args.spawn_rate),
                    "--run-time",
                    f"{seconds:g}s",
                    "--csv",
                    str(csv_prefix),
                    "--only-summary",
                    "--csv-full-history",
                    "--stop-timeout",
                    "10",
                ],
                env={
                    **os.environ,
                    "BENCH_LOCUST_DATA": str(workdir / "data.json"),
                    "BENCH_LOCUST_MIX": f"{staff},{dentists},{integrators}",
                    "BENCH_LOCUST_UPLOAD_EVERY_S": str(args.upload_every),
                    "BENCH_LOCUST_PACING": args.pacing,
                },
                capture_output=True,
                text=True,
                timeout=seconds + 300,
            )

        warmup: dict[str, object] = {"seconds": args.warmup}
        if args.warmup:
            # The same scenario first, not measured: every web process has served each kind of request once
            # (lazy imports, template compilation, per-process caches), as a server that has been up a while has.
            # At least 31 s, so the measured run's TOTP log-ins fall in the next 30-second step (a code is
            # accepted once per account).
            ran = locust(args.warmup, workdir / "warmup")
            warm_stats = read_stats(workdir / "warmup_stats.csv") if (workdir / "warmup_stats.csv").exists() else []
            total = next((r for r in warm_stats if r["Name"] == "Aggregated"), None)
            if total:
                warmup.update(
                    requests=int(total["Request Count"]),
                    failures=int(total["Failure Count"]),
                    p50_ms=float(total["50%"] or 0),
                    p95_ms=float(total["95%"] or 0),
                    max_ms=float(total["Max Response Time"] or 0),
                )
            warmup["locust_exit_code"] = ran.returncode
        (workdir / "cpu.log").unlink(missing_ok=True)  # the warm-up's requests are not measured
        groups = {"web": web_pid, **{f"worker {i + 1}": p.pid for i, p in enumerate(stack.procs) if p.pid != web_pid}}
        t0 = time.perf_counter()
        snapshot0, children0 = cpu_snapshot(), resource.getrusage(resource.RUSAGE_CHILDREN)
        waits = LockWaits(f"{args.pg}/postgres", args.database)
        waits.start()
        run = locust(args.seconds, prefix)
        wall = time.perf_counter() - t0
        children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        locust_cpu = (children1.ru_utime + children1.ru_stime) - (children0.ru_utime + children0.ru_stime)
        machine_cpu = cpu_used(snapshot0, cpu_snapshot(), groups, {"locust": locust_cpu})
        server_cpu = machine_cpu["web"]  # gunicorn's master and its workers
        waits.stop.set()
        waits.join()
        errors = server_errors(stack.log("web.log"))
        stats = read_stats(Path(f"{prefix}_stats.csv"))
        failures = read_stats(Path(f"{prefix}_failures.csv")) if Path(f"{prefix}_failures.csv").exists() else []
        for suffix in ("stats", "stats_history", "failures", "exceptions"):
            if Path(f"{prefix}_{suffix}.csv").exists():
                shutil.copy(f"{prefix}_{suffix}.csv", RESULTS / f"{args.name}_{suffix}.csv")
        rows = {
            s["Name"]: {
                "type": s["Type"],
                "requests": int(s["Request Count"]),
                "failures": int(s["Failure Count"]),
                "p50_ms": float(s["50%"] or 0),
                "p95_ms": float(s["95%"] or 0),
                "max_ms": round(float(s["Max Response Time"] or 0), 1),
                "requests_per_s": round(float(s["Requests/s"] or 0), 2),
            }
            for s in stats
        }
        info = machine()
        print(
            f"Locust mixed scenario: {staff} staff, {dentists} dentists, {integrators} integrators, ~1 request/s each, "
            f"{args.seconds} s; {args.patients} patients, {len(data['images'])} analyses, {args.findings} findings in "
            f"one clinic; gunicorn {args.web_workers}x{args.web_threads} on PostgreSQL, "
            f"{args.celery_workers} Celery worker(s); {args.pacing} pacing; uploads: {photo_kind()}"
        )
        print(machine_line(info))
        if args.warmup:
            print(
                f"after a warm-up of {args.warmup:g} s, not measured (aggregate p50 {warmup.get('p50_ms')} ms, "
                f"p95 {warmup.get('p95_ms')} ms, max {warmup.get('max_ms')} ms, {warmup.get('failures')} failures)"
            )
        else:
            print("from a cold start (no warm-up)")
        print(
            table(
                ["request", "requests", "failures", "p50 ms", "p95 ms", "max ms", "req/s"],
                [
                    [name, r["requests"], r["failures"], r["p50_ms"], r["p95_ms"], r["max_ms"], r["requests_per_s"]]
                    for name, r in rows.items()
                ],
            )
        )
        total = rows.get("Aggregated", {})
        by_route = cpu_log.summarise(workdir / "cpu.log")
        if os.environ.get("BENCH_KEEP_CPU_LOG"):
            shutil.copy(workdir / "cpu.log", os.environ["BENCH_KEEP_CPU_LOG"])
        print("web server CPU per request, by route (each request's own server thread, time.thread_time):")
        print(
            table(
                ["route", "requests", "CPU ms median", "CPU ms mean", "share of CPU", "in Django ms p50", "p95"],
                [
                    [
                        name,
                        r["requests"],
                        r["cpu_ms_median"],
                        r["cpu_ms_mean"],
                        f"{100 * r['cpu_share']:.0f}%",
                        r["server_ms_median"],
                        r["server_ms_p95"],
                    ]
                    for name, r in by_route.items()
                ],
            )
        )
        print(f"web server CPU: {server_cpu:.1f} s in {wall:.0f} s ({100 * server_cpu / wall:.0f}% of one core)")
        cores = os.cpu_count() or 1
        print(
            f"the machine's CPU in those {wall:.0f} s ({cores} cores): "
            + ", ".join(f"{name} {100 * value / wall:.0f}%" for name, value in machine_cpu.items())
            + f" of one core (busy {100 * machine_cpu['machine'] / wall / cores:.0f}% of all {cores}; postgres: its"
            " processes alive at the end, a connection closed meanwhile counts in other)"
        )
        waiting = sorted(waits.waiting.items(), key=lambda kv: -kv[1])
        mean_waiting = sum(waits.waiting.values()) / max(waits.samples, 1)
        print(f"sessions waiting on a lock: {mean_waiting:.1f} on average ({waits.samples} samples every 0.5 s)")
        for query, n in waiting[:5]:
            print(f"  {n / max(waits.samples, 1):.2f} waiting on average in: {query}")
        statuses = analyses_by_status(f"{args.pg}/{args.database}")
        print(f"analyses by status at the end: {statuses}")
        for error, n in errors.items():
            print(f"server error x{n}: {error}")
        if failures:
            print(
                "failures:",
                "; ".join(f"{f['Method']} {f['Name']}: {f['Error'][:120]} x{f['Occurrences']}" for f in failures),
            )
        if run.returncode not in (0, 1):
            print(run.stderr[-3000:])
        payload = {
            "machine": info,
            "users": {"staff": staff, "dentists": dentists, "integrators": integrators},
            "seconds": args.seconds,
            "warmup": warmup,
            "upload_every_s": args.upload_every,
            "upload_photo": photo_kind(),
            "pacing": args.pacing,
            "patients": args.patients,
            "findings": args.findings,
            "web_cpu_s": round(server_cpu, 1),
            "web_cpu_by_route": by_route,
            "machine_cpu_s": machine_cpu,
            "wall_s": round(wall, 1),
            "results": rows,
            "failures": failures,
            "server_errors": errors,
            "lock_waits": {
                "samples": waits.samples,
                "mean_waiting": round(mean_waiting, 2),
                "by_statement": dict(waiting),
            },
            "locust_exit_code": run.returncode,
            "web_workers": args.web_workers,
            "web_threads": args.web_threads,
            "celery_workers": args.celery_workers,
            "analyses": statuses,
        }
        path = write_json(f"{args.name}.json", payload)
        print(f"written {path.relative_to(ROOT)}")
        return 0 if total.get("failures", 1) == 0 else 1
    finally:
        stack.stop_all()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
            try:
                conn.execute(f'DROP ROLE IF EXISTS "{app_role}"')
            except psycopg.Error:
                pass
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
