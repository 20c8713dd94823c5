"""Shared bits of the benchmark scripts: the machine description, the table printer, the JSON writer."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def busy_processes() -> list[str]:
    """Other processes (not this one nor its children) using a lot of CPU right now: while there are any,
    the numbers are pessimistic."""
    try:
        out = subprocess.run(
            ["ps", "-eo", "pid,ppid,pcpu,args", "--sort=-pcpu", "--no-headers"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    rows = [line.split(None, 3) for line in out.splitlines()]
    rows = [r for r in rows if len(r) == 4]
    parent = {int(r[0]): int(r[1]) for r in rows}

    def ours(pid: int) -> bool:
        while pid > 1:
            if pid == os.getpid():
                return True
            pid = parent.get(pid, 0)
        return False

    return [f"{r[2]}% {r[3][:100]}" for r in rows[:10] if float(r[2]) >= 50 and not ours(int(r[0]))]


def python_speed_ms(rounds: int = 5) -> float:
    """A fixed pure-Python loop (a million additions), best of ``rounds``, in ms: how fast this VM runs
    interpreter-bound code such as Django's today. Runs of the same code on two VMs of the same nominal kind
    differed by 2-3x (bench/README.md); this figure says which kind of VM a result came from."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        total = 0
        for i in range(1_000_000):
            total += i
        best = min(best, time.perf_counter() - start)
    return round(1000 * best, 1)


# measured when a benchmark starts, before it starts servers and workers of its own that would slow it
PYTHON_LOOP_MS = python_speed_ms()


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": len(os.sched_getaffinity(0)),
        "python_loop_ms": PYTHON_LOOP_MS,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "busy_processes": busy_processes(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return info


def machine_line(info: dict[str, Any]) -> str:
    line = f"machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}, {info['measured_at']}"
    if "python_loop_ms" in info:
        line += f"; a million Python additions in {info['python_loop_ms']} ms (best of 5, at the start: the VM's speed)"
    if info.get("busy_processes"):
        line += f"\nWARNING other busy processes (numbers are pessimistic): {'; '.join(info['busy_processes'])}"
    return line


def table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[h for h in headers]] + [[f"{c:.2f}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [" | ".join(c.rjust(w) for c, w in zip(cells[0], widths, strict=True))]
    lines.append("-+-".join("-" * w for w in widths))
    lines += [" | ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells[1:]]
    return "\n".join(lines)


def write_json(name: str, payload: dict[str, Any], out: Path | None = None) -> Path:
    path = out or RESULTS / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str))
    return path


def latest_artifact(modality: str) -> Path:
    """The newest artefact shipped for a modality (as ``analysis.registry.shipped_artifacts``, which
    needs Django; the benchmarks run without it)."""
    base = ROOT / "analysis" / "models" / modality
    versions = sorted(
        (d for d in base.glob("*") if (d / "model.json").exists()),
        key=lambda d: [int(x) if x.isdigit() else x for x in d.name.split(".")],
    )
    if not versions:
        raise SystemExit(f"no artefact under {base}")
    return versions[-1]


def cpu_snapshot() -> dict[str, object]:
    """The machine's busy CPU seconds (``/proc/stat``: all but idle and iowait) and each live process's command
    name, own user + system CPU seconds and parent (``/proc/PID/stat``), for ``cpu_used`` to compare."""
    ticks = os.sysconf("SC_CLK_TCK")
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    busy = (sum(fields[:8]) - fields[3] - fields[4]) / ticks  # user nice system idle iowait irq softirq steal
    processes: dict[int, tuple[str, float, int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                text = (entry / "stat").read_text()
            except OSError:
                continue
            name, rest = text.split("(", 1)[1].rsplit(")", 1)
            values = rest.split()
            processes[int(entry.name)] = (name, (int(values[11]) + int(values[12])) / ticks, int(values[1]))
    return {"busy": busy, "processes": processes}


def cpu_used(before: dict, after: dict, groups: dict[str, int], extra: dict[str, float] | None = None) -> dict:
    """CPU seconds used between two ``cpu_snapshot``s: the whole machine (``machine``), each group (a process
    and its descendants, by the group's root pid), PostgreSQL's processes (``postgres``, by command name),
    ``extra`` seconds measured otherwise (a child that has exited), and the rest (``other``). A process that started
    in between counts from zero; one that ended in between is not counted (its share stays in ``other``)."""
    processes = after["processes"]

    def root_of(pid: int) -> str | None:
        seen = 0
        while pid > 1 and seen < 64:
            for name, root in groups.items():
                if pid == root:
                    return name
            pid, seen = processes[pid][2] if pid in processes else 0, seen + 1
        return None

    used: dict[str, float] = {"machine": after["busy"] - before["busy"]}
    named = {name: 0.0 for name in groups}
    named["postgres"] = 0.0
    named.update(extra or {})
    for pid, (command, seconds, _parent) in processes.items():
        delta = seconds - before["processes"].get(pid, (command, 0.0, 0))[1]
        group = root_of(pid)
        if group is None and command == "postgres":
            group = "postgres"
        if group is not None:
            named[group] += delta
    used.update(named)
    used["other"] = used["machine"] - sum(named.values())
    return {name: round(value, 1) for name, value in used.items()}
