"""False findings on healthy-looking photos from sources a model never saw (``other-source-photos/``).

``false_finding_rates(artifact_dir)`` runs the artefact exactly as the platform does (``infer.make_predictor``:
its preprocessing, colour constancy, calibration and shipped thresholds) over the other-source manifest and
returns, overall and per source, the fraction of photos with at least one finding and the count per condition.
A source the artefact was trained on (``model.json`` ``"trained_on_other_sources"``) is reported but kept out
of the ``held_out`` total, which is the number to quote.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

from .data import datasets_root, load_rgb


def other_source_manifest() -> Path:
    return datasets_root() / "other-source-photos" / "manifest.csv"


def read_other_sources(manifest: str | Path | None = None) -> list[dict]:
    """Rows of the other-source manifest (``file`` resolved to a path)."""
    manifest = Path(manifest or other_source_manifest())
    with manifest.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        row["path"] = str((manifest.parent / row["file"]).resolve())
    return rows


def short_source(source: str) -> str:
    """``owner/repository`` -> ``owner`` (the sources' owners are distinct)."""
    return source.split("/")[0]


def _summary(rows: Sequence[dict], labels: Sequence[str]) -> dict:
    n = len(rows)
    flagged = sum(1 for r in rows if r["findings"])
    return {
        "n": n,
        "any_finding": flagged,
        "rate": flagged / n if n else None,
        "per_condition": {name: sum(1 for r in rows if name in r["findings"]) for name in labels},
    }


def false_finding_rates(artifact_dir: str | Path, manifest: str | Path | None = None, batch_size: int = 16) -> dict:
    from .infer import make_predictor

    artifact_dir = Path(artifact_dir)
    meta = json.loads((artifact_dir / "model.json").read_text())
    trained = {short_source(s) for s in meta.get("trained_on_other_sources", [])}
    rows = read_other_sources(manifest)
    predictor = make_predictor(artifact_dir, device="cpu")
    labels = list(predictor.labels)
    per_image = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        results = predictor.predict([load_rgb(r["path"]) for r in chunk], explain=False)
        for row, res in zip(chunk, results, strict=True):
            per_image.append(
                {
                    "file": row["file"],
                    "source": short_source(row["source"]),
                    "expected": row.get("expected", ""),
                    "findings": [f["condition"] for f in res["findings"]],
                    "scores": res["scores"],
                }
            )
    sources = sorted({r["source"] for r in per_image})
    held = [r for r in per_image if r["source"] not in trained]
    return {
        "model": f"{meta['name']}@{meta['version']}",
        "thresholds": predictor.thresholds,
        "colour_constancy": meta.get("colour_constancy", ""),
        "trained_on_sources": sorted(trained),
        "overall_all": _summary(per_image, labels),
        "held_out": _summary(held, labels),
        "by_source": {
            s: {**_summary([r for r in per_image if r["source"] == s], labels), "trained_on": s in trained}
            for s in sources
        },
        "images": per_image,
    }
