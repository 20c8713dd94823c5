"""The API reference page in a real headless Chromium, under the production Content-Security-Policy.

Swagger UI must render every operation with nothing inline (no 'unsafe-inline' or 'unsafe-eval'
scripts) and no request leaving the server: every CSP violation the browser reports, every console
error, page error and failed request fails the test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from ..conftest import World, build_clinic
from .test_journeys import CHROMIUM, SHOTS, _login

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM} (make test installs it)"),
]

ROOT = Path(__file__).resolve().parents[2]
# What production settings need to start (as in tests/test_platform.py); nothing here connects to them.
PROD_ENV = {
    "DJANGO_SETTINGS_MODULE": "config.settings.production",
    "SECRET_KEY": "p" * 20 + "roduction-secret-key-with-enough-entropy-0123456789",
    "DATABASE_URL": "postgres://app@db.internal:5432/dentalscan",
    "REDIS_URL": "redis://redis.internal:6379/0",
    "ALLOWED_HOSTS": "dental.example.org",
    "MASTER_KEYS": "k2026:" + "A" * 43 + "=",
    "MASTER_KEY_ID": "k2026",
}
# Records each violation in the page (the console message Chromium writes is checked too).
REPORT_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (e) => {
  console.error("CSP violation: " + e.violatedDirective + " blocked " + (e.blockedURI || "inline"));
});
"""


def _production_headers() -> dict[str, Any]:
    """The security settings production runs with, read from config.settings.production itself."""
    code = (
        "import json, django; from django.conf import settings as s; django.setup(); "
        "print(json.dumps({'csp': s.CONTENT_SECURITY_POLICY, 'middleware': s.MIDDLEWARE, "
        "'frame': s.X_FRAME_OPTIONS, 'nosniff': s.SECURE_CONTENT_TYPE_NOSNIFF, 'referrer': s.SECURE_REFERRER_POLICY}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env={**os.environ, **PROD_ENV}, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(params=["production", "no-unsafe-inline"])
def production_headers(request: Any, settings: Any) -> dict[str, Any]:
    """The live server sends the headers production sends: same middleware, same policy values. The second
    run also drops the policy's only relaxation (``style-src-attr 'unsafe-inline'``, which other pages use)
    to show that this page does not depend on it."""
    production = _production_headers()
    assert "clinics.middleware.SecurityHeadersMiddleware" in production["middleware"]
    assert production["middleware"] == settings.MIDDLEWARE
    if request.param == "no-unsafe-inline":
        production["csp"] = production["csp"].replace("style-src-attr 'unsafe-inline'; ", "")
        assert "unsafe" not in production["csp"]
    settings.CONTENT_SECURITY_POLICY = production["csp"]
    settings.X_FRAME_OPTIONS = production["frame"]
    settings.SECURE_CONTENT_TYPE_NOSNIFF = production["nosniff"]
    settings.SECURE_REFERRER_POLICY = production["referrer"]
    return production


@pytest.fixture
def clinic(live_server: Any) -> World:
    return build_clinic("alice", patient_name="Docsonmarker")


@pytest.fixture
def page(live_server: Any) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"  # see tests/e2e/test_journeys.py (chromium fixture)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
            context = browser.new_context(viewport={"width": 1366, "height": 900})
            context.set_default_timeout(30_000)
            context.add_init_script(REPORT_VIOLATIONS)
            yield context.new_page()
            context.close()
            browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


def test_api_reference_renders_under_the_production_csp(
    clinic: World, page: Any, live_server: Any, production_headers: dict[str, Any]
) -> None:
    base = live_server.url
    problems: list[str] = []
    requested: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url} {r.failure}"))
    page.on("request", lambda r: requested.append(r.url))

    _login(page, base, clinic.users["staff"].email)
    problems.clear()  # only the reference page is under test here
    response = page.goto(f"{base}/api/v1/docs/")
    assert response.status == 200
    assert response.headers["content-security-policy"] == production_headers["csp"]
    policy = production_headers["csp"]
    assert "'unsafe-eval'" not in policy and "script-src 'self';" in policy and "style-src 'self';" in policy

    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.locator(".opblock").first.wait_for()
    except PlaywrightTimeout:  # a blank page: say what the browser reported
        pytest.fail(f"no operation rendered; browser reported: {problems}")
    rendered = page.locator(".opblock-summary-path")
    paths = {rendered.nth(i).get_attribute("data-path") for i in range(rendered.count())}
    for path in (
        "/api/v1/patients/",
        "/api/v1/patients/{id}/",
        "/api/v1/analyses/{id}/",
        "/api/v1/visits/",
        "/api/v1/audit-events/",
    ):
        assert path in paths, (path, sorted(paths))
    # the summaries are shown next to the paths
    assert page.locator(".opblock-summary-description").filter(has_text="List the clinic's visits").count() == 1
    # an operation opens (Swagger UI's own rendering of parameters and responses, all under the policy)
    page.locator('.opblock-summary-path[data-path="/api/v1/visits/"]').first.click()
    page.locator(".opblock.is-open .parameters-container").wait_for()
    assert page.locator(".opblock.is-open tr[data-param-name='signed']").count() == 1
    # "Try it out" calls the API from the page with the member's session (connect-src 'self')
    page.locator(".opblock.is-open .try-out__btn").click()
    page.locator(".opblock.is-open .execute").click()
    status = page.locator(".opblock.is-open .live-responses-table tbody .response-col_status").first
    status.wait_for()
    assert status.inner_text().strip().startswith("200"), status.inner_text()
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "api-docs.png"), full_page=False)

    assert problems == [], problems
    host = urlsplit(base).netloc
    foreign = [u for u in requested if urlsplit(u).scheme in ("http", "https") and urlsplit(u).netloc != host]
    assert foreign == [], foreign  # nothing from a CDN: the page works offline
    assert any(u.endswith("/static/vendor/swagger-ui/swagger-ui-bundle.js") for u in requested)


def test_api_reference_needs_a_member(clinic: World, page: Any, live_server: Any) -> None:
    response = page.goto(f"{live_server.url}/api/v1/docs/")
    assert response.status in (401, 403)
    assert page.locator(".opblock").count() == 0
