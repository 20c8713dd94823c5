"""A benchmark-only middleware: the CPU time each request costs its server thread, by route.

Installed by ``bench/settings.py`` when ``BENCH_CPU_LOG`` names a file; each request appends one line
``METHOD<TAB>route<TAB>cpu_ms<TAB>wall_ms<TAB>started`` (``started`` in Unix time; ``cpu_ms`` by
``time.thread_time``: the CPU of the thread that served it, so requests served at the same time by other threads of
the process are not counted). ``summarise`` reads such a file back.
Never part of a deployment.
"""

from __future__ import annotations

import os
import statistics
import time
from collections import defaultdict
from pathlib import Path


class CpuLogMiddleware:
    def __init__(self, get_response) -> None:  # noqa: ANN001
        self.get_response = get_response
        self.path = os.environ["BENCH_CPU_LOG"]

    def __call__(self, request):  # noqa: ANN001, ANN204
        cpu0, wall0 = time.thread_time(), time.perf_counter()
        response = self.get_response(request)
        cpu, wall = time.thread_time() - cpu0, time.perf_counter() - wall0
        match = getattr(request, "resolver_match", None)
        route = match.route if match is not None else request.path
        line = f"{request.method}\t{route}\t{1000 * cpu:.3f}\t{1000 * wall:.3f}\t{time.time() - wall:.4f}\n"
        # One write of a short line to a file opened for appending: lines of parallel threads and processes
        # do not interleave.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
        return response


def summarise(path: Path) -> dict[str, dict[str, float]]:
    """Per ``METHOD route``: requests, median and mean CPU ms, the share of all CPU the route took, and the median
    and 95th percentile of the time from the request reaching Django to its response (in the server, so the time
    waiting for a free server thread before it is not in it)."""
    cpu: dict[str, list[float]] = defaultdict(list)
    wall: dict[str, list[float]] = defaultdict(list)
    if path.exists():
        for line in path.read_text().splitlines():
            method, route, cpu_ms, wall_ms, _started = line.split("\t")
            cpu[f"{method} {route}"].append(float(cpu_ms))
            wall[f"{method} {route}"].append(float(wall_ms))
    total = sum(sum(v) for v in cpu.values()) or 1.0
    return {
        name: {
            "requests": len(values),
            "cpu_ms_median": round(statistics.median(values), 2),
            "cpu_ms_mean": round(statistics.fmean(values), 2),
            "cpu_share": round(sum(values) / total, 3),
            "server_ms_median": round(statistics.median(wall[name]), 1),
            "server_ms_p95": round(_p95(wall[name]), 1),
        }
        for name, values in sorted(cpu.items(), key=lambda kv: -sum(kv[1]))
    }


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[18] if len(values) > 1 else values[0]
