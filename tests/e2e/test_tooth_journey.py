"""Tooth numbers in a real Chromium: a dentist assigns teeth on the odontogram (FDI in one clinic, Universal in
another), changes a condition, undoes a decision, opens the chart, signs (the Sign button says what is left) and
opens the report grouped by tooth; axe-core finds no serious or critical violation on the review, chart, report and
worklist pages; two dentists editing one finding: the second gets the conflict and nothing is lost.

Desktop 1366x900 and tablet 820x1180; screenshots in the test's own tmp folder. axe-core is vendored under
``tests/e2e/vendor/axe-core`` (npm 4.14.1, MPL-2.0; see its README) and injected with the page's CSP bypassed in
the test's browser context only (the app's CSP forbids inline scripts, as it should).
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image as PILImage

from analysis.models import AnalysisSettings, Finding, Report, VisitNote
from clinics import services
from clinics.models import Role
from clinics.tenancy import clinic_scope
from patients.services import image_ingest

from ..conftest import PASSWORD, World, build_clinic, enrol_totp
from .test_journeys import CHROMIUM, _images_loaded, _login, browser, chromium  # noqa: F401 - fixtures

AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
AXE_SRI = "sha256-KTSJmUUM3yhJqOcLeRL8LahahJ2jnA0NU5T1HUqe2Vw="  # sri-history.json of axe-core 4.14.1
VIEWPORTS = {"desktop": {"width": 1366, "height": 900}, "tablet": {"width": 820, "height": 1180}}

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM} (make test installs it)"),
]


def _axe_source() -> str:
    data = AXE.read_bytes()
    assert "sha256-" + base64.b64encode(hashlib.sha256(data).digest()).decode() == AXE_SRI, "vendored axe changed"
    return data.decode()


def axe_violations(page: Any) -> list[dict[str, Any]]:
    """Serious and critical axe-core violations of the page as it is now (WCAG 2.x A and AA rules and best practice)."""
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.add_script_tag(content=_axe_source())
    violations = page.evaluate(
        """async () => {
          const result = await axe.run(document, {resultTypes: ["violations"]});
          return result.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
            nodes: v.nodes.slice(0, 5).map(n => n.target.join(" "))}));
        }"""
    )
    return [v for v in violations if v["impact"] in ("serious", "critical")]


def _xray_png() -> bytes:
    ramp = np.tile(np.linspace(2000, 60000, 400, dtype=np.uint16), (200, 1))
    out = io.BytesIO()
    PILImage.fromarray(ramp).save(out, "PNG")
    return out.getvalue()


def _visit_with_xray(world: World) -> dict[str, Finding]:
    """The fixture's photo (a pending caries) plus a pending gingivitis on it, and an X-ray of the same visit with a
    pending filling suggestion."""
    with clinic_scope(world.clinic.id):
        xray = image_ingest(
            patient=world.patient,
            stream=io.BytesIO(_xray_png()),
            filename="bitewing.png",
            size=None,
            modality="xray",
            visit_id=world.image.visit_id,
        )
        gingivitis = Finding.objects.create(
            analysis=world.analysis,
            image=world.image,
            condition="gingivitis",
            probability=0.8,
            box=[0.5, 0.5, 0.3, 0.3],
        )
        filling = Finding.objects.create(image=xray, condition="filling", probability=0.9, box=[0.2, 0.2, 0.2, 0.3])
    return {"caries": world.finding, "gingivitis": gingivitis, "filling": filling}


def _finding(page: Any, finding_id: object) -> Any:
    return page.locator(f"li.finding[data-id='{finding_id}']")


def _open_edit(page: Any, finding_id: object) -> Any:
    item = _finding(page, finding_id)
    details = item.locator("details.finding-edit")
    if not details.evaluate("d => d.open"):
        details.locator("summary").click()
    return item


def _wait_db(predicate: Any, page: Any, timeout_ms: int = 10_000) -> None:
    for _ in range(timeout_ms // 100):
        if predicate():
            return
        page.wait_for_timeout(100)
    assert predicate()


@pytest.mark.parametrize("device", ["desktop", "tablet"])
def test_teeth_chart_sign_and_report_by_tooth(device: str, browser: Any, live_server: Any, tmp_path: Path) -> None:  # noqa: F811
    base = live_server.url
    alice = build_clinic("alice", patient_name="Alicesonmarker")
    bob = build_clinic("bob", patient_name="Bobsonmarker")
    with clinic_scope(bob.clinic.id):
        AnalysisSettings.objects.create(tooth_notation="universal")
    findings = _visit_with_xray(alice)
    secret = enrol_totp(alice.users["dentist"])
    shots = tmp_path / "screenshots"
    shots.mkdir()

    def shot(page: Any, name: str) -> None:
        page.screenshot(path=str(shots / f"{device}-{name}.png"), full_page=True)

    touch = {"has_touch": True, "is_mobile": True} if device == "tablet" else {}
    page = browser.page(viewport=VIEWPORTS[device], bypass_csp=True, **touch)
    _login(page, base, alice.users["dentist"].email, secret)
    review_url = f"{base}/visits/{alice.image.visit_id}/review/"
    page.goto(review_url)
    page.wait_for_selector("li.finding")
    page.wait_for_selector("#review[data-interactive=true]")  # the first image drawn, the decisions enabled
    sign = page.locator("#sign-button")
    assert sign.is_disabled() and sign.inner_text() == "Sign report: 3 suggestions undecided"
    assert axe_violations(page) == []
    # the image stays in view while deciding: sticky beside the list (desktop), above a scrolling list (tablet)
    layout = page.evaluate(
        "() => [getComputedStyle(document.querySelector('.stage')).position,"
        " getComputedStyle(document.querySelector('.finding-side')).overflowY]"
    )
    assert layout == (["sticky", "visible"] if device == "desktop" else ["relative", "auto"])
    shot(page, "01-review")

    # FDI: the caries goes on tooth 16 by clicking the odontogram
    item = _open_edit(page, findings["caries"].pk)
    item.locator(".odontogram button.tooth[data-fdi='16']").click()
    _finding(page, findings["caries"].pk).locator(".tooth-tag", has_text="Tooth 16").wait_for()
    _wait_db(lambda: Finding.unscoped.get(pk=findings["caries"].pk).tooth == "16", page)
    assert (
        _finding(page, findings["caries"].pk).locator("button.tooth[data-fdi='16']").get_attribute("aria-pressed")
        == "true"
    )
    shot(page, "02-tooth-from-odontogram")

    # the condition changed on screen (an adjustment: counts as confirmed)
    item = _open_edit(page, findings["gingivitis"].pk)
    item.locator("[data-role=condition]").select_option("calculus")
    item.locator("[data-action=change-condition]").click()
    page.wait_for_selector("#review-message:has-text('Condition changed to Calculus')")
    changed = Finding.unscoped.get(pk=findings["gingivitis"].pk)
    assert (changed.condition, changed.status) == ("calculus", "confirmed")

    # the X-ray's filling: tooth typed (keyboard only), then confirmed with the shortcut
    item = _open_edit(page, findings["filling"].pk)
    item.locator("[data-role=tooth]").fill("36")
    item.locator("[data-role=tooth]").press("Enter")
    _finding(page, findings["filling"].pk).locator(".tooth-tag", has_text="Tooth 36").wait_for()
    _finding(page, findings["filling"].pk).locator("button.finding-select").click()
    page.keyboard.press("c")
    page.wait_for_selector(f"li.finding.confirmed[data-id='{findings['filling'].pk}']")

    # confirm the caries, undo it (back to pending: the Sign button says so), confirm again
    _finding(page, findings["caries"].pk).locator("[data-action=confirm]").click()
    page.wait_for_selector(f"li.finding.confirmed[data-id='{findings['caries'].pk}']")
    assert sign.is_enabled() and sign.inner_text() == "Sign report"
    _finding(page, findings["caries"].pk).locator("[data-action=undo]").click()
    page.wait_for_selector(f"li.finding.pending[data-id='{findings['caries'].pk}']")
    assert sign.is_disabled() and sign.inner_text() == "Sign report: 1 suggestion undecided"
    assert Finding.unscoped.get(pk=findings["caries"].pk).status == "pending"
    _finding(page, findings["caries"].pk).locator("[data-action=confirm]").click()
    page.wait_for_selector(f"li.finding.confirmed[data-id='{findings['caries'].pk}']")

    page.fill("#visit-note-text", "Recall in six months.")
    page.click("#visit-note-save")
    page.wait_for_selector("#review-message:has-text('Visit note saved')")
    assert page.input_value("#visit-note-version") == "1"
    shot(page, "03-decided")

    # the chart by tooth
    page.click("#chart-link")
    page.wait_for_selector("[data-testid=chart-tooth]")
    tooth16 = page.locator("[data-testid=chart-tooth][data-fdi='16']").inner_text()
    tooth36 = page.locator("[data-testid=chart-tooth][data-fdi='36']").inner_text()
    assert "Problems: Caries" in tooth16 and "Status: Filling" in tooth36 and "Problems" not in tooth36
    assert axe_violations(page) == []
    shot(page, "04-chart")

    # sign: two presses, then everything is read-only and looks it
    page.goto(review_url)
    page.wait_for_selector("li.finding")
    sign.click()
    page.wait_for_selector("#review-message:has-text('Press again to sign')")
    sign.click()
    page.wait_for_selector("#review-message:has-text('Report signed')")
    assert sign.is_disabled() and sign.inner_text() == "Signed"
    assert page.locator("li.finding [data-action=confirm]").first.is_disabled()
    assert page.locator("#visit-note-save").is_disabled()
    opacity = page.locator("li.finding [data-action=confirm]").first.evaluate("b => getComputedStyle(b).opacity")
    assert float(opacity) < 1  # looks disabled, not just is
    assert Report.unscoped.filter(visit_id=alice.image.visit_id).count() == 1
    shot(page, "05-signed")

    # the report, grouped by tooth
    page.goto(f"{base}/visits/{alice.image.visit_id}/report/")
    page.wait_for_selector("#by-tooth")
    _images_loaded(page, "img.report-image")
    groups = page.locator("[data-testid=report-tooth]")
    assert groups.count() == 2
    assert "Tooth 16 (upper right first molar)" in groups.nth(0).inner_text()
    assert "Existing filling" in groups.nth(1).inner_text() and "not a new problem" in groups.nth(1).inner_text()
    assert page.locator("[data-testid=explanation]").all_inner_texts() == ["Tooth decay (caries)", "Tartar (calculus)"]
    assert axe_violations(page) == []
    shot(page, "06-report-by-tooth")

    page.goto(f"{base}/visits/")
    page.wait_for_selector("h1")
    assert axe_violations(page) == []
    shot(page, "07-worklist")

    # another clinic reads Universal numbers: tooth "3" on its odontogram is FDI 16
    bob_secret = enrol_totp(bob.users["dentist"])
    other = browser.page(viewport=VIEWPORTS[device], **touch)
    _login(other, base, bob.users["dentist"].email, bob_secret)
    other.goto(f"{base}/visits/{bob.image.visit_id}/review/")
    other.wait_for_selector("li.finding")
    item = _open_edit(other, bob.finding.pk)
    button = item.locator(".odontogram button.tooth", has_text=re.compile(r"^3$"))
    assert button.get_attribute("data-fdi") == "16"
    assert button.get_attribute("aria-label") == "Tooth 3, upper right first molar"
    button.click()
    _finding(other, bob.finding.pk).locator(".tooth-tag", has_text="Tooth 3").wait_for()
    _wait_db(lambda: Finding.unscoped.get(pk=bob.finding.pk).tooth == "16", other)
    shot(other, "08-universal-odontogram")
    assert sorted(p.name for p in shots.iterdir()) == sorted(
        f"{device}-{n}.png"
        for n in (
            "01-review",
            "02-tooth-from-odontogram",
            "03-decided",
            "04-chart",
            "05-signed",
            "06-report-by-tooth",
            "07-worklist",
            "08-universal-odontogram",
        )
    )


def test_two_dentists_edit_one_finding_the_second_gets_the_conflict(
    browser: Any,  # noqa: F811
    live_server: Any,
    tmp_path: Path,
) -> None:
    base = live_server.url
    alice = build_clinic("alice", patient_name="Alicesonmarker")
    with clinic_scope(alice.clinic.id):
        second = services.member_add(email="second@alice.test", role=Role.DENTIST, password=PASSWORD).user
    pages = []
    for user in (alice.users["dentist"], second):
        secret = enrol_totp(user)
        page = browser.page()
        _login(page, base, user.email, secret)
        page.goto(f"{base}/visits/{alice.image.visit_id}/review/")
        page.wait_for_selector("li.finding")
        pages.append(page)
    first, late = pages
    # both opened version 1; the first dentist puts the finding on tooth 16
    _open_edit(first, alice.finding.pk).locator("button.tooth[data-fdi='16']").click()
    _finding(first, alice.finding.pk).locator(".tooth-tag", has_text="Tooth 16").wait_for()
    # the second, still on version 1, writes a note on the same finding
    item = _open_edit(late, alice.finding.pk)
    item.locator("[data-role=note]").fill("Check the distal margin")
    item.locator("[data-action=save-note]").click()
    late.wait_for_selector("#review-message.error")
    message = late.inner_text("#review-message")
    assert alice.users["dentist"].email in message and "tooth" in message and "not saved" in message
    late.screenshot(path=str(tmp_path / "conflict.png"), full_page=True)
    # nothing lost: the first change is kept and shown, the second dentist's text is still in the field
    finding = Finding.unscoped.get(pk=alice.finding.pk)
    assert (finding.tooth, finding.note, finding.version) == ("16", "", 2)
    _finding(late, alice.finding.pk).locator(".tooth-tag", has_text="Tooth 16").wait_for()
    assert _open_edit(late, alice.finding.pk).locator("[data-role=note]").input_value() == "Check the distal margin"
    # saved again on the version now shown: both changes are kept
    _finding(late, alice.finding.pk).locator("[data-action=save-note]").click()
    late.wait_for_selector("#review-message:has-text('note saved')")
    finding.refresh_from_db()
    assert (finding.tooth, finding.note, finding.version) == ("16", "Check the distal margin", 3)
    # the visit note, stale in the same way (hidden version in its form)
    first.fill("#visit-note-text", "First")
    first.click("#visit-note-save")
    first.wait_for_selector("#review-message:has-text('Visit note saved')")
    late.fill("#visit-note-text", "Second")
    late.click("#visit-note-save")
    late.wait_for_selector("#review-message.error")
    assert alice.users["dentist"].email in late.inner_text("#review-message")
    assert VisitNote.unscoped.get(visit_id=alice.image.visit_id).text == "First"
    assert late.input_value("#visit-note-text") == "Second"  # not thrown away
