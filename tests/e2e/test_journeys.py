"""Every role's journey in a real headless Chromium (Debian's package, driven by Playwright).

Staff create a patient, upload photos and an X-ray (one file rejected with a readable message) and
watch the analyses finish; a dentist logs in with MFA, confirms, rejects with a reason and adds a
missed finding, signs the report and opens it; a clinic admin exports the audit trail and finds
those actions in it; a member of another clinic reaches none of it. A screenshot of each step is
saved under ``E2E_SCREENSHOT_DIR`` (default ``var/e2e-screenshots``).

On PostgreSQL + Redis (CI) the analyses run on a real Celery worker; on the embedded default they
run in-process. The model is a randomly initialised photo model biased to propose every condition,
so the journey does not depend on what a trained model sees in a synthetic image.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.conf import settings
from PIL import Image as PILImage

from analysis.models import Analysis, Finding, ModelVersion, Report
from analysis.registry import model_register
from clinics.models import AuditEvent
from clinics.tenancy import clinic_scope
from patients.models import Image, Patient

from ..conftest import PASSWORD, World, build_clinic, enrol_totp, next_totp
from ..ml.conftest import random_artifact  # noqa: F401 - fixture

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
SHOTS = Path(os.environ.get("E2E_SCREENSHOT_DIR", settings.BASE_DIR / "var" / "e2e-screenshots"))
OKABE_ITO = {"#e69f00", "#56b4e9", "#009e73", "#f0e442", "#0072b2", "#d55e00", "#cc79a7", "#000000"}

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM} (make test installs it)"),
]


def _photo(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = (rng.random((240, 320, 3)) * 80 + np.array([150, 60, 60])).clip(0, 255).astype("uint8")
    out = io.BytesIO()
    PILImage.fromarray(pixels).save(out, "JPEG", quality=90)
    return out.getvalue()


def _xray16() -> bytes:
    ramp = np.tile(np.linspace(2000, 60000, 400, dtype=np.uint16), (200, 1))
    out = io.BytesIO()
    PILImage.fromarray(ramp).save(out, "PNG")
    return out.getvalue()


@pytest.fixture
def worlds(live_server: Any, random_artifact: Path) -> Iterator[tuple[World, World]]:  # noqa: F811
    model_register(artifact_dir=random_artifact)
    alice, bob = build_clinic("alice", patient_name="Alicesonmarker"), build_clinic("bob", patient_name="Bobson")
    worker = None
    if settings.REDIS_URL:
        from config.celery import app

        from ..workers import start_worker

        app.control.purge()  # not the jobs earlier tests left queued
        worker = start_worker("gpu,default")
    yield alice, bob
    if worker is not None:
        from ..workers import stop_worker

        stop_worker(worker)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    if SHOTS.exists():
        shutil.rmtree(SHOTS)
    SHOTS.mkdir(parents=True, exist_ok=True)
    # Playwright's sync API keeps an asyncio loop running in this thread while it is open; the ORM
    # calls of the tests (and of pytest-django's fixtures) are plain sync calls. Allowed for exactly
    # that span: a leaked variable would fail ``check --deploy`` in later tests.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as p:
            chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
            yield chromium
            chromium.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


class Browser:
    """Opens pages in fresh contexts (one per person) and closes them all when the test ends."""

    def __init__(self, chromium: Any) -> None:
        self.chromium = chromium
        self.contexts: list[Any] = []

    def page(self, **options: Any) -> Any:
        viewport = options.pop("viewport", {"width": 1366, "height": 900})
        context = self.chromium.new_context(viewport=viewport, **options)
        context.set_default_timeout(30_000)
        self.contexts.append(context)
        return context.new_page()


@pytest.fixture
def browser(chromium: Any) -> Iterator[Browser]:
    opened = Browser(chromium)
    yield opened
    for context in opened.contexts:
        context.close()


def _page(browser: Browser, **options: Any) -> Any:
    return browser.page(**options)


def _shot(page: Any, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def _images_loaded(page: Any, selector: str, timeout_s: float = 15.0) -> None:
    """Give the images time to arrive before a screenshot (best effort: a slow one does not fail the test)."""
    import time

    deadline = time.monotonic() + timeout_s
    for image in page.locator(selector).all():
        while time.monotonic() < deadline and not image.evaluate("i => i.complete && i.naturalWidth > 0"):
            page.wait_for_timeout(100)


def _login(page: Any, base: str, email: str, totp_secret: str | None = None) -> None:
    """Log in through the pages; with a secret, answer the second step with the next unused code."""
    page.goto(f"{base}/login/")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    if totp_secret is not None:
        page.wait_for_url(re.compile(r".*/login/verify/$"))
        from clinics.models import User

        page.fill("input[name=code]", next_totp(User.objects.get(email=email), totp_secret))
        page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")


def test_every_role_journey(worlds: tuple[World, World], browser: Any, live_server: Any) -> None:
    alice, bob = worlds
    base = live_server.url
    dentist_secret = enrol_totp(alice.users["dentist"])
    admin_secret = enrol_totp(alice.users["clinic_admin"])

    # --- Staff: a new patient, photos and an X-ray, one file rejected, analyses watched to the end.
    staff = _page(browser)
    _login(staff, base, alice.users["staff"].email)
    _shot(staff, "01-staff-home")
    staff.goto(f"{base}/patients/")
    staff.fill("input[name=external_id]", "E2E-0042")
    staff.fill("input[name=given_name]", "Ada")
    staff.fill("input[name=family_name]", "Journey")
    staff.fill("input[name=date_of_birth]", "1984-03-09")
    staff.click("text=Create patient")
    staff.wait_for_selector("h1:has-text('Journey, Ada')")
    patient_url = staff.url
    _shot(staff, "02-staff-patient-created")
    staff.click("text=Upload scans")
    # A click returns once the next page has started to arrive, maybe before its script ran: choosing files then
    # would fire a change event nobody hears yet (CI saw exactly that). Wait until the uploader says it listens.
    staff.wait_for_selector("#uploader[data-ready]", state="attached")
    staff.select_option("#modality", "photo")
    staff.set_input_files(
        "#files",
        [
            {"name": "upper-arch.jpg", "mimeType": "image/jpeg", "buffer": _photo(1)},
            {"name": "lower-arch.jpg", "mimeType": "image/jpeg", "buffer": _photo(2)},
            {"name": "notes.jpg", "mimeType": "image/jpeg", "buffer": b"these are notes, not a photo"},
        ],
    )
    staff.wait_for_selector("#results li.error")
    rejected = staff.inner_text("#results li.error")
    assert rejected.startswith("notes.jpg: rejected:") and "[" in rejected, rejected
    staff.select_option("#modality", "xray")
    staff.set_input_files("#files", [{"name": "panoramic.png", "mimeType": "image/png", "buffer": _xray16()}])
    # (Locators, not wait_for_function: the page's CSP forbids the eval that would need.)
    staff.locator("#results li.ok").nth(2).wait_for(timeout=120_000)  # three uploads (gate, previews) on 2 cores
    staff.locator("#results .analysis-status[data-state=done]").nth(1).wait_for(timeout=180_000)
    assert "Review" in staff.inner_text("#results")
    _shot(staff, "03-staff-uploads-analysed")
    patient = Patient.unscoped.get(pk=patient_url.rstrip("/").split("/")[-1])
    assert Image.unscoped.filter(patient=patient).count() == 3  # the rejected file stored nothing

    # --- Dentist: MFA, review every suggestion (confirm, reject with a reason, add a missed one), sign.
    dentist = _page(browser)
    _login(dentist, base, alice.users["dentist"].email, dentist_secret)
    _shot(dentist, "04-dentist-logged-in-with-mfa")
    dentist.goto(patient_url)
    dentist.click("text=Findings and review")
    dentist.wait_for_selector("li.finding.pending")
    _shot(dentist, "05-dentist-review-before")
    first = dentist.locator("li.finding.pending").first
    first_id = first.get_attribute("data-id")
    first.locator("[data-action=confirm]").click()
    dentist.wait_for_selector(f"li.finding.confirmed[data-id='{first_id}']")
    second = dentist.locator("li.finding.pending").first
    second_id = second.get_attribute("data-id")
    second.locator("[data-role=reason]").select_option("wrong_condition")
    second.locator("[data-action=reject]").click()
    dentist.locator(f"li.finding.pending[data-id='{second_id}']").wait_for(state="detached")
    # A missed finding: choose the condition, drag a box on the first image, save.
    dentist.locator("[data-role=condition]").first.select_option("calculus")
    dentist.locator("[data-action=add]").first.click()
    dentist.wait_for_selector(".viewer[data-drawn=true] svg.overlay rect.capture")  # drawing mode on a drawn image
    stage = dentist.locator(".stage .viewer").first
    box = stage.bounding_box()
    dentist.mouse.move(box["x"] + box["width"] * 0.2, box["y"] + box["height"] * 0.3)
    dentist.mouse.down()
    dentist.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.6, steps=5)
    dentist.mouse.up()
    dentist.locator(".draft-controls button.primary").first.click()
    dentist.wait_for_selector("li.finding.added")
    # The rest confirmed with the keyboard shortcuts shown on the page (j: next, c: confirm).
    for _ in range(40):
        pending = dentist.locator("li.finding.pending")
        if pending.count() == 0:
            break
        pending.first.locator("button.finding-select").click()
        dentist.keyboard.press("c")
        dentist.wait_for_timeout(150)
    assert dentist.locator("li.finding.pending").count() == 0
    _shot(dentist, "06-dentist-review-decided")
    dentist.click("#sign-button")  # the first press says what will be signed...
    dentist.wait_for_selector("#review-message:has-text('Press again to sign')")
    dentist.click("#sign-button")  # ...the second signs
    dentist.wait_for_selector("#review-message:has-text('Report signed')")
    _shot(dentist, "07-dentist-signed")
    dentist.goto(dentist.url.replace("/review/", "/report/"))
    dentist.wait_for_selector("text=Signed")
    _images_loaded(dentist, "img.report-image")  # for the screenshot
    assert dentist.locator("[data-testid=report-box]").count() >= 1  # confirmed findings drawn on the image
    _shot(dentist, "08-dentist-patient-report")
    assert Finding.unscoped.get(pk=first_id).status == "confirmed"
    rejected_finding = Finding.unscoped.get(pk=second_id)
    assert rejected_finding.status == "rejected" and rejected_finding.reason == "wrong_condition"
    assert Finding.unscoped.filter(image__patient=patient, source="clinician", condition="calculus").exists()
    assert Report.unscoped.filter(visit__patient=patient).exists()

    # --- Clinic admin: MFA, the audit trail shows those actions, and exports them.
    admin = _page(browser, accept_downloads=True)
    _login(admin, base, alice.users["clinic_admin"].email, admin_secret)
    admin.goto(f"{base}/clinic/audit/")
    _shot(admin, "09-admin-audit-trail")
    with admin.expect_download() as download_info:
        admin.click("text=Export CSV")
    rows = list(csv.DictReader(io.StringIO(Path(download_info.value.path()).read_text())))
    actions = {(r["action"], r["actor"]) for r in rows}
    dentist_email, staff_email = alice.users["dentist"].email, alice.users["staff"].email
    for expected in (
        ("auth.login", staff_email),
        ("image.upload", staff_email),
        ("finding.confirm", dentist_email),
        ("finding.reject", dentist_email),
        ("finding.add", dentist_email),
        ("report.sign", dentist_email),
    ):
        assert expected in actions, f"{expected} missing from the exported audit trail"
    assert AuditEvent.unscoped.filter(action="audit.export", actor_user=alice.users["clinic_admin"]).exists()

    # --- Another clinic's member reaches none of it.
    outsider = _page(browser)
    _login(outsider, base, bob.users["staff"].email)
    image_id = Image.unscoped.filter(patient=patient).first().pk
    for path in (patient_url.replace(base, ""), f"/patients/images/{image_id}/", f"/api/v1/images/{image_id}/file"):
        response = outsider.goto(f"{base}{path}")
        assert response.status == 404, (path, response.status)
    outsider.goto(f"{base}/patients/")
    assert "Journey" not in outsider.content()
    _shot(outsider, "10-other-clinic-sees-nothing")


def test_review_page_on_a_tablet(worlds: tuple[World, World], browser: Any, live_server: Any) -> None:
    alice, _ = worlds
    base = live_server.url
    secret = enrol_totp(alice.users["dentist"])
    tablet = _page(browser, viewport={"width": 820, "height": 1180}, has_touch=True, is_mobile=True)
    _login(tablet, base, alice.users["dentist"].email, secret)
    tablet.goto(f"{base}/visits/{alice.image.visit_id}/review/")
    tablet.wait_for_selector("li.finding")
    # Fits the screen: no sideways scrolling; shortcuts listed; the finding colours are colour-blind safe.
    assert tablet.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    assert tablet.locator("#shortcuts-title").is_visible()
    # Controls for other states stay out of the way (the amendment form before signing, box drawing).
    assert not tablet.locator("#amend-form").is_visible()
    assert tablet.locator(".draft-controls").first.is_hidden()
    assert tablet.locator(".shortcuts kbd", has_text="c").count() >= 1
    tablet.wait_for_selector("svg.overlay rect.outline")  # drawn once the viewer has the image
    strokes = tablet.eval_on_selector_all("svg rect.outline", "els => els.map(e => e.getAttribute('stroke'))")
    assert strokes and {s.lower() for s in strokes} <= OKABE_ITO, strokes
    tablet.locator("li.finding button.finding-select").first.tap()
    _shot(tablet, "11-review-on-a-tablet")


_SET_HIDDEN = """(hidden) => {
  Object.defineProperty(document, "hidden", {configurable: true, get: () => hidden});
  document.dispatchEvent(new Event("visibilitychange"));
}"""


def test_review_page_follows_a_running_analysis_without_flooding_the_audit_trail(
    worlds: tuple[World, World], browser: Any, live_server: Any
) -> None:
    """The review page re-checks a running analysis with a growing interval, stops while its tab is hidden
    (each check is an audited read) and draws the new findings once it is done."""
    alice, _ = worlds
    base = live_server.url
    dentist_user = alice.users["dentist"]
    secret = enrol_totp(dentist_user)
    with clinic_scope(alice.clinic.id):
        model = ModelVersion.objects.create(
            name="photo-fixture-2",
            version="0.0.1",
            modality="photo",
            artifact_dir="/nonexistent",
            weights_sha256="0" * 64,
            labels=["caries", "gingivitis", "calculus", "ulcer"],
            thresholds={"caries": 0.3, "gingivitis": 0.5, "calculus": 0.5, "ulcer": 0.5},
        )
        # queued but never sent to a worker: the test finishes it itself
        running = Analysis.objects.create(
            image=alice.image, model_version=model, status="queued", input_sha256=alice.image.sha256
        )

    def status_reads() -> int:
        return AuditEvent.unscoped.filter(action="analysis.list", actor_user=dentist_user).count()

    page = _page(browser)
    _login(page, base, dentist_user.email, secret)
    page.goto(f"{base}/visits/{alice.image.visit_id}/review/")
    page.wait_for_selector("#live-status:has-text('1 of 2 done')")
    assert page.locator("li.finding").count() == 1
    # Checks at about 0, 2, 5 and 9.5 s, then 16 s: at most 5 in the first 15 s (a fixed 2 s would make 8).
    first = status_reads()
    page.wait_for_timeout(15_000)
    visible_reads = status_reads()
    assert 2 <= visible_reads <= 5, visible_reads
    assert first >= 1

    # A hidden tab checks nothing: at most the check already scheduled runs (and then pauses).
    page.evaluate(_SET_HIDDEN, True)
    page.wait_for_timeout(8_000)
    paused_at = status_reads()
    page.wait_for_timeout(8_000)
    assert status_reads() == paused_at
    assert "1 of 2 done" in page.inner_text("#live-status")

    # The analysis finishes while the tab is hidden; shown again, the page checks at once and draws it.
    with clinic_scope(alice.clinic.id):
        Finding.objects.create(
            analysis=running, image=alice.image, condition="ulcer", probability=0.88, box=[0.5, 0.5, 0.2, 0.2]
        )
        Analysis.objects.filter(pk=running.pk).update(status="done")
    page.evaluate(_SET_HIDDEN, False)
    page.wait_for_selector("#live-status:has-text('Analysis finished.')")
    page.locator("li.finding").nth(1).wait_for()
    assert status_reads() == paused_at + 1
    _shot(page, "12-review-live-status-finished")


def test_lost_phone_and_forgotten_password_journey(
    worlds: tuple[World, World],
    browser: Any,
    live_server: Any,
    eager: None,  # the reset mail is sent by a task: here, in the live server's thread (its outbox)
) -> None:
    """A dentist loses the phone and forgets the password: the clinic admin resets the second factor on the
    members page; the dentist asks for a reset link, chooses a new password, sets up a new authenticator at
    log-in, then changes the password again from the account page."""
    import pyotp
    from django.core import mail

    alice, _ = worlds
    base = live_server.url
    dentist_user = alice.users["dentist"]
    enrol_totp(dentist_user)
    admin_secret = enrol_totp(alice.users["clinic_admin"])

    admin = _page(browser)
    _login(admin, base, alice.users["clinic_admin"].email, admin_secret)
    admin.goto(f"{base}/clinic/members/")
    row = admin.locator("tr", has_text=dentist_user.email)
    row.locator("text=Reset second factor").click()
    admin.wait_for_selector(".messages li.success")
    assert "set up a new authenticator" in admin.inner_text(".messages")
    _shot(admin, "12-admin-reset-second-factor")

    dentist = _page(browser)
    dentist.goto(f"{base}/login/")
    dentist.click("text=Forgot your password?")
    dentist.fill("input[name=email]", dentist_user.email)
    sent = len(mail.outbox)
    dentist.click("button[type=submit]")
    dentist.wait_for_selector("[data-testid=reset-sent]")
    # The mail is sent after the response (without a broker: core.queue.task_send_after_response, in the live
    # server's thread), so the page can be shown before it is in the outbox.
    deadline = time.monotonic() + 10
    while len(mail.outbox) == sent and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(mail.outbox) == sent + 1, "the reset mail was not sent within 10 s"
    link = re.search(r"https?://\S+/password-reset/\S+/", mail.outbox[-1].body)[0]
    dentist.goto(link)
    dentist.wait_for_url(re.compile(r".*/set-password/$"))  # the token left the address bar
    new_password = "lost-my-phone-and-my-password-2027"
    dentist.fill("input[name=new_password1]", new_password)
    dentist.fill("input[name=new_password2]", new_password)
    dentist.click("button[type=submit]")
    dentist.wait_for_url(f"{base}/login/")
    dentist.fill("input[name=email]", dentist_user.email)
    dentist.fill("input[name=password]", new_password)
    dentist.click("button[type=submit]")
    dentist.wait_for_url(re.compile(r".*/login/verify/$"))
    secret = dentist.inner_text("[data-testid=totp-secret]")  # a new authenticator: scan or type this key
    _shot(dentist, "13-dentist-sets-up-a-new-authenticator")
    dentist.fill("input[name=code]", pyotp.TOTP(secret).now())
    dentist.click("button[type=submit]")
    dentist.wait_for_selector("[data-testid=recovery-codes]")
    dentist.click("text=I have stored them, continue")
    dentist.click(f"a:has-text('{dentist_user.email}')")
    dentist.wait_for_selector("[data-testid=mfa-status]")
    assert "Unused recovery codes: 10" in dentist.inner_text("[data-testid=mfa-status]")
    dentist.fill("input[name=old_password]", new_password)
    dentist.fill("input[name=new_password1]", "and-now-a-third-one-2027")
    dentist.fill("input[name=new_password2]", "and-now-a-third-one-2027")
    dentist.click("text=Change password")
    dentist.wait_for_selector(".messages li.success")
    _shot(dentist, "14-dentist-account-password-changed")
    dentist.goto(f"{base}/patients/")
    assert dentist.url == f"{base}/patients/"  # still logged in here
    actions = set(AuditEvent.unscoped.filter(clinic=alice.clinic).values_list("action", flat=True))
    assert {"auth.mfa.reset", "auth.password.reset_requested", "auth.password.reset", "auth.mfa.enrol"} <= actions
    assert "auth.password.change" in actions
