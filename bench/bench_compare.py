"""Peak throughput of one list endpoint, this code against an earlier commit, in one run on one machine.

    python bench/bench_compare.py [--base 2f250b2^] [--only patients] [--concurrency 1,2,4,8,16] [--seconds 15]

Issue 25 asks for the patient list's peak throughput "at least 4x today's in the same run as a run of today's
code". Runs of ``bench_api_load.py`` on different days and VMs differ by 2x and more, so this runs both here,
one after the other, with the same data size, the same web layout (gunicorn 2x4) and the same client threads:

- the base commit is checked out into a temporary ``git worktree`` (removed afterwards) and its own
  ``bench/bench_api_load.py`` runs from there (its own code: the benchmark starts ``manage.py`` and gunicorn
  with that folder as working directory; each run prints where ``clinics`` was imported from, checked below);
- then this working tree's ``bench/bench_api_load.py``;
- each with ``--only`` and once per ``--concurrency`` level (one client thread count per run: a fresh database,
  server and data set each time, as the benchmark makes them).

Peak = the most requests/s over the concurrency levels. Prints a table per level and the ratio of the peaks;
writes ``bench/results/compare_<only>.json``. Both runs share the 2 cores with their client threads and
PostgreSQL: requests/s are lower bounds, the same for both.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, machine_line, table, write_json  # noqa: E402

PYTHON = sys.executable
DEFAULT_BASE = "2f250b2^"  # the code of the day issue 25 was filed: the commit before its first change


def _run(tree: Path, only: str, concurrency: int, seconds: float, patients: int, findings: int, out: Path) -> dict:
    cmd = [
        PYTHON,
        str(tree / "bench" / "bench_api_load.py"),
        "--only", only,
        "--concurrency", str(concurrency),
        "--seconds", str(seconds),
        "--patients", str(patients),
        "--findings", str(findings),
        "--out", str(out),
    ]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=tree, capture_output=True, text=True, timeout=1800)  # noqa: S603
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise SystemExit(f"bench_api_load failed in {tree} (exit {done.returncode})")
    result = json.loads(out.read_text())
    rows = [v for k, v in result["results"].items() if only in k]
    if len(rows) != 1:
        raise SystemExit(f"expected one endpoint matching {only!r}, got {list(result['results'])}")
    row = rows[0]
    non_200 = sum(n for code, n in row.get("statuses", {}).items() if code != "200")
    return {
        "concurrency": concurrency,
        "requests_per_s": row["requests_per_s"],
        "p50_ms": row["p50_ms"],
        "p95_ms": row["p95_ms"],
        "non_200": non_200,
        "cpu_ms_per_request": row.get("server_cpu_ms_per_request"),
        "run_s": round(time.perf_counter() - started, 1),
    }


def _imports_from(tree: Path) -> str:
    """Where a Python started in ``tree`` (as the benchmark starts manage.py and gunicorn) imports the project from."""
    probe = "import clinics, pathlib; print(pathlib.Path(clinics.__file__).resolve().parent.parent)"
    return subprocess.run([PYTHON, "-c", probe], cwd=tree, capture_output=True, text=True, check=True).stdout.strip()  # noqa: S603


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default=DEFAULT_BASE, help="the earlier commit (default: %(default)s)")
    ap.add_argument("--only", default="patients list", help="the endpoint, as bench_api_load's --only")
    ap.add_argument("--concurrency", default="1,2,4,8,16", help="client thread counts, comma-separated")
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--patients", type=int, default=1000)
    ap.add_argument("--findings", type=int, default=20000)
    args = ap.parse_args()
    levels = [int(x) for x in args.concurrency.split(",") if x.strip()]
    base_sha = subprocess.run(
        ["git", "rev-parse", "--short", args.base], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    head_sha = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                capture_output=True, text=True, check=True).stdout.strip())  # fmt: skip

    work = Path(tempfile.mkdtemp(prefix="dentalscan-compare-"))
    old_tree = work / "base"
    subprocess.run(["git", "worktree", "add", "--detach", str(old_tree), base_sha], cwd=ROOT, check=True,
                   capture_output=True)  # fmt: skip
    runs: dict[str, list[dict]] = {"base": [], "this": []}
    try:
        for tree in (old_tree, ROOT):
            origin = _imports_from(tree)
            if Path(origin) != tree.resolve():
                raise SystemExit(f"a Python started in {tree} imports the project from {origin}: not a fair run")
        for level in levels:  # alternate, so that a change in the machine's load hits both alike
            for name, tree in (("base", old_tree), ("this", ROOT)):
                row = _run(tree, args.only, level, args.seconds, args.patients, args.findings,
                           work / f"{name}_{level}.json")  # fmt: skip
                runs[name].append(row)
                print(f"{name} c={level}: {row['requests_per_s']} req/s, p50 {row['p50_ms']} ms", flush=True)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(old_tree)], cwd=ROOT, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)

    peak = {name: max(r["requests_per_s"] for r in rows) for name, rows in runs.items()}
    ratio = round(peak["this"] / peak["base"], 2) if peak["base"] else None
    print(machine_line(machine()))
    changes = " + uncommitted changes" if dirty else ""
    sizes = f"{args.patients} patients, {args.findings} findings, {args.seconds:g} s per level, gunicorn 2x4"
    print(f"{args.only}: base {base_sha} against this tree {head_sha}{changes}; {sizes}")
    rows = []
    for b, t in zip(runs["base"], runs["this"], strict=True):
        rows.append([b["concurrency"], b["requests_per_s"], t["requests_per_s"], b["p50_ms"], t["p50_ms"],
                     b["p95_ms"], t["p95_ms"], b["non_200"] + t["non_200"]])  # fmt: skip
    print(table(["clients", "base req/s", "this req/s", "base p50 ms", "this p50 ms", "base p95 ms", "this p95 ms",
                 "non-200"], rows))  # fmt: skip
    print(f"peak: base {peak['base']} req/s, this {peak['this']} req/s: {ratio}x")
    write_json(
        f"compare_{args.only.split()[0]}.json",
        {
            "machine": machine(),
            "endpoint": args.only,
            "base": base_sha,
            "this": head_sha + ("+dirty" if dirty else ""),
            "patients": args.patients,
            "findings": args.findings,
            "seconds_per_level": args.seconds,
            "runs": runs,
            "peak_requests_per_s": peak,
            "ratio": ratio,
        },
    )


if __name__ == "__main__":
    main()
