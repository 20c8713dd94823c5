"""The patient-friendly report of a signed visit: annotated images, plain-language findings, PDF.

Plain Python (no Django): the caller passes the signed report snapshot (see ``analysis.reports.report_snapshot``)
and the decoded images. ``render_pdf`` lays out exactly what ``render_html_context`` returns, so the HTML page
and the PDF say the same thing.

Only CONFIRMED findings are shown to the patient. Rejected suggestions are never drawn; pending ones only when a
caller asks (``annotate(..., show_pending=True)``, e.g. for a clinician's preview) -- a signed report has none.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from reportlab.lib import colors
from reportlab.lib.enums import TA_CENTER
from reportlab.lib.fonts import addMapping
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.platypus import Image as RLImage
from reportlab.platypus import KeepTogether, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from core import conditions

# --- wording ------------------------------------------------------------------------------------------------------

MODALITY_LABELS: dict[str, str] = {"photo": "Photograph of the inside of your mouth", "xray": "Dental X-ray"}

TITLE = "Your dental imaging report"
FOOTER = "AI suggestions were reviewed by your dentist; this report is not a diagnosis on its own."
NO_FINDINGS = "Your dentist did not confirm any problems on this image."
# Per image whose analysis did not run (snapshot ``analysis``: ``failed`` or ``none``; older snapshots lack it).
NOT_ANALYSED = {
    "failed": "The AI software could not check this image; only what your dentist noted is listed.",
    "none": "The AI software does not check this kind of image; only what your dentist noted is listed.",
}
NO_FINDINGS_NOT_ANALYSED = "Your dentist did not note any problems on this image."
SOURCE_TEXT = {
    "model": "Suggested by the AI and confirmed by your dentist",
    "clinician": "Noted by your dentist",
}
_MONTHS = ("January February March April May June July August September October November December").split()

#: Longest side, in pixels, of an image embedded in the PDF (about 290 dpi across the A4 text width).
PDF_IMAGE_MAX_SIDE = 2000
#: Percentiles of the raw values used to window 16-bit X-rays for display.
WINDOW_PERCENTILES = (0.5, 99.5)


def plain_name(condition: str) -> str:
    """Patient-facing name; a signed snapshot written before the vocabulary may hold an old model label."""
    return conditions.patient_name(conditions.canonical(condition))


def condition_colour(condition: str) -> str:
    return conditions.colour(conditions.canonical(condition))


def human_date(value: str | dt.date | dt.datetime | None) -> str:
    """``2026-11-28`` (or a timestamp) as ``28 November 2026``, independent of the server's locale."""
    if not value:
        return ""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value) if "T" in value else dt.date.fromisoformat(value)
    if isinstance(value, dt.datetime):
        value = value.date()
    return f"{value.day} {_MONTHS[value.month - 1]} {value.year}"


def confirmed(findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for f in findings if f.get("status") == "confirmed"]


# --- shared content -----------------------------------------------------------------------------------------------


def render_html_context(report: dict[str, Any]) -> dict[str, Any]:
    """The plain-language content of a signed report as data, for the HTML template (and the PDF).

    Keys: ``title``, ``clinic_name``, ``patient_name``, ``date_of_birth``, ``visit_date`` (human dates),
    ``version``, ``amendment`` (None, or ``{"notice", "reason", "version"}``), ``images`` (per image: ``id``,
    ``number``, ``modality``, ``modality_label``, ``findings`` -- each ``id``, ``box``, ``condition``, ``name``,
    ``explanation``, ``colour``, ``source``, ``source_text`` -- ``analysis_note`` when the AI software did not
    check the image, and ``no_findings_text`` when empty),
    ``explanations`` (one per condition found, in order of first appearance), ``signed_by_line``, ``footer``.
    """
    patient = report.get("patient") or {}
    signer = report.get("signed_by") or {}
    images = []
    seen: dict[str, dict[str, str]] = {}
    for number, image in enumerate(report.get("images") or [], start=1):
        findings = []
        for finding in confirmed(image.get("findings") or []):
            condition = conditions.canonical(finding["condition"])
            source = finding.get("source") or "model"
            item = {
                "id": finding.get("id"),
                "box": finding.get("box"),
                "condition": condition,
                "name": plain_name(condition),
                "explanation": conditions.explanation(condition),
                "colour": condition_colour(condition),
                "source": source,
                "source_text": SOURCE_TEXT.get(source, SOURCE_TEXT["clinician"]),
            }
            findings.append(item)
            seen.setdefault(
                condition,
                {
                    "condition": condition,
                    "name": item["name"],
                    "explanation": item["explanation"],
                    "colour": item["colour"],
                },
            )
        modality = image.get("modality") or ""
        not_analysed = NOT_ANALYSED.get(image.get("analysis") or "done", "")
        images.append(
            {
                "id": image.get("id"),
                "number": number,
                "modality": modality,
                "modality_label": MODALITY_LABELS.get(modality, "Image"),
                "findings": findings,
                "analysis_note": not_analysed,
                "no_findings_text": "" if findings else (NO_FINDINGS_NOT_ANALYSED if not_analysed else NO_FINDINGS),
            }
        )
    amendment = None
    if report.get("amends"):
        version = report.get("version")
        amendment = {
            "version": version,
            "notice": f"Amended report (version {version})",
            "reason": (report.get("amendment_reason") or "").strip(),
        }
    signed_on = human_date(report.get("signed_at"))
    signed_by = signer.get("name") or signer.get("email") or "your dentist"
    full_name = " ".join(p for p in (patient.get("given_name"), patient.get("family_name")) if p)
    return {
        "title": TITLE,
        "clinic_name": (report.get("clinic") or {}).get("name", ""),
        "patient_name": full_name,
        "date_of_birth": human_date(patient.get("date_of_birth")),
        "visit_date": human_date((report.get("visit") or {}).get("date")),
        "version": report.get("version"),
        "amendment": amendment,
        "images": images,
        "explanations": list(seen.values()),
        "signed_by_line": f"Reviewed and signed by {signed_by} on {signed_on}"
        if signed_on
        else f"Reviewed and signed by {signed_by}",
        "footer": FOOTER,
    }


# --- images -------------------------------------------------------------------------------------------------------

_HIGH_DEPTH_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})


def to_display_rgb(image: Image.Image) -> Image.Image:
    """A new RGB copy fit for display. High-bit-depth greyscale (X-rays in ``I;16``/``I``/``F``) is windowed to
    the 0.5th-99.5th percentile of its values: ``convert("L")`` would clip everything above 255 to white."""
    if image.mode in _HIGH_DEPTH_MODES:
        arr = np.asarray(image).astype(np.float64)
        finite = arr[np.isfinite(arr)]
        if finite.size == 0:
            return Image.new("RGB", image.size)
        low, high = np.percentile(finite, WINDOW_PERCENTILES)
        if high <= low:
            low, high = float(finite.min()), float(finite.max())
        if high <= low:
            high = low + 1.0
        scaled = np.clip((np.nan_to_num(arr, nan=low) - low) * (255.0 / (high - low)), 0, 255)
        return Image.fromarray(np.round(scaled).astype(np.uint8), mode="L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode == "RGB":
        return image.copy()
    return image.convert("RGB")


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    value = hex_colour.lstrip("#")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)


def _text_colour(fill: tuple[int, int, int]) -> tuple[int, int, int]:
    r, g, b = fill
    return (0, 0, 0) if (0.299 * r + 0.587 * g + 0.114 * b) > 140 else (255, 255, 255)


def _halo_colour(fill: tuple[int, int, int]) -> tuple[int, int, int]:
    return (255, 255, 255) if _text_colour(fill) == (255, 255, 255) else (0, 0, 0)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow built without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _dashed_rectangle(
    draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], fill: tuple[int, int, int], width: int, dash: int
) -> None:
    x0, y0, x1, y1 = box
    for x in range(x0, x1 + 1, 2 * dash):
        end = min(x + dash - 1, x1)
        draw.rectangle((x, y0, end, y0 + width - 1), fill=fill)
        draw.rectangle((x, y1 - width + 1, end, y1), fill=fill)
    for y in range(y0, y1 + 1, 2 * dash):
        end = min(y + dash - 1, y1)
        draw.rectangle((x0, y, x0 + width - 1, end), fill=fill)
        draw.rectangle((x1 - width + 1, y, x1, end), fill=fill)


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _pixel_box(box: list[float], size: tuple[int, int]) -> tuple[int, int, int, int] | None:
    width, height = size
    try:
        x, y, w, h = (float(v) for v in box)
    except (TypeError, ValueError):
        return None
    x0 = max(0, min(width - 1, round(x * width)))
    y0 = max(0, min(height - 1, round(y * height)))
    x1 = max(0, min(width - 1, round((x + w) * width) - 1))
    y1 = max(0, min(height - 1, round((y + h) * height) - 1))
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def annotate(image: Image.Image, findings: list[dict[str, Any]], *, show_pending: bool = False) -> Image.Image:
    """Draw the boxes of confirmed findings (and pending ones when asked) on an RGB copy of ``image``.

    One Okabe-Ito colour per condition with a thin contrasting halo, a label with the plain-language name;
    findings added by a clinician get a dashed outline, pending ones a thin outline and "(not reviewed yet)".
    Rejected findings and findings without a box are never drawn. The input image is not modified.
    """
    out = to_display_rgb(image)
    draw = ImageDraw.Draw(out)
    short = min(out.size)
    line = max(3, round(short / 160))
    font_size = max(11, round(short / 40))
    font = _font(font_size)
    pad = max(2, font_size // 5)
    wanted = {"confirmed", "pending"} if show_pending else {"confirmed"}
    # Pending first, so confirmed boxes end up on top where they overlap.
    drawable = sorted(
        (f for f in findings if f.get("status") in wanted and f.get("box")),
        key=lambda f: f.get("status") == "confirmed",
    )
    labels: list[tuple[str, tuple[int, int, int, int], tuple[int, int, int], tuple[int, int, int], int]] = []
    for finding in drawable:
        box = _pixel_box(finding["box"], out.size)
        if box is None:
            continue
        pending = finding.get("status") == "pending"
        fill = _rgb(condition_colour(finding.get("condition", "")))
        halo = _halo_colour(fill)
        width = max(1, line // 2) if pending else line
        x0, y0, x1, y1 = box
        draw.rectangle((x0 - 1, y0 - 1, x1 + 1, y1 + 1), outline=halo, width=width + 2)
        if pending or finding.get("source") == "clinician":
            draw.rectangle((x0, y0, x1, y1), outline=halo, width=width)
            _dashed_rectangle(draw, box, fill, width, dash=max(4, 3 * line))
        else:
            draw.rectangle((x0, y0, x1, y1), outline=fill, width=width)
        label = plain_name(finding.get("condition", "")) + (" (not reviewed yet)" if pending else "")
        labels.append((label, box, fill, halo, width))
    # Labels after all boxes, so no outline crosses a label; each label avoids those already placed.
    placed: list[tuple[int, int, int, int]] = []
    for label, (x0, y0, _x1, y1), fill, halo, width in reversed(labels):  # confirmed ones choose first
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        label_w, label_h = right - left + 2 * pad, bottom - top + 2 * pad
        lx = max(0, min(x0, out.width - label_w))
        step = label_h + 1
        above, below, inside = y0 - step, y1 + 2, y0 + width
        candidates = [above, below, inside]
        candidates += [y for k in range(1, 8) for y in (above - k * step, below + k * step, inside + k * step)]
        fitting = [y for y in candidates if 0 <= y <= out.height - label_h]
        ly = next(
            (y for y in fitting if not any(_overlaps((lx, y, lx + label_w, y + label_h), r) for r in placed)),
            fitting[0] if fitting else 0,
        )
        placed.append((lx, ly, lx + label_w, ly + label_h))
        draw.rectangle((lx, ly, lx + label_w - 1, ly + label_h - 1), fill=fill, outline=halo)
        draw.text((lx + pad - left, ly + pad - top), label, fill=_text_colour(fill), font=font)
    return out


# --- PDF ----------------------------------------------------------------------------------------------------------

#: DejaVu Sans (``analysis/fonts``, Bitstream Vera licence), embedded as a subset: the PDF base fonts (Helvetica)
#: cover only Latin-1, so names such as "Łucja Dvořák" or "Юлия" came out as empty boxes. DejaVu covers Latin,
#: Greek, Cyrillic and more, but not Chinese, Japanese or Korean.
FONT = "DejaVuSans"
FONT_BOLD = "DejaVuSans-Bold"
_FONT_DIR = Path(__file__).resolve().parent / "fonts"


@functools.cache
def _register_fonts() -> None:
    pdfmetrics.registerFont(TTFont(FONT, str(_FONT_DIR / "DejaVuSans.ttf")))
    pdfmetrics.registerFont(TTFont(FONT_BOLD, str(_FONT_DIR / "DejaVuSans-Bold.ttf")))
    # <b> in a paragraph picks the bold face; there is no italic face, so <i> keeps the upright one
    addMapping(FONT, 0, 0, FONT)
    addMapping(FONT, 1, 0, FONT_BOLD)
    addMapping(FONT, 0, 1, FONT)
    addMapping(FONT, 1, 1, FONT_BOLD)


def _styles() -> dict[str, ParagraphStyle]:
    _register_fonts()
    base = getSampleStyleSheet()
    body = ParagraphStyle("body", parent=base["BodyText"], fontName=FONT, fontSize=10.5, leading=14)
    return {
        "title": ParagraphStyle("title", parent=base["Title"], fontName=FONT_BOLD, fontSize=18, spaceAfter=4),
        "clinic": ParagraphStyle("clinic", parent=body, fontSize=12, alignment=TA_CENTER, spaceAfter=10),
        "h2": ParagraphStyle("h2", parent=base["Heading2"], fontName=FONT_BOLD, fontSize=13, spaceBefore=10),
        "body": body,
        "small": ParagraphStyle("small", parent=body, fontSize=9, leading=12, textColor=colors.HexColor("#333333")),
        "notice": ParagraphStyle("notice", parent=body, fontName=FONT_BOLD, textColor=colors.HexColor("#7a3b00")),
    }


def _pdf_image(image: Image.Image, findings: list[dict[str, Any]], max_width: float, max_height: float) -> RLImage:
    rgb = to_display_rgb(image)
    rgb.thumbnail((PDF_IMAGE_MAX_SIDE, PDF_IMAGE_MAX_SIDE), Image.Resampling.LANCZOS)
    drawn = annotate(rgb, findings)
    buffer = io.BytesIO()
    drawn.save(buffer, format="JPEG", quality=88)
    buffer.seek(0)
    scale = min(max_width / drawn.width, max_height / drawn.height)
    return RLImage(buffer, width=drawn.width * scale, height=drawn.height * scale)


def _finding_row(item: dict[str, Any], styles: dict[str, ParagraphStyle]) -> list[Any]:
    text = f"<b>{escape(item['name'])}</b><br/><font size=9>{escape(item['source_text'])}</font>"
    return ["", Paragraph(text, styles["body"])]


def render_pdf(
    report: dict[str, Any],
    images: dict[str, Image.Image],
    *,
    compress: bool = True,
    invariant: bool = False,
) -> bytes:
    """The patient-friendly PDF (A4) of a signed report.

    ``images`` maps image id to the decoded image (any mode; 16-bit X-rays are windowed). ``compress=False``
    writes uncompressed page streams and ``invariant=True`` a byte-for-byte reproducible file (fixed dates and
    ids) -- for tests that search the PDF bytes for text.
    """
    content = render_html_context(report)
    styles = _styles()
    buffer = io.BytesIO()
    margin = 18 * mm
    doc = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        leftMargin=margin,
        rightMargin=margin,
        topMargin=margin,
        bottomMargin=margin + 8 * mm,
        # No patient identity in the metadata: file browsers and indexers show it without opening the file.
        title=f"Dental imaging report, visit of {content['visit_date']}",
        author=content["clinic_name"],
        creator="DentalScan",
        pageCompression=1 if compress else 0,
        invariant=1 if invariant else 0,
    )
    width = doc.width
    story: list[Any] = [
        Paragraph(escape(content["title"]), styles["title"]),
        Paragraph(escape(content["clinic_name"]), styles["clinic"]),
    ]
    details = [
        ["Patient", content["patient_name"]],
        ["Date of birth", content["date_of_birth"]],
        ["Visit date", content["visit_date"]],
    ]
    table = Table(
        [[Paragraph(f"<b>{escape(k)}</b>", styles["body"]), Paragraph(escape(v), styles["body"])] for k, v in details],
        colWidths=[35 * mm, width - 35 * mm],
    )
    table.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("BOTTOMPADDING", (0, 0), (-1, -1), 2)]))
    story += [table, Spacer(1, 4 * mm)]
    if content["amendment"]:
        amendment = content["amendment"]
        lines = [Paragraph(escape(amendment["notice"]), styles["notice"])]
        if amendment["reason"]:
            lines.append(Paragraph(f"Reason for the change: {escape(amendment['reason'])}", styles["body"]))
        box = Table([[lines]], colWidths=[width])
        box.setStyle(
            TableStyle(
                [
                    ("BOX", (0, 0), (-1, -1), 1, colors.HexColor("#E69F00")),
                    ("BACKGROUND", (0, 0), (-1, -1), colors.HexColor("#FFF4DC")),
                    ("LEFTPADDING", (0, 0), (-1, -1), 6),
                    ("TOPPADDING", (0, 0), (-1, -1), 5),
                    ("BOTTOMPADDING", (0, 0), (-1, -1), 5),
                ]
            )
        )
        story += [box, Spacer(1, 4 * mm)]

    max_image_height = doc.height * 0.62
    snapshot_images = {image.get("id"): image for image in report.get("images") or []}
    total = len(content["images"])
    for item in content["images"]:
        block: list[Any] = [
            Paragraph(escape(f"Image {item['number']} of {total}: {item['modality_label']}"), styles["h2"])
        ]
        source = images.get(item["id"])
        if source is None:
            block.append(Paragraph("This image is not available.", styles["small"]))
        else:
            findings = snapshot_images.get(item["id"], {}).get("findings") or []
            block += [_pdf_image(source, findings, width, max_image_height), Spacer(1, 3 * mm)]
        if item["analysis_note"]:
            block.append(Paragraph(escape(item["analysis_note"]), styles["body"]))
        if item["findings"]:
            rows = [_finding_row(f, styles) for f in item["findings"]]
            findings_table = Table(rows, colWidths=[5 * mm, width - 5 * mm])
            style = [("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (1, 0), (1, -1), 6)]
            for row, finding in enumerate(item["findings"]):
                style += [
                    ("BACKGROUND", (0, row), (0, row), colors.HexColor(finding["colour"])),
                    ("LINEBELOW", (0, row), (0, row), 3, colors.white),
                ]
            findings_table.setStyle(TableStyle(style))
            block.append(findings_table)
        else:
            block.append(Paragraph(escape(item["no_findings_text"]), styles["body"]))
        story.append(KeepTogether(block))

    if content["explanations"]:
        story.append(Paragraph("What these findings mean", styles["h2"]))
        for item in content["explanations"]:
            text = f"<b>{escape(item['name'])}.</b> {escape(item['explanation'])}"
            story += [Paragraph(text, styles["body"]), Spacer(1, 2 * mm)]
    story += [Spacer(1, 5 * mm), Paragraph(f"<b>{escape(content['signed_by_line'])}</b>", styles["body"])]

    footer = content["footer"]

    def on_page(canvas: Any, document: Any) -> None:
        canvas.saveState()
        canvas.setFont(FONT, 8.5)
        canvas.setFillColor(colors.HexColor("#333333"))
        canvas.drawString(margin, 12 * mm, footer)
        canvas.drawRightString(A4[0] - margin, 12 * mm, f"Page {document.page}")
        canvas.restoreState()

    doc.build(story, onFirstPage=on_page, onLaterPages=on_page)
    return buffer.getvalue()
