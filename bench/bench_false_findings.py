"""False findings of each shipped photo artefact on healthy-looking photos from other sources.

    python bench/bench_false_findings.py [--artifacts analysis/models/photo/1.1.0 analysis/models/photo/1.2.0]

For every photo artefact (default: all under ``analysis/models/photo/`` from 1.1.0 on) runs the platform's own
predictor (``analysis.ml.infer``: preprocessing, colour constancy, calibration, shipped thresholds) over
``../shared/datasets/other-source-photos/`` and prints the fraction of photos with at least one finding, per
source and overall, and the photos flagged per condition. Sources an artefact was trained on
(``model.json`` ``trained_on_other_sources``) are marked and left out of its ``held-out`` figure.
Writes ``bench/results/false_findings.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from _common import machine, machine_line, table, write_json  # noqa: E402

from analysis.ml.false_findings import false_finding_rates, other_source_manifest  # noqa: E402


def _version_key(path: Path) -> tuple:
    return tuple(int(p) if p.isdigit() else 0 for p in path.name.split("."))


def default_artifacts() -> list[Path]:
    base = ROOT / "analysis" / "models" / "photo"
    found = sorted((p for p in base.iterdir() if (p / "model.json").exists()), key=_version_key)
    return [p for p in found if _version_key(p) >= (1, 1, 0)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--artifacts", nargs="*", type=Path, default=None)
    ap.add_argument("--manifest", type=Path, default=None)
    args = ap.parse_args(argv)
    manifest = args.manifest or other_source_manifest()
    if not manifest.exists():
        print(f"skipped: {manifest} not found (needs ../shared/datasets/other-source-photos)")
        return 0
    results = {}
    for art in args.artifacts or default_artifacts():
        r = false_finding_rates(art, manifest)
        results[r["model"]] = r
    sources = sorted({s for r in results.values() for s in r["by_source"]})
    rows = []
    for model, r in results.items():
        row = {"model": model}
        for s in sources:
            v = r["by_source"][s]
            row[s] = f"{v['any_finding']}/{v['n']} ({v['rate']:.0%})" + (" trained" if v["trained_on"] else "")
        ho, al = r["held_out"], r["overall_all"]
        row["held-out"] = f"{ho['any_finding']}/{ho['n']} ({ho['rate']:.0%})"
        row["all"] = f"{al['any_finding']}/{al['n']} ({al['rate']:.0%})"
        row["per condition (all)"] = ", ".join(f"{k} {v}" for k, v in al["per_condition"].items())
        rows.append(row)
    print("Photos with at least one finding at the shipped thresholds (other-source, healthy-looking):")
    headers = list(rows[0]) if rows else []
    print(table(headers, [[row[h] for h in headers] for row in rows]))
    info = machine()
    print(machine_line(info))
    payload = {
        "machine": info,
        "what": "fraction of other-source (healthy-looking) photos with at least one finding at shipped thresholds",
        "manifest": str(manifest),
        "results": {m: {k: v for k, v in r.items() if k != "images"} for m, r in results.items()},
        "images": {m: r["images"] for m, r in results.items()},
    }
    print(f"written: {write_json('false_findings.json', payload)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
