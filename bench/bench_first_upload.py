"""The first hour of a new user: what ``make run`` starts, from nothing, and how long the first uploads take.

Runs what ``make run`` runs on a fresh folder (migrate, register the shipped models, seed the demo with its sample
visits, ``runserver``), in a temporary folder with its own SQLite file and an empty ONNX cache (so nothing is warm
from an earlier run), then, once the server says it is ready, uploads a photo and an X-ray through the REST API and
measures each from the upload request to a finished analysis (on the embedded default the analysis runs in the web
process, so the upload answer already carries it).

    python bench/bench_first_upload.py [--no-warmup] [--out FILE]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, machine_line, table, write_json  # noqa: E402

sys.path.insert(0, str(ROOT))
from tests.stack import Api, EmbeddedStack, png  # noqa: E402


def _xray(seed: int) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    ramp = np.tile(np.linspace(2000, 60000, 1200, dtype=np.uint16), (600, 1))
    ramp[200:400, 300 + seed * 50 : 500 + seed * 50] = 50000
    out = io.BytesIO()
    Image.fromarray(ramp).save(out, "PNG")
    return out.getvalue()


def _samples() -> list[tuple[str, bytes, str, str]]:
    """Real images from the shared data where present (the image gate lets them through to the models), else drawn
    ones (the gate then refuses the drawn photos at once: no model runs, and the figure would mean nothing)."""
    from analysis.ml.data import datasets_root

    photos = sorted((datasets_root() / "other-source-photos" / "images").glob("*.jpg"))[:2]
    xrays = sorted((datasets_root() / "dental-xrays" / "test" / "images").glob("*.jpg"))[:2]
    if len(photos) == 2 and len(xrays) == 2:
        return [
            ("first photo", photos[0].read_bytes(), "first.jpg", "photo"),
            ("second photo", photos[1].read_bytes(), "second.jpg", "photo"),
            ("first X-ray", xrays[0].read_bytes(), "pano.jpg", "xray"),
            ("second X-ray", xrays[1].read_bytes(), "pano2.jpg", "xray"),
        ]
    print("shared data absent: drawn images (photos will be refused by the image gate, not analysed)")
    return [
        ("first photo", png(1, (1280, 960)), "first.png", "photo"),
        ("second photo", png(2, (1280, 960)), "second.png", "photo"),
        ("first X-ray", _xray(1), "pano.png", "xray"),
        ("second X-ray", _xray(2), "pano2.png", "xray"),
    ]


def _timed_upload(api: Api, patient: str, data: bytes, name: str, modality: str) -> tuple[float, str]:
    started = time.perf_counter()
    code, body = api.upload(patient, data, name=name, modality=modality)
    if code != 201:
        raise SystemExit(f"upload of {name} answered {code}: {body}")
    analysis = body["analysis"]["id"]
    status = api.wait_done([analysis], timeout=120)[analysis]
    return time.perf_counter() - started, status


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--no-warmup", action="store_true", help="models load in the first request")
    args = parser.parse_args()
    info = machine()
    workdir = Path(tempfile.mkdtemp(prefix="bench-first-upload-"))
    env = {"DENTALSCAN_ONNX_CACHE": str(workdir / "onnx"), "ANALYSIS_WARMUP": "off" if args.no_warmup else "on"}
    stack = EmbeddedStack(workdir=workdir, extra_env=env)
    try:
        started = time.perf_counter()
        stack.manage("migrate", "--noinput")
        stack.manage("register_model", "--shipped")
        seeded = stack.manage("seed_demo", "--samples", "--json")
        prepared = time.perf_counter() - started
        started = time.perf_counter()
        stack.start_web()
        ready = time.perf_counter() - started
        import json

        clinic = json.loads(seeded[seeded.index("{") :])["clinics"][0]
        api = Api(stack.base_url, clinic["api_key"])
        patient = api.create_patient("BENCH-1", given="First", family="Upload")
        rows = []
        for label, data, name, modality in _samples():
            seconds, status = _timed_upload(api, patient, data, name, modality)
            rows.append([label, seconds, status])
        ready_line = next((line for line in stack.log("web.log").splitlines() if "DentalScan is ready" in line), "")
        print(machine_line(info))
        print(f"make run steps (migrate, register, seed with samples): {prepared:.1f} s")
        print(f"server start until it listens (models loaded and warmed): {ready:.1f} s")
        print(f"  {ready_line.strip()}")
        print(table(["upload", "upload to finished analysis (s)", "status"], rows))
        result = {
            "prepare_s": round(prepared, 2),
            "start_until_ready_s": round(ready, 2),
            "ready_line": ready_line.strip(),
            "uploads": [{"what": r[0], "seconds": round(r[1], 3), "status": r[2]} for r in rows],
        }
        name = "first_upload_no_warmup.json" if args.no_warmup else "first_upload.json"
        path = write_json(name, {"machine": info, "warmup": not args.no_warmup, **result}, args.out)
        print(f"written {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
        return 0 if all(r[2] == "done" for r in rows) else 1
    finally:
        stack.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
