"""The patient-friendly report: plain-language content, the PDF, and the annotated images."""

from __future__ import annotations

import io
import re
import uuid
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pypdf import PdfReader

from analysis.report_images import annotate, to_display_rgb
from analysis.report_pdf import render_pdf
from analysis.report_wording import FOOTER, render_html_context
from core.conditions import CONDITIONS, OKABE_ITO

VERMILLION = (0xD5, 0x5E, 0x00)  # caries
BLUE = (0x00, 0x72, 0xB2)  # gingivitis
ORANGE = (0xE6, 0x9F, 0x00)  # cavity
GREY = (128, 128, 128)


def _id() -> str:
    return str(uuid.uuid4())


def _finding(condition: str, box: list[float] | None, status: str = "confirmed", source: str = "model") -> dict:
    return {
        "id": _id(),
        "condition": condition,
        "probability": 0.9 if source == "model" else None,
        "box": box,
        "status": status,
        "source": source,
        "reason": "not_present" if status == "rejected" else "",
        "model": "photo-effnetlite0@1.0.0" if source == "model" else None,
    }


def sample_report(*, amends: str | None = None) -> dict[str, Any]:
    return {
        "report_id": _id(),
        "version": 2 if amends else 1,
        "status": "signed",
        "signed_at": "2026-11-28T10:15:00+00:00",
        "signed_by": {"id": _id(), "name": "Dr Ada Example", "email": "dentist@demo.example"},
        "amends": amends,
        "amendment_reason": "Gum inflammation confirmed after a second look" if amends else "",
        "clinic": {"id": _id(), "name": "Demo Dental Clinic"},
        "patient": {
            "id": _id(),
            "external_id": "PMS-1",
            "given_name": "Ada",
            "family_name": "Lovelace",
            "date_of_birth": "1990-12-10",
            "sex": "female",
        },
        "visit": {"id": _id(), "date": "2026-11-28"},
        "images": [
            {
                "id": _id(),
                "modality": "photo",
                "width": 640,
                "height": 480,
                "findings": [
                    _finding("caries", [0.25, 0.25, 0.5, 0.5]),
                    _finding("gingivitis", [0.05, 0.7, 0.3, 0.2], source="clinician"),
                    _finding("ulcer", [0.6, 0.1, 0.2, 0.2], status="rejected"),
                ],
            },
            {
                "id": _id(),
                "modality": "xray",
                "width": 800,
                "height": 400,
                "findings": [_finding("cavity", [0.1, 0.2, 0.3, 0.25]), _finding("implant", None, status="rejected")],
            },
            {"id": _id(), "modality": "photo", "width": 320, "height": 240, "findings": []},
        ],
    }


def xray_16bit(width: int = 800, height: int = 400) -> Image.Image:
    """A 16-bit greyscale X-ray whose values (1000-4000) all lie above 255: ``convert("L")`` makes it white."""
    values = np.linspace(1000, 4000, width * height).reshape(height, width).astype("<u2")
    return Image.frombytes("I;16", (width, height), values.tobytes())


def sample_images(report: dict[str, Any]) -> dict[str, Image.Image]:
    photo, xray, empty = report["images"]
    return {
        photo["id"]: Image.new("RGB", (640, 480), (200, 120, 120)),
        xray["id"]: xray_16bit(),
        empty["id"]: Image.new("L", (320, 240), 90),
    }


def pdf_pages(pdf: bytes) -> list[str]:
    """The text of each page as a PDF reader extracts it (through the embedded font's ToUnicode map)."""
    return [page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages]


def pdf_text(pdf: bytes) -> str:
    return "\n".join(pdf_pages(pdf))


# --- render_html_context ------------------------------------------------------------------------------------------


def test_html_context_lists_confirmed_findings_in_plain_language() -> None:
    report = sample_report()
    content = render_html_context(report)
    assert content["clinic_name"] == "Demo Dental Clinic"
    assert content["patient_name"] == "Ada Lovelace"
    assert content["date_of_birth"] == "10 December 1990" and content["visit_date"] == "28 November 2026"
    photo, xray, empty = content["images"]
    assert [f["name"] for f in photo["findings"]] == ["Tooth decay (caries)", "Gum inflammation (gingivitis)"]
    assert [f["source"] for f in photo["findings"]] == ["model", "clinician"]
    assert [f["name"] for f in xray["findings"]] == ["Cavity seen on the X-ray"]
    assert empty["findings"] == [] and empty["no_findings_text"]
    assert xray["modality_label"] == "Dental X-ray"
    names = [item["name"] for item in content["explanations"]]
    assert names == ["Tooth decay (caries)", "Gum inflammation (gingivitis)", "Cavity seen on the X-ray"]
    assert all(item["explanation"] for item in content["explanations"])
    everything = repr(content)
    assert "Mouth ulcer" not in everything and "Dental implant" not in everything  # rejected
    assert content["signed_by_line"] == "Reviewed and signed by Dr Ada Example on 28 November 2026"
    assert content["amendment"] is None
    assert content["footer"] == FOOTER


def test_html_context_amendment_notice() -> None:
    content = render_html_context(sample_report(amends=_id()))
    assert content["amendment"] == {
        "version": 2,
        "notice": "Amended report (version 2)",
        "reason": "Gum inflammation confirmed after a second look",
    }


def test_every_condition_has_wording_and_an_okabe_ito_colour() -> None:
    assert CONDITIONS["caries"].patient_name == "Tooth decay (caries)"
    assert CONDITIONS["impacted_tooth"].patient_name == "Impacted tooth (a tooth that has not come through)"
    assert all(c.patient_name and c.explanation and c.name for c in CONDITIONS.values())
    colours = [c.colour for c in CONDITIONS.values()]
    assert set(colours) <= set(OKABE_ITO.values())
    assert len(set(colours)) == len(colours)  # one colour per condition
    xray = [c.colour for c in CONDITIONS.values() if c.modality == "xray"]
    assert OKABE_ITO["black"] not in xray  # dark X-rays


# --- render_pdf ---------------------------------------------------------------------------------------------------


def test_pdf_contains_the_report_in_plain_language() -> None:
    report = sample_report(amends=_id())
    pdf = render_pdf(report, sample_images(report), compress=False, invariant=True)
    assert pdf.startswith(b"%PDF")
    pages = pdf_pages(pdf)
    assert len(pages) >= 2  # three images, two of them scaled to the page width
    text_all = " ".join(" ".join(pages).split())  # line breaks as spaces
    for expected in (
        "Demo Dental Clinic",
        "Ada Lovelace",
        "10 December 1990",
        "28 November 2026",
        "Tooth decay (caries)",
        "Gum inflammation (gingivitis)",
        "Cavity seen on the X-ray",
        "Reviewed and signed by Dr Ada Example on 28 November 2026",
        "Amended report (version 2)",
        "Gum inflammation confirmed after a second look",
        FOOTER,
        "What these findings mean",
    ):
        assert expected in text_all, expected
    assert all(FOOTER in page for page in pages)  # the footer is on every page
    assert "Mouth ulcer" not in text_all and "Dental implant" not in text_all
    assert b"/DCTDecode" in pdf  # images embedded as JPEG, not raw pixels


def test_pdf_is_reproducible_with_invariant_and_compressed_by_default() -> None:
    report = sample_report()
    images = sample_images(report)
    first = render_pdf(report, images, compress=False, invariant=True)
    assert first == render_pdf(report, images, compress=False, invariant=True)
    assert "Amended report" not in pdf_text(first)
    compressed = render_pdf(report, images)
    assert compressed.startswith(b"%PDF") and "Tooth decay (caries)" in pdf_text(compressed)
    assert b"/FlateDecode" in compressed and b"/FlateDecode" not in first
    assert b"Lovelace" not in compressed  # nor in the metadata
    assert len(compressed) < len(first)


def test_pdf_survives_markup_in_names_missing_images_and_no_images() -> None:
    report = sample_report()
    report["patient"]["given_name"] = "Ada <b>& Co</b>"
    report["clinic"]["name"] = "Smile & <Co>"
    pdf = render_pdf(report, {}, compress=False, invariant=True)  # no image data at all
    text = pdf_text(pdf)
    assert "Ada <b>& Co</b> Lovelace" in text and "Smile & <Co>" in text
    assert "This image is not available." in text
    report["images"] = []
    assert render_pdf(report, {}).startswith(b"%PDF")


def test_pdf_renders_names_beyond_latin_1_with_an_embedded_font() -> None:
    report = sample_report()
    report["patient"]["given_name"] = "Łucja Žofie"
    report["patient"]["family_name"] = "Dvořák-Øster Σοφία Юлия"
    report["clinic"]["name"] = "Zahnarztpraxis Großmann & Şahin"
    report["signed_by"]["name"] = "Dr Ağça Nguyễn"
    pdf = render_pdf(report, sample_images(report), compress=False, invariant=True)
    text = " ".join(pdf_text(pdf).split())
    assert "Łucja Žofie Dvořák-Øster Σοφία Юлия" in text
    assert "Zahnarztpraxis Großmann & Şahin" in text
    assert "Reviewed and signed by Dr Ağça Nguyễn" in text
    # all text is drawn in embedded DejaVu subsets; reportlab's own Helvetica (F1, Latin-1 only, not embedded)
    # appears only in the empty state-setting text blocks it writes at each page start
    shown = [block for block in re.findall(rb"BT (.*?) ET", pdf, re.S) if re.search(rb"\) ?Tj|\] ?TJ", block)]
    assert shown and not any(b"/F1 " in block for block in shown)
    fonts = re.findall(rb"/BaseFont /([A-Z]{6}\+[\w-]+)", pdf)
    assert fonts and all(b"DejaVuSans" in f for f in fonts), fonts
    assert pdf.count(b"/FontFile2") == len(set(fonts))


def test_pdf_with_a_very_tall_image_fits_the_page() -> None:
    report = sample_report()
    report["images"] = report["images"][:1]
    images = {report["images"][0]["id"]: Image.new("RGB", (300, 3000), (200, 120, 120))}
    assert render_pdf(report, images).startswith(b"%PDF")


# --- annotate -----------------------------------------------------------------------------------------------------


def test_annotate_draws_confirmed_box_in_condition_colour_at_the_right_place() -> None:
    image = Image.new("RGB", (400, 300), GREY)
    findings = [_finding("caries", [0.25, 0.2, 0.5, 0.6])]  # x 100..299, y 60..239
    out = annotate(image, findings)
    assert out.mode == "RGB" and out.size == image.size
    assert image.getpixel((100, 150)) == GREY  # the input is untouched
    for point in ((100, 150), (101, 150), (299, 150), (200, 60), (200, 239)):  # the four edges
        assert out.getpixel(point) == VERMILLION, point
    assert out.getpixel((200, 150)) == GREY  # inside the box
    assert out.getpixel((50, 280)) == GREY  # far outside it
    label = np.asarray(out.crop((100, 30, 200, 58))).reshape(-1, 3)
    assert (label == VERMILLION).all(axis=1).sum() > 200  # the label sits just above the box


def test_annotate_skips_rejected_and_pending_unless_asked() -> None:
    image = Image.new("RGB", (400, 300), GREY)
    rejected = _finding("caries", [0.25, 0.2, 0.5, 0.6], status="rejected")
    pending = _finding("gingivitis", [0.25, 0.2, 0.5, 0.6], status="pending")
    no_box = _finding("caries", None)
    out = annotate(image, [rejected, pending, no_box])
    assert np.array_equal(np.asarray(out), np.asarray(image))
    shown = annotate(image, [rejected, pending], show_pending=True)
    assert shown.getpixel((100, 150)) == BLUE


def test_clinician_findings_get_a_dashed_outline() -> None:
    image = Image.new("RGB", (400, 300), GREY)
    out = annotate(image, [_finding("gingivitis", [0.25, 0.2, 0.5, 0.6], source="clinician")])
    top_edge = [out.getpixel((x, 61)) for x in range(100, 300)]
    assert top_edge.count(BLUE) > 40
    assert len([p for p in top_edge if p != BLUE]) > 40  # gaps between the dashes


def test_sixteen_bit_xray_is_windowed_not_white() -> None:
    xray = xray_16bit()
    assert np.asarray(xray.convert("L")).min() == 255  # what a direct convert("L") would show
    out = annotate(xray, [_finding("cavity", [0.1, 0.2, 0.3, 0.25])])  # x 80..319, y 80..179
    assert out.mode == "RGB"
    grey = np.asarray(out.convert("L"), dtype=np.float64)
    assert 60 < grey.mean() < 200 and grey.std() > 40
    assert grey[:20].mean() < 20 and grey[-20:].mean() > 235  # dark top, bright bottom: the full range
    assert out.getpixel((80, 130)) == ORANGE and out.getpixel((319, 130)) == ORANGE
    assert xray.mode == "I;16"  # the input is untouched


@pytest.mark.parametrize("mode", ["L", "I", "F", "RGBA", "P"])
def test_other_modes_convert_to_rgb(mode: str) -> None:
    if mode in ("I", "F"):
        image = Image.fromarray(
            np.linspace(0, 50000, 100 * 80).reshape(80, 100).astype("int32" if mode == "I" else "float32")
        )
    else:
        image = Image.new("RGB", (100, 80), (10, 200, 30)).convert(mode)
    out = to_display_rgb(image)
    assert out.mode == "RGB" and out.size == (100, 80)
    if mode in ("I", "F"):
        grey = np.asarray(out.convert("L"))
        assert grey.min() < 10 and grey.max() > 245
