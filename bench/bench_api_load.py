"""API under load: latency and throughput of the list endpoints on a clinic with 1,000 patients and
20,000 findings.

    python bench/bench_api_load.py [--quick] [--concurrency 8] [--seconds 20]

Starts what it needs and removes it afterwards: a throwaway database (``dentalscan_bench_api``) on the
PostgreSQL of ``--pg`` (default the local server 127.0.0.1:5432 as ``postgres``), migrated, with the demo
clinics (``seed_demo``) and, in the first clinic, ``--patients`` patients (encrypted identities and data
keys, as ``patient_create`` makes them) with one visit and 2 photos each, a finished analysis per photo and
``--findings`` findings in all, created with ``bulk_create`` inside the clinic's scope; the web app
(gunicorn, 2 processes x 4 threads, rate limits lifted: see bench/settings.py). No broker is needed.

Then, per endpoint, ``--concurrency`` client threads (``requests``, one keep-alive session each, the
clinic's API key) send requests for ``--seconds`` seconds:
- ``GET /api/v1/patients/?page=<random>`` (50 per page; each identity is decrypted)
- ``GET /api/v1/patients/<random>/images/`` (the patient's images with their analysis status)
- ``GET /api/v1/images/<random>/`` (one image's metadata)
- ``GET /api/v1/analyses/?page=<random>`` (50 analyses per page, each with its findings)
Prints p50/p95/max latency and requests/s per endpoint; writes ``bench/results/api_load.json``.
The client threads share the 2 CPUs with the server: requests/s are a lower bound.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, ROOT, machine, machine_line, table, write_json  # noqa: E402
from bench_end_to_end import FORBIDDEN_DATABASES, percentile, start_gunicorn  # noqa: E402

from tests.stack import Stack  # noqa: E402

GENERATE = r"""
import datetime as dt, json, random, sys, time, uuid
from django.utils import timezone
from analysis.models import Analysis, Finding, ModelVersion
from clinics.models import Clinic
from clinics.tenancy import clinic_scope
from patients.keys import patient_key_new
from patients.models import Image, Patient, Visit
from patients.selectors import PatientIdentity
from patients.services import _seal_identity
from core import crypto

N_PATIENTS, N_FINDINGS, CLINIC = {patients}, {findings}, "{clinic}"
t0 = time.perf_counter()
rng = random.Random(0)
clinic = Clinic.objects.get(pk=CLINIC)
model = ModelVersion.objects.get(modality="photo", is_active=True)
labels = list(model.labels) or ["caries", "gingivitis", "calculus", "ulcer"]
with clinic_scope(clinic.id):
    patients, keys, raw = [], [], {{}}
    for i in range(N_PATIENTS):
        p = Patient(id=uuid.uuid4(), clinic=clinic, sex="unknown")
        key, raw_key = patient_key_new(p.id)
        key.clinic = clinic
        born = dt.date(1950 + i % 60, 1 + i % 12, 1 + i % 28)
        identity = PatientIdentity(f"load-{{i:05d}}", f"Given{{i}}", f"Family{{i % 97}}", born)
        _seal_identity(p, identity, raw_key)
        p.created_at = timezone.now() - dt.timedelta(minutes=i)
        patients.append(p); keys.append(key); raw[p.id] = raw_key
    Patient.objects.bulk_create(patients, batch_size=500)
    type(keys[0]).objects.bulk_create(keys, batch_size=500)
    visits = [Visit(id=uuid.uuid4(), clinic=clinic, patient=p, visit_date=dt.date(2026, 1, 1)) for p in patients]
    Visit.objects.bulk_create(visits, batch_size=500)
    images = []
    for p, v in zip(patients, visits):
        for k in range(2):
            iid = uuid.uuid4()
            images.append(Image(id=iid, clinic=clinic, patient=p, visit=v, modality="photo", width=1280, height=960,
                mode="RGB", bit_depth=8, original_format="JPEG", sha256="0" * 64, size_bytes=1000,
                display_name=crypto.encrypt(raw[p.id], b"photo.jpg", f"image:{{iid}}:name".encode()),
                original_key=f"blobs/{{uuid.uuid4().hex}}", preview_key=f"blobs/{{uuid.uuid4().hex}}",
                thumbnail_key=f"blobs/{{uuid.uuid4().hex}}"))
    Image.objects.bulk_create(images, batch_size=1000)
    now = timezone.now()
    analyses = [Analysis(id=uuid.uuid4(), clinic=clinic, image=im, model_version=model, status="done",
        input_sha256=im.sha256, scores={{l: 0.5 for l in labels}}, attempts=1, finished_at=now) for im in images]
    Analysis.objects.bulk_create(analyses, batch_size=1000)
    findings = []
    for n in range(N_FINDINGS):
        a = analyses[n % len(analyses)]
        findings.append(Finding(id=uuid.uuid4(), clinic=clinic, analysis=a, image_id=a.image_id,
            condition=labels[n % len(labels)], probability=round(rng.uniform(0.05, 0.99), 4),
            box=[0.1, 0.2, 0.3, 0.25]))
    Finding.objects.bulk_create(findings, batch_size=2000)
print(json.dumps({{"patients": [str(p.id) for p in patients], "images": [str(i.id) for i in images],
    "seconds": round(time.perf_counter() - t0, 1)}}))
"""


PROFILE = r"""
import cProfile, io, json, pstats, random, time
from django.test import Client
from django.db import connection

PATHS, KEY, REPEAT, TOP = {paths}, "{key}", {repeat}, {top}
client = Client(HTTP_AUTHORIZATION=f"Bearer {{KEY}}")
out = {{}}
for name, urls in PATHS.items():
    for url in urls[:2]:  # warm: per-process caches (model registry, settings)
        assert client.get(url).status_code == 200, url
    profile = cProfile.Profile(time.thread_time)  # CPU time of this thread, not wall time (waits on PostgreSQL)
    cpu, rows = 0.0, 0
    for i in range(REPEAT):
        url = urls[i % len(urls)]
        c0 = time.process_time()
        profile.enable()
        response = client.get(url)
        profile.disable()
        cpu += time.process_time() - c0
        assert response.status_code == 200, (url, response.status_code)
        body = response.json()
        rows += len(body["results"]) if isinstance(body, dict) and "results" in body else 1
    text = io.StringIO()
    pstats.Stats(profile, stream=text).sort_stats("cumulative").print_stats(TOP)
    pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(TOP)  # where the time itself is spent
    out[name] = {{"cpu_ms_per_request": round(1000 * cpu / REPEAT, 2),
                 "rows_per_request": round(rows / REPEAT, 1),
                 "cpu_ms_per_row": round(1000 * cpu / max(rows, 1), 3), "profile": text.getvalue()}}
print(json.dumps(out))
"""


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its children that are alive (Linux ``/proc``)."""
    import os

    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pids = [pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                pids.append(int(entry.name))
    for one in pids:
        try:
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def load(base: str, key: str, paths, seconds: float, concurrency: int) -> dict:  # noqa: ANN001
    import requests

    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds
    start = threading.Barrier(concurrency)

    def client(seed: int) -> None:
        rng = random.Random(seed)
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {key}"
        mine, codes = [], {}
        start.wait()
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            response = session.get(base + paths(rng), timeout=60)
            mine.append(time.perf_counter() - t0)
            codes[response.status_code] = codes.get(response.status_code, 0) + 1
        with lock:
            latencies.extend(mine)
            for code, n in codes.items():
                statuses[code] = statuses.get(code, 0) + n

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {
        "requests": len(latencies),
        "p50_ms": round(1000 * percentile(latencies, 0.5), 1),
        "p95_ms": round(1000 * percentile(latencies, 0.95), 1),
        "max_ms": round(1000 * max(latencies), 1) if latencies else None,
        "requests_per_s": round(len(latencies) / wall, 1),
        "statuses": statuses,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="200 patients, 2,000 findings, 4 s per endpoint")
    ap.add_argument("--patients", type=int, default=1000)
    ap.add_argument("--findings", type=int, default=20000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432")
    ap.add_argument("--database", default="dentalscan_bench_api")
    ap.add_argument("--only", default="", help="run only the endpoints whose name contains this text")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument(
        "--conn-max-age",
        type=int,
        default=60,
        help="DATABASE_CONN_MAX_AGE of the web processes (60, as .env.example sets for production; 0: a connection "
        "per request)",
    )
    ap.add_argument(
        "--keep", type=Path, default=None, help="keep the database; write how to reach it to this JSON file"
    )
    ap.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="then N requests per endpoint in one process (Django's test client, same database) under cProfile",
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.patients, args.findings, args.seconds = 200, 2000, 4
    if args.database in FORBIDDEN_DATABASES:
        raise SystemExit(f"refusing to use the database {args.database!r}")
    import psycopg

    admin = f"{args.pg}/postgres"
    app_role = f"{args.database}_app"
    workdir = Path(tempfile.mkdtemp(prefix="bench-api-"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{args.database}"')
    stack = Stack(
        database_url=f"{args.pg}/{args.database}",
        redis_url="",  # no broker: nothing is queued
        workdir=workdir,
        app_role=app_role,
        settings_module="bench.settings",
        extra_env={"RATE_LIMITS_DISABLED": "1", "DATABASE_CONN_MAX_AGE": str(args.conn_max_age)},
    )
    try:
        t0 = time.perf_counter()
        seed = stack.prepare(shipped=True)
        clinic = seed["clinics"][0]
        data = json.loads(
            stack.python(GENERATE.format(patients=args.patients, findings=args.findings, clinic=clinic["id"]))
        )
        stack.manage("shell", "-c", "from django.db import connection; connection.cursor().execute('ANALYZE')")
        setup_s = time.perf_counter() - t0
        if args.keep:
            args.keep.write_text(
                json.dumps(
                    {
                        "database_url": stack.database_url,
                        "keys": stack.keys,
                        "app_role": app_role,
                        "api_key": clinic["api_key"],
                        "patients": data["patients"],
                        "images": data["images"],
                    }
                )
            )
        base = start_gunicorn(stack)
        patients, images = data["patients"], data["images"]
        pages_p = max(1, args.patients // 50)
        pages_a = max(1, len(images) // 50)
        endpoints = {
            "patients list (50/page)": lambda r: f"/api/v1/patients/?page={r.randint(1, pages_p)}",
            "patient's images list": lambda r: f"/api/v1/patients/{r.choice(patients)}/images/",
            "image detail": lambda r: f"/api/v1/images/{r.choice(images)}/",
            "analyses list (50/page)": lambda r: f"/api/v1/analyses/?page={r.randint(1, pages_a)}",
        }
        results = {}
        endpoints = {name: paths for name, paths in endpoints.items() if args.only in name}
        web_pid = stack.procs[-1].pid
        rows = {"patients list (50/page)": 50, "analyses list (50/page)": 50, "patient's images list": 2}
        for name, paths in endpoints.items():
            load(base, clinic["api_key"], paths, min(2.0, args.seconds), 2)  # warm-up
            cpu0 = process_cpu_seconds(web_pid)
            results[name] = load(base, clinic["api_key"], paths, args.seconds, args.concurrency)
            server_cpu = process_cpu_seconds(web_pid) - cpu0
            per_request = 1000 * server_cpu / max(results[name]["requests"], 1)
            results[name]["server_cpu_ms_per_request"] = round(per_request, 2)
            results[name]["server_cpu_ms_per_row"] = round(per_request / rows.get(name, 1), 3)
        if args.profile:
            rng = random.Random(1)
            sample = {name: [paths(rng) for _ in range(args.profile)] for name, paths in endpoints.items()}
            code = PROFILE.format(paths=repr(sample), key=clinic["api_key"], repeat=args.profile, top=35)
            profiles = json.loads(stack.python(code, as_app=True, timeout=1200))
            lines = []
            for name, found in profiles.items():
                results[name]["in_process_cpu_ms_per_request"] = found["cpu_ms_per_request"]
                results[name]["in_process_cpu_ms_per_row"] = found["cpu_ms_per_row"]
                lines += [f"=== {name}: {found['cpu_ms_per_request']} ms CPU per request", found["profile"]]
            name = "api_load_quick.json" if args.quick else "api_load.json"
            profile_path = (args.out or RESULTS / name).with_suffix(".profile.txt")
            profile_path.parent.mkdir(parents=True, exist_ok=True)
            profile_path.write_text("\n".join(lines))
            print(f"profiles written to {profile_path}")
        info = machine()
        print(
            f"API load: {args.patients} patients, {len(images)} images/analyses, {args.findings} findings in one "
            f"clinic; gunicorn 2x4 on PostgreSQL; {args.concurrency} client threads x {args.seconds:.0f} s per endpoint"
        )
        print(machine_line(info))
        print(
            table(
                ["endpoint", "requests", "p50 ms", "p95 ms", "max ms", "req/s", "CPU ms/req", "CPU ms/row", "non-200"],
                [
                    [
                        name,
                        r["requests"],
                        r["p50_ms"],
                        r["p95_ms"],
                        r["max_ms"],
                        r["requests_per_s"],
                        r["server_cpu_ms_per_request"],
                        r["server_cpu_ms_per_row"],
                        sum(n for code, n in r["statuses"].items() if code != 200),
                    ]
                    for name, r in results.items()
                ],
            )
        )
        payload = {
            "machine": info,
            "patients": args.patients,
            "images": len(images),
            "findings": args.findings,
            "concurrency": args.concurrency,
            "conn_max_age": args.conn_max_age,
            "seconds_per_endpoint": args.seconds,
            "setup_s": round(setup_s, 1),
            "data_generation_s": data["seconds"],
            "results": results,
        }
        path = write_json("api_load_quick.json" if args.quick else "api_load.json", payload, args.out)
        print(f"written {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
        bad = any(code != 200 for r in results.values() for code in r["statuses"])
        return 1 if bad else 0
    finally:
        stack.stop_all()
        if args.keep:
            return 0  # noqa: B012
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
            try:
                conn.execute(f'DROP ROLE IF EXISTS "{app_role}"')
            except psycopg.Error:
                pass
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
