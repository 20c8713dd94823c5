"""More processes, same code: the mixed Locust scenario on 1 web process + 1 worker, then on 2 + 2.

    python bench/bench_scaling.py [--users 60] [--seconds 60] [--locust /path/to/locust]

Runs ``bench/bench_locust.py`` twice against the same PostgreSQL and Redis (a fresh throwaway database each time,
the same data): first gunicorn with 1 process (4 threads) and 1 Celery worker, then 2 processes and 2 workers.
``--users`` people at about one request per second each ask for more than one process can serve, so requests/s
is each configuration's throughput. Prints both runs and the ratio; writes ``bench/results/scaling.json`` (and each
run's ``scaling_1x1.json`` / ``scaling_2x2.json``). On one machine the processes share its cores with Locust and
PostgreSQL: the ratio says what the machine allowed, not what a second machine would add.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_locust  # noqa: E402
from _common import RESULTS, machine, machine_line, table, write_json  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=60)
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--patients", type=int, default=1000)
    ap.add_argument("--findings", type=int, default=20000)
    ap.add_argument("--locust", default=shutil.which("locust") or "locust")
    args = ap.parse_args(argv)
    runs = {}
    for n in (1, 2):
        name = f"scaling_{n}x{n}"
        bench_locust.main(
            [
                "--users", str(args.users), "--seconds", str(args.seconds), "--patients", str(args.patients),
                "--findings", str(args.findings), "--locust", args.locust, "--name", name,
                "--web-workers", str(n), "--celery-workers", str(n),
            ]
        )  # fmt: skip
        runs[n] = json.loads((RESULTS / f"{name}.json").read_text())
    rows = []
    for n, run in runs.items():
        total = run["results"].get("Aggregated", {})
        rows.append(
            [
                f"{n} web + {n} worker",
                total.get("requests_per_s", 0),
                total.get("p50_ms", 0),
                total.get("p95_ms", 0),
                total.get("failures", 0),
                run["web_cpu_s"],
                run["analyses"],
            ]
        )
    ratio = rows[1][1] / rows[0][1] if rows[0][1] else float("nan")
    info = machine()
    print(f"\nScaling, mixed Locust scenario, {args.users} users, {args.seconds} s each, same PostgreSQL and Redis")
    print(machine_line(info))
    print(table(["processes", "req/s", "p50 ms", "p95 ms", "failures", "web CPU s", "analyses"], rows))
    print(f"2+2 / 1+1 throughput: {ratio:.2f}x")
    write_json(
        "scaling.json",
        {"machine": info, "users": args.users, "seconds": args.seconds, "ratio": round(ratio, 3),
         "runs": {f"{n}x{n}": run for n, run in runs.items()}},
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
