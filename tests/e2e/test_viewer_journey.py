"""The review page's image viewer in a real Chromium (OpenSeadragon, vendored under static/vendor/openseadragon).

Desktop 1366x900 and tablet 820x1180, screenshots in the test's own tmp folder: zoom in on an X-ray and pan (the
viewport changes); change the window/level of a 16-bit X-ray and read the canvas pixels before and after (the step
falls where the raw 16-bit values cross the window, which an 8-bit preview could not place); invert; switch the
overlay, one condition and the photo heatmap; move and resize a box with the mouse (handles) and with the keyboard
and read the saved box back from the API; the previous signed visit beside the current one with its findings per
tooth; labels never overlap; axe-core finds no serious or critical violation on the page with the viewer.
"""

from __future__ import annotations

import datetime as dt
import io
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image as PILImage

from analysis.models import Analysis, Finding
from analysis.reports import report_sign
from analysis.services import _heatmap_blob
from clinics.tenancy import clinic_scope
from patients.models import Visit
from patients.services import image_ingest

from ..conftest import World, build_clinic, enrol_totp, fixture_model_version
from .test_journeys import CHROMIUM, _login, browser, chromium  # noqa: F401 - fixtures
from .test_tooth_journey import VIEWPORTS, axe_violations

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM} (make test installs it)"),
]

RAMP_LOW, RAMP_HIGH = 2000, 60000


def _xray16(width: int = 800, height: int = 400) -> bytes:
    """A horizontal ramp of raw 16-bit values from 2000 to 60000."""
    ramp = np.tile(np.linspace(RAMP_LOW, RAMP_HIGH, width).round().astype(np.uint16), (height, 1))
    out = io.BytesIO()
    PILImage.fromarray(ramp).save(out, "PNG")
    return out.getvalue()


def _photo(width: int = 640, height: int = 480) -> bytes:
    rng = np.random.default_rng(3)
    pixels = (rng.random((height, width, 3)) * 60 + np.array([170, 90, 90])).clip(0, 255).astype("uint8")
    out = io.BytesIO()
    PILImage.fromarray(pixels).save(out, "JPEG", quality=90)
    return out.getvalue()


def _world() -> tuple[World, dict[str, Any]]:
    """A visit with a photo (caries with a heatmap, gingivitis) and a 16-bit X-ray (filling); and the patient's
    earlier visit, signed, with a photo whose caries sits on tooth 16."""
    alice = build_clinic("alice", patient_name="Alicesonmarker")
    with clinic_scope(alice.clinic.id):
        earlier = Visit.objects.create(patient=alice.patient, visit_date=dt.date.today() - dt.timedelta(days=180))
        old_photo = image_ingest(
            patient=alice.patient,
            stream=io.BytesIO(_photo()),
            filename="old.jpg",
            size=None,
            modality="photo",
            visit_id=earlier.pk,
        )
        old_analysis = Analysis.objects.create(
            image=old_photo, model_version=fixture_model_version(), status="done", input_sha256=old_photo.sha256
        )
        Finding.objects.create(
            analysis=old_analysis,
            image=old_photo,
            condition="caries",
            probability=0.8,
            box=[0.2, 0.2, 0.2, 0.2],
            status="confirmed",
            tooth="16",
        )
        report_sign(visit=earlier, signer=alice.users["dentist"])

        photo = image_ingest(
            patient=alice.patient,
            stream=io.BytesIO(_photo()),
            filename="smile.jpg",
            size=None,
            modality="photo",
            visit_id=alice.image.visit_id,
        )
        analysis = Analysis.objects.create(
            image=photo, model_version=fixture_model_version(), status="done", input_sha256=photo.sha256
        )
        caries = Finding.objects.create(
            analysis=analysis, image=photo, condition="caries", probability=0.9, box=[0.1, 0.1, 0.3, 0.3]
        )
        heat = np.zeros((28, 28), dtype=np.float32)
        heat[3:12, 3:12] = 1.0
        caries.heatmap = _heatmap_blob(analysis, caries.pk, heat)
        caries.save(update_fields=["heatmap"])
        gingivitis = Finding.objects.create(
            analysis=analysis, image=photo, condition="gingivitis", probability=0.8, box=[0.12, 0.12, 0.3, 0.3]
        )
        xray = image_ingest(
            patient=alice.patient,
            stream=io.BytesIO(_xray16()),
            filename="pano.png",
            size=None,
            modality="xray",
            visit_id=alice.image.visit_id,
        )
        filling = Finding.objects.create(image=xray, condition="filling", probability=0.9, box=[0.2, 0.2, 0.2, 0.3])
        # the fixture's tiny photo and its finding are not part of this journey
        Finding.objects.filter(pk=alice.finding.pk).delete()
        alice.image.delete()
    return alice, {"photo": photo, "xray": xray, "caries": caries, "gingivitis": gingivitis, "filling": filling}


def _section(page: Any, image: Any) -> Any:
    return page.locator(f"section.review-image[data-image-id='{image.pk}']")


def _viewer(page: Any, image: Any) -> Any:
    section = _section(page, image)
    section.scroll_into_view_if_needed()
    viewer = section.locator(".viewer")
    page.wait_for_function("e => e.dataset.drawn === 'true'", arg=viewer.element_handle())
    return viewer


def _state(viewer: Any) -> dict[str, float]:
    return viewer.evaluate("e => e.dentalViewer.state()")


def _row(viewer: Any) -> list[int]:
    """The red channel of the canvas along its middle row, sampled at 20 points across the image's extent."""
    return viewer.evaluate(
        """e => {
          const v = e.dentalViewer;
          const canvas = v.canvas();
          const ratio = canvas.width / e.clientWidth;
          const ctx = canvas.getContext("2d");
          const a = v.toScreen(0, 0.5), b = v.toScreen(1, 0.5);
          const out = [];
          for (let i = 0; i < 20; i++) {
            const x = Math.round((a.x + (b.x - a.x) * (i + 0.5) / 20) * ratio);
            out.push(ctx.getImageData(x, Math.round(a.y * ratio), 1, 1).data[0]);
          }
          return out;
        }"""
    )


def _settle(page: Any, viewer: Any, previous: Any, read: Any = _row) -> Any:
    """Poll until what ``read`` returns differs from ``previous`` and then stays the same over three reads 150 ms
    apart: the viewer animates and redraws its tiles frame by frame, later on a loaded machine."""
    now, steady, deadline = previous, 0, time.monotonic() + 15
    while time.monotonic() < deadline:
        page.wait_for_timeout(150)
        last, now = now, read(viewer)
        steady = steady + 1 if now == last and now != previous else 0
        if steady >= 2:  # three equal reads
            return now
    raise AssertionError(f"unchanged or never steady: {previous} -> {now}")


def _labels_overlap(page: Any) -> list[str]:
    return page.evaluate(
        """() => {
          const problems = [];
          document.querySelectorAll("svg.overlay").forEach(svg => {
            const plates = [...svg.querySelectorAll(".label-plate")].map(r => r.getBoundingClientRect());
            plates.forEach((a, i) => plates.slice(i + 1).forEach(b => {
              const hit = a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
              if (hit) problems.push("overlap");
            }));
          });
          return problems;
        }"""
    )


@pytest.mark.parametrize("device", ["desktop", "tablet"])
def test_viewer_zoom_window_level_overlays_box_editing_and_previous_visit(
    device: str,
    browser: Any,  # noqa: F811
    live_server: Any,
    tmp_path: Path,
) -> None:
    base = live_server.url
    alice, objects = _world()
    secret = enrol_totp(alice.users["dentist"])
    shots = tmp_path / "screenshots"
    shots.mkdir()

    def shot(name: str) -> None:
        page.screenshot(path=str(shots / f"{device}-{name}.png"), full_page=True)

    touch = {"has_touch": True, "is_mobile": True} if device == "tablet" else {}
    page = browser.page(viewport=VIEWPORTS[device], bypass_csp=True, **touch)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    _login(page, base, alice.users["dentist"].email, secret)
    page.goto(f"{base}/visits/{alice.image.visit_id}/review/")
    page.wait_for_selector("#review[data-interactive=true]")
    photo_viewer = _viewer(page, objects["photo"])
    assert axe_violations(page) == []
    assert _labels_overlap(page) == []  # caries and gingivitis boxes nearly coincide: their labels still do not
    shot("01-review")

    # the previous signed visit beside the current one: same modality, its findings per tooth
    previous = _section(page, objects["photo"]).locator("[data-testid=previous-visit]")
    text = previous.inner_text()
    earlier = (dt.date.today() - dt.timedelta(days=180)).isoformat()
    assert f"Previous visit, {earlier}" in text and "Tooth 16 (upper right first molar): Caries" in text
    here, there = photo_viewer.bounding_box(), previous.bounding_box()
    assert there["x"] >= here["x"] + here["width"] - 1 and abs(there["y"] - here["y"]) < here["height"]  # beside it
    assert _section(page, objects["xray"]).locator("[data-testid=previous-visit]").count() == 0  # no earlier X-ray

    # overlay, one condition, the heatmap
    photo_boxes = photo_viewer.locator("svg.overlay g.box")
    assert photo_boxes.count() == 2
    page.click("#overlay-toggle")
    assert photo_boxes.first.is_hidden()
    page.click("#overlay-toggle")
    assert photo_boxes.first.is_visible()
    page.click("#condition-toggle-gingivitis")
    assert photo_viewer.locator(f"g.box[data-id='{objects['gingivitis'].pk}']").count() == 0
    assert photo_viewer.locator(f"g.box[data-id='{objects['caries'].pk}']").count() == 1
    assert photo_viewer.locator("canvas.heatmap").count() == 0
    page.click("#heatmap-toggle")
    heatmap = photo_viewer.locator("canvas.heatmap")
    heatmap.wait_for()
    # hot where the model looked (top left), transparent elsewhere
    alpha = heatmap.evaluate(
        "c => { const d = c.getContext('2d'); return [d.getImageData(5, 5, 1, 1).data[3], "
        "d.getImageData(20, 20, 1, 1).data[3]]; }"
    )
    assert alpha[0] > 150 and alpha[1] == 0
    shot("02-condition-off-heatmap-on")
    page.click("#heatmap-toggle")
    page.click("#condition-toggle-gingivitis")

    # brightness on a photo changes the canvas pixels too (8-bit tiles through the same pipeline)
    photo_tools = _section(page, objects["photo"]).locator(".viewer-tools")
    dim = _row(photo_viewer)
    photo_tools.locator("[data-role=brightness]").fill("60")
    bright = _settle(page, photo_viewer, dim)
    assert all(b >= a for a, b in zip(dim, bright, strict=True)) and sum(bright) > sum(dim) + 20 * 30, (dim, bright)
    photo_tools.locator("[data-action=reset]").click()
    assert _settle(page, photo_viewer, bright) == dim

    # zoom in on the X-ray and pan
    xray = _viewer(page, objects["xray"])
    tools = _section(page, objects["xray"]).locator(".viewer-tools")
    start = _state(xray)
    tools.locator("[data-action=zoom-in]").click()
    tools.locator("[data-action=zoom-in]").click()
    zoomed = _settle(page, xray, start, _state)
    assert zoomed["zoom"] > start["zoom"] * 2 and zoomed["width"] < start["width"] / 2
    page.keyboard.press("ArrowRight")  # the focus is on its zoom button: the arrows pan this image
    panned = _settle(page, xray, zoomed, _state)
    assert panned["x"] > zoomed["x"] and panned["zoom"] == pytest.approx(zoomed["zoom"], rel=1e-3)
    box = xray.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.6)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.5, steps=8)
    page.mouse.up()
    dragged = _settle(page, xray, panned, _state)
    assert dragged["x"] > panned["x"]  # dragged leftwards: the view moved right
    page.keyboard.press("ArrowLeft")  # the image has the focus after the drag
    back = _settle(page, xray, dragged, _state)
    assert back["x"] < dragged["x"]
    page.evaluate("() => document.activeElement.blur()")
    page.keyboard.press("ArrowLeft")  # from elsewhere on the page the arrows do not pan
    page.wait_for_timeout(500)
    assert _state(xray) == pytest.approx(back, rel=1e-6)
    dragged = back
    shot("03-xray-zoomed-and-panned")
    page.keyboard.press("f")  # full screen: the viewer with its tools and overlay, then back
    page.wait_for_function("() => document.fullscreenElement && document.fullscreenElement.matches('.viewer-frame')")
    page.keyboard.press("f")
    page.wait_for_function("() => !document.fullscreenElement")
    tools.locator("[data-action=fit]").click()
    _settle(page, xray, dragged, _state)

    # window/level on the 16-bit values: a 2000-wide window centred on 31000 turns the ramp into a step at its middle
    before = _row(xray)
    assert before == sorted(before) and before[0] < 30 and before[-1] > 225 and 60 < before[10] < 200
    tools.locator("[data-role=level]").fill("31000")
    tools.locator("[data-role=width]").fill("2000")
    after = _settle(page, xray, before)
    assert after[:9] == [0] * 9 and after[11:] == [255] * 9, after
    tools.locator("[data-role=invert]").check()
    inverted = _settle(page, xray, after)
    assert inverted[:9] == [255] * 9 and inverted[11:] == [0] * 9, inverted
    shot("04-xray-window-level-inverted")
    tools.locator("[data-action=reset]").click()
    assert _settle(page, xray, inverted) == before

    # move and resize the filling's box with the mouse: drag its middle, then its bottom-right handle; Save
    filling = objects["filling"]
    item = page.locator(f"li.finding[data-id='{filling.pk}']")
    item.locator("[data-action=adjust]").click()
    xray.scroll_into_view_if_needed()
    mover = xray.locator(f"g.box[data-id='{filling.pk}'] rect.mover")
    mover.wait_for()
    m = mover.bounding_box()
    page.mouse.move(m["x"] + m["width"] / 2, m["y"] + m["height"] / 2)
    page.mouse.down()
    page.mouse.move(m["x"] + m["width"] / 2 + 80, m["y"] + m["height"] / 2 + 20, steps=6)
    page.mouse.up()
    handle = xray.locator(f"g.box[data-id='{filling.pk}'] rect.handle[data-handle='se']").bounding_box()
    page.mouse.move(handle["x"] + 7, handle["y"] + 7)
    page.mouse.down()
    page.mouse.move(handle["x"] + 47, handle["y"] + 27, steps=6)
    page.mouse.up()
    shot("05-box-moved-and-resized")
    _section(page, objects["xray"]).locator(".draft-controls button.primary").click()
    page.wait_for_selector("#review-message:has-text('Box saved')")
    saved = page.request.get(f"{base}/api/v1/findings/{filling.pk}/").json()
    x, y, w, h = saved["box"]
    assert x > 0.25 and y > 0.2 and w > 0.22 and h > 0.3, saved["box"]  # moved right and down, then grown
    assert saved["status"] == "confirmed" and saved["version"] == 2

    # keyboard only: m, arrows move it, Shift+arrows resize it, Enter saves
    item.locator("button.finding-select").click()
    page.keyboard.press("m")
    for key in ("ArrowLeft", "ArrowLeft", "ArrowUp", "Shift+ArrowRight", "Shift+ArrowDown", "Shift+ArrowDown"):
        page.keyboard.press(key)
    page.keyboard.press("Enter")
    for _ in range(100):  # the message of the first save is still shown: wait for the second version
        if Finding.unscoped.get(pk=filling.pk).version == 3:
            break
        page.wait_for_timeout(100)
    again = page.request.get(f"{base}/api/v1/findings/{filling.pk}/").json()
    expected = [x - 0.02, y - 0.01, w + 0.01, h + 0.02]
    assert again["box"] == pytest.approx(expected, abs=1e-4) and again["version"] == 3
    assert Finding.unscoped.get(pk=filling.pk).box == pytest.approx(expected, abs=1e-4)
    assert _labels_overlap(page) == []
    assert axe_violations(page) == []
    shot("06-saved")
    assert errors == []
    assert len(list(shots.iterdir())) == 6
