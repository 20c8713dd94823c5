"""How soon the review page of a visit with 15 images is interactive, measured in Chromium with the browser's own
performance timing.

Starts what ``make run`` starts (SQLite, local storage, analyses in the web process, the shipped models) in a
temporary folder, uploads 15 images into one visit through the REST API (12 photos of 1280x960 and three 16-bit
X-rays of 1800x900) and waits for their analyses, then a dentist (TOTP log-in) opens the visit's review page in
Debian's Chromium (Playwright, 1366x900) several times.

**Interactive** is the page's own ``performance.mark("review-interactive")`` (``static/js/review.js``): set when
the first image's viewer has drawn it on its canvas (OpenSeadragon's tiled image fully loaded, then the next
animation frame) and the decision buttons of the findings are enabled. Its ``startTime`` counts from the start
of the navigation. Printed beside it: the navigation timing's ``responseEnd`` (HTML received),
``domContentLoadedEventEnd`` and ``loadEventEnd``. The first load is cold (empty browser cache); the others
re-use the cached scripts, as a dentist going from visit to visit does (images are ``no-store``: always fetched).

    python bench/bench_review_page.py [--runs 8] [--out FILE]
"""

from __future__ import annotations

import argparse
import io
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, busy_processes, machine, machine_line, table, write_json  # noqa: E402

sys.path.insert(0, str(ROOT))
from tests.stack import Api, EmbeddedStack  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
TARGET_S = 1.5


def _photo(seed: int) -> bytes:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = (rng.random((960, 1280, 3)) * 90 + np.array([150, 70, 70])).clip(0, 255).astype("uint8")
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=90)
    return out.getvalue()


def _xray(seed: int) -> bytes:
    import numpy as np
    from PIL import Image

    ramp = np.tile(np.linspace(2000, 60000, 1800, dtype=np.uint16), (900, 1))
    ramp[300:600, 400 + seed * 60 : 700 + seed * 60] = 50000
    out = io.BytesIO()
    Image.fromarray(ramp).save(out, "PNG")
    return out.getvalue()


def _login(page: Any, base: str, user: dict[str, Any]) -> None:
    import pyotp

    page.goto(f"{base}/login/")
    page.fill("input[name=email]", user["email"])
    page.fill("input[name=password]", user["password"])
    page.click("button[type=submit]")
    if user.get("totp_secret"):
        page.wait_for_url("**/login/verify/")
        page.fill("input[name=code]", pyotp.TOTP(user["totp_secret"]).now())
        page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")


TIMING = """() => {
  const mark = performance.getEntriesByName("review-interactive")[0];
  const nav = performance.getEntriesByType("navigation")[0];
  return {interactive: mark.startTime, response_end: nav.responseEnd,
          dom_content_loaded: nav.domContentLoadedEventEnd, load: nav.loadEventEnd,
          viewers: document.querySelectorAll(".viewer").length,
          drawn: document.querySelectorAll(".viewer[data-drawn=true]").length,
          findings: document.querySelectorAll("li.finding").length};
}"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    info = machine()
    workdir = Path(tempfile.mkdtemp(prefix="bench-review-page-"))
    stack = EmbeddedStack(workdir=workdir)
    try:
        seeded = stack.prepare(shipped=True)
        stack.start_web()
        clinic = seeded["clinics"][0]
        api = Api(stack.base_url, clinic["api_key"])
        patient = api.create_patient("BENCH-REVIEW", given="Fifteen", family="Images")
        visit = None
        analyses = []
        for i in range(15):
            data, name, modality = (_xray(i), f"x{i}.png", "xray") if i % 5 == 4 else (_photo(i), f"p{i}.jpg", "photo")
            code, body = api.upload(patient, data, name=name, modality=modality)
            if code != 201:
                raise SystemExit(f"upload {name}: {code} {body}")
            visit = visit or body["visit"]
            assert body["visit"] == visit, "all 15 images in one visit"
            analyses.append(body["analysis"]["id"])
        dentist = clinic["users"]["dentist"]

        from playwright.sync_api import sync_playwright

        rows = []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
            context = browser.new_context(viewport={"width": 1366, "height": 900})
            page = context.new_page()
            _login(page, stack.base_url, dentist)
            url = f"{stack.base_url}/visits/{visit}/review/"
            for run in range(args.runs):
                busy = busy_processes()
                page.goto(url, wait_until="commit")
                deadline = time.monotonic() + 60
                # polled from here: Playwright's wait_for_function evaluates a string, which the page's CSP forbids
                while not page.evaluate("() => performance.getEntriesByName('review-interactive').length > 0"):
                    if time.monotonic() > deadline:
                        raise SystemExit("the review page never became interactive")
                    time.sleep(0.05)
                page.wait_for_load_state("load")
                timing = page.evaluate(TIMING)
                rows.append({"run": run + 1, "cold": run == 0, "busy": busy, **timing})
                time.sleep(0.5)
            browser.close()
        print(machine_line(info))
        print(f"review page of one visit with 15 images (12 photos 1280x960, 3 X-rays 1800x900 16-bit), {visit}")
        print(
            table(
                ["run", "interactive (ms)", "HTML received", "DOMContentLoaded", "load", "viewers made", "findings"],
                [
                    [
                        str(r["run"]) + (" (cold)" if r["cold"] else ""),
                        round(r["interactive"]),
                        round(r["response_end"]),
                        round(r["dom_content_loaded"]),
                        round(r["load"]),
                        f"{r['drawn']}/{r['viewers']}",
                        r["findings"],
                    ]
                    for r in rows
                ],
            )
        )
        warm = [r["interactive"] for r in rows if not r["cold"]]
        summary = {
            "cold_interactive_ms": round(rows[0]["interactive"], 1),
            "warm_interactive_median_ms": round(statistics.median(warm), 1) if warm else None,
            "warm_interactive_max_ms": round(max(warm), 1) if warm else None,
            "target_ms": TARGET_S * 1000,
        }
        print(
            f"interactive: cold {summary['cold_interactive_ms']:.0f} ms; warm median "
            f"{summary['warm_interactive_median_ms']:.0f} ms, max {summary['warm_interactive_max_ms']:.0f} ms "
            f"(target {TARGET_S * 1000:.0f} ms)"
        )
        if any(r["busy"] for r in rows):
            print("other busy processes during some runs (numbers pessimistic):", rows[0]["busy"][:3])
        path = write_json(
            "review_page.json",
            {
                "machine": info,
                "images": 15,
                "definition": "performance.mark('review-interactive')",
                **summary,
                "runs": rows,
            },
            args.out,
        )
        print(f"written {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
        median = summary["warm_interactive_median_ms"]
        return 0 if median is not None and median < TARGET_S * 1000 else 1
    finally:
        stack.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
