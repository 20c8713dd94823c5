"""The embedded default (what ``make run`` starts: SQLite, local storage, analyses in the web process) holds a real
Chromium session: parallel uploads, pages of many images opened again and again, and no server error.

The server is a real ``manage.py runserver`` subprocess on a fresh SQLite file with the shipped models, as a new
user gets it, not Django's in-process live server (which shares one in-memory database across its threads and so
could never show a "database is locked").
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image as PILImage

from ..stack import ROOT, EmbeddedStack

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM} (make test installs it)"),
]


FINISHED = "#results .analysis-status[data-state=done], #results .analysis-status[data-state=not_assessable]"


def _real_photos() -> list[Path]:
    """Healthy-looking intraoral photos from the shared data (other sources: they pass the image gate), if present."""
    from analysis.ml.data import datasets_root

    folder = datasets_root() / "other-source-photos" / "images"
    return sorted(folder.glob("*.jpg")) if folder.is_dir() else []


REAL_PHOTOS = _real_photos()


def _photo(seed: int, size: tuple[int, int] = (640, 480)) -> bytes:
    """A real intraoral photo (the model runs on it) where the shared data is present, else a drawn picture (the
    image gate refuses it as not intraoral, which still answers the upload)."""
    out = io.BytesIO()
    if REAL_PHOTOS:
        with PILImage.open(REAL_PHOTOS[seed % len(REAL_PHOTOS)]) as real:
            real.convert("RGB").resize(size).save(out, "JPEG", quality=85 + seed % 10)  # distinct bytes per seed
        return out.getvalue()
    rng = np.random.default_rng(seed)
    pixels = (rng.random((size[1], size[0], 3)) * 90 + np.array([140, 60, 60])).clip(0, 255).astype("uint8")
    PILImage.fromarray(pixels).save(out, "JPEG", quality=90)
    return out.getvalue()


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmbeddedStack, dict[str, Any]]]:
    stack = EmbeddedStack(workdir=tmp_path_factory.mktemp("embedded"))
    seeded = stack.prepare(shipped=True)
    stack.start_web()
    assert "DentalScan is ready" in stack.log("web.log")  # models loaded and warmed before it listened
    try:
        yield stack, seeded["clinics"][0]
    finally:
        stack.stop_all()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield browser
        browser.close()


class Watched:
    """A browser page whose every response and failed request is counted."""

    def __init__(self, chromium: Any, **options: Any) -> None:
        self.context = chromium.new_context(**options)
        self.context.set_default_timeout(60_000)
        self.page = self.context.new_page()
        self.statuses: list[tuple[int, str]] = []
        self.failed: list[str] = []
        self.page.on("response", lambda r: self.statuses.append((r.status, r.url)))
        self.page.on("requestfailed", lambda r: self.failed.append(r.url))

    def server_errors(self) -> list[tuple[int, str]]:
        return [(status, url) for status, url in self.statuses if status >= 500]


def _login(page: Any, base: str, user: dict[str, Any]) -> None:
    import pyotp

    page.goto(f"{base}/login/")
    page.fill("input[name=email]", user["email"])
    page.fill("input[name=password]", user["password"])
    page.click("button[type=submit]")
    if user.get("totp_secret"):
        page.wait_for_url(re.compile(r".*/login/verify/$"))
        page.fill("input[name=code]", pyotp.TOTP(user["totp_secret"]).now())
        page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")


def _create_patient(stack: EmbeddedStack, clinic: dict[str, Any], external_id: str) -> str:
    from ..stack import Api

    return Api(stack.base_url, clinic["api_key"]).create_patient(external_id, given="Ada", family="Embedded")


def test_fifteen_photos_uploaded_six_at_a_time_are_all_stored_and_analysed(
    embedded: tuple[EmbeddedStack, dict[str, Any]], chromium: Any
) -> None:
    stack, clinic = embedded
    base = stack.base_url
    patient = _create_patient(stack, clinic, "EMB-15")
    staff = Watched(chromium, viewport={"width": 1280, "height": 900})
    try:
        _login(staff.page, base, clinic["users"]["staff"])
        staff.page.goto(f"{base}/patients/{patient}/upload/")
        staff.page.select_option("#modality", "photo")
        files = [{"name": f"photo-{i:02d}.jpg", "mimeType": "image/jpeg", "buffer": _photo(i)} for i in range(15)]
        staff.page.set_input_files("#files", files)
        # finished: analysed, or refused by the image gate (these drawn photos are no mouths) -- either way answered
        done = staff.page.locator(FINISHED)
        done.nth(14).wait_for(timeout=240_000)
        rows = staff.page.locator("#results li")
        assert rows.count() == 15
        assert staff.page.locator("#results li.error").count() == 0, staff.page.inner_text("#results")
        uploads = [url for status, url in staff.statuses if url.endswith(f"/api/v1/patients/{patient}/images/")]
        assert len(uploads) == 15
        assert staff.server_errors() == [] and staff.failed == []
    finally:
        staff.context.close()

    from ..stack import Api

    api = Api(base, clinic["api_key"])
    images = api.get(f"/api/v1/patients/{patient}/images/", page_size=50).json()["results"]
    assert len(images) == 15
    assert all(image["analysis"]["status"] in ("done", "not_assessable") for image in images), images
    if REAL_PHOTOS:  # real mouths: every one went through the model, none was refused
        assert [image["analysis"]["status"] for image in images] == ["done"] * 15, images


def test_review_page_of_eight_images_and_patient_page_of_fifteen_thumbnails_twenty_times_each(
    embedded: tuple[EmbeddedStack, dict[str, Any]], chromium: Any
) -> None:
    from ..stack import Api

    stack, clinic = embedded
    base = stack.base_url
    api = Api(base, clinic["api_key"])
    patient = _create_patient(stack, clinic, "EMB-8")
    first = api.upload(patient, _photo(100), name="first.jpg")  # the visit the others join
    assert first[0] == 201, first
    with ThreadPoolExecutor(6) as pool:  # six at a time, as a browser would
        answers = list(pool.map(lambda i: api.upload(patient, _photo(100 + i), name=f"p{i}.jpg"), range(1, 8)))
    assert [code for code, _ in answers] == [201] * 7, answers
    visit = first[1]["visit"]
    assert {body["visit"] for _, body in answers} == {visit}
    fifteen = api.get("/api/v1/patients/", page_size=50).json()["results"]
    busy = next(p["id"] for p in fifteen if p["external_id"] == "EMB-15")

    dentist = Watched(chromium, viewport={"width": 1366, "height": 4000})  # tall: every lazy thumbnail loads
    try:
        _login(dentist.page, base, clinic["users"]["dentist"])
        for _ in range(20):
            dentist.page.goto(f"{base}/visits/{visit}/review/", wait_until="networkidle")
            viewers = dentist.page.locator(".viewer")
            assert viewers.count() == 8
            for viewer in viewers.all():  # viewers are made as their image comes near the screen
                viewer.scroll_into_view_if_needed()
            # (a locator, not wait_for_function: the page's CSP forbids the eval that would need)
            dentist.page.locator(".viewer[data-drawn=true]").nth(7).wait_for()
            assert dentist.page.locator(".viewer[data-drawn=true]").count() == 8
        for _ in range(20):
            dentist.page.goto(f"{base}/patients/{busy}/", wait_until="networkidle")
            thumbnails = dentist.page.locator("figure img")
            assert thumbnails.count() == 15
            assert all(img.evaluate("i => i.complete && i.naturalWidth > 0") for img in thumbnails.all())
        image_answers = [status for status, url in dentist.statuses if "/images/" in url]
        assert len(image_answers) >= 20 * 8 + 20 * 15
        assert dentist.server_errors() == [], dentist.server_errors()[:5]
        assert dentist.failed == []
    finally:
        dentist.context.close()
    # The server's own background sealer (no broker, no seal_audit) has sealed every audited read and upload of
    # these parallel requests into an intact chain.
    count = "from clinics.models import AuditEvent; print(AuditEvent.unscoped.filter(seq__isnull=True).count())"
    deadline = time.monotonic() + 120  # each check starts a Python process: seconds on a slow machine
    while int(stack.python(count).strip().splitlines()[-1]) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert int(stack.python(count).strip().splitlines()[-1]) == 0
    verified = subprocess.run(  # noqa: S603
        [sys.executable, "manage.py", "verify_audit_chain"],
        cwd=ROOT,
        env=stack.env(as_app=False),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_a_server_fault_on_upload_is_retried_from_the_page(
    embedded: tuple[EmbeddedStack, dict[str, Any]], chromium: Any
) -> None:
    stack, clinic = embedded
    base = stack.base_url
    patient = _create_patient(stack, clinic, "EMB-RETRY")
    staff = Watched(chromium, viewport={"width": 1280, "height": 900})
    faults = []

    keys: list[str | None] = []

    def first_upload_fails(route: Any) -> None:
        # The server's own fault answer (its error shape), for the first attempt only; the retry goes through.
        keys.append(route.request.headers.get("idempotency-key"))
        if not faults:
            faults.append(route.request.url)
            route.fulfill(
                status=500,
                content_type="application/json",
                body='{"error": {"code": "server_error", "message": "x", "details": {"reference": "r"}}}',
            )
        else:
            route.continue_()

    try:
        _login(staff.page, base, clinic["users"]["staff"])
        staff.page.goto(f"{base}/patients/{patient}/upload/")
        staff.page.route(f"**/api/v1/patients/{patient}/images/", first_upload_fails)
        staff.page.set_input_files("#files", [{"name": "retry.jpg", "mimeType": "image/jpeg", "buffer": _photo(7)}])
        row = staff.page.locator("#results li.retryable")
        row.wait_for()
        text = row.inner_text()
        assert "server problem, try again" in text and "rejected" not in text, text
        row.locator("button.retry").click()
        staff.page.locator(FINISHED).first.wait_for(timeout=120_000)
        assert staff.page.locator("#results li").count() == 1 and len(faults) == 1
    finally:
        staff.context.close()
    from ..stack import Api

    images = Api(base, clinic["api_key"]).get(f"/api/v1/patients/{patient}/images/").json()["results"]
    assert len(images) == 1  # the failed attempt stored nothing, the retry stored one
    assert len(keys) == 2 and keys[0] and keys[0] == keys[1]  # the retry carried its file's Idempotency-Key


def test_a_retry_after_a_lost_answer_does_not_store_the_file_twice(
    embedded: tuple[EmbeddedStack, dict[str, Any]], chromium: Any
) -> None:
    """The first attempt reaches the server and is stored, but its answer never reaches the page (the connection
    drops); the page's retry sends the same Idempotency-Key and gets the stored image back (200)."""
    stack, clinic = embedded
    base = stack.base_url
    patient = _create_patient(stack, clinic, "EMB-LOST")
    staff = Watched(chromium, viewport={"width": 1280, "height": 900})
    answers: list[int] = []

    def first_answer_lost(route: Any) -> None:
        response = route.fetch()  # the request reaches the server, which stores the image
        answers.append(response.status)
        if len(answers) == 1:
            route.abort("connectionreset")  # ...and the page never hears of it
        else:
            route.fulfill(response=response)

    try:
        _login(staff.page, base, clinic["users"]["staff"])
        staff.page.goto(f"{base}/patients/{patient}/upload/")
        staff.page.route(f"**/api/v1/patients/{patient}/images/", first_answer_lost)
        staff.page.set_input_files("#files", [{"name": "lost.jpg", "mimeType": "image/jpeg", "buffer": _photo(8)}])
        row = staff.page.locator("#results li.retryable")
        row.wait_for()
        row.locator("button.retry").click()
        staff.page.locator(FINISHED).first.wait_for(timeout=120_000)
    finally:
        staff.context.close()
    from ..stack import Api

    assert answers == [201, 200]  # stored by the first attempt; the retry was answered with that image
    images = Api(base, clinic["api_key"]).get(f"/api/v1/patients/{patient}/images/").json()["results"]
    assert len(images) == 1


def test_a_blurred_photo_asks_staff_to_retake_it_at_once(
    embedded: tuple[EmbeddedStack, dict[str, Any]], chromium: Any
) -> None:
    """The image gate's answer reaches the upload page with the upload itself: staff see why and what to do."""
    stack, clinic = embedded
    base = stack.base_url
    patient = _create_patient(stack, clinic, "EMB-BLUR")
    staff = Watched(chromium, viewport={"width": 1280, "height": 900})
    y, x = np.mgrid[0:480, 0:640]
    smooth = np.stack([150 + 60 * np.sin(x / 90.0), 70 + 30 * np.cos(y / 80.0), 80 + 20 * np.sin((x + y) / 120.0)], -1)
    out = io.BytesIO()
    PILImage.fromarray(smooth.astype("uint8")).save(out, "PNG")
    try:
        _login(staff.page, base, clinic["users"]["staff"])
        staff.page.goto(f"{base}/patients/{patient}/upload/")
        staff.page.select_option("#modality", "photo")
        staff.page.set_input_files("#files", [{"name": "shaky.png", "mimeType": "image/png", "buffer": out.getvalue()}])
        status = staff.page.locator("#results .analysis-status[data-state=not_assessable]")
        status.wait_for(timeout=60_000)
        text = status.inner_text()
        assert "not assessed by the AI" in text and "blurred" in text and "retake" in text, text
        assert status.get_attribute("data-code") == "blurred" and status.get_attribute("role") == "alert"
        assert staff.server_errors() == []
    finally:
        staff.context.close()
