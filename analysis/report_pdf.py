"""The patient-friendly report of a signed visit as a PDF (A4).

Plain Python (no Django): the caller passes the signed report snapshot (see ``analysis.reports.report_snapshot``)
and the decoded images. ``render_pdf`` lays out exactly what ``report_wording.render_html_context`` returns, so the
HTML page and the PDF say the same thing; the images carry the boxes that ``report_images.annotate`` draws.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from PIL import Image
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

from .report_images import annotate, to_display_rgb
from .report_wording import render_html_context

#: Longest side, in pixels, of an image embedded in the PDF (about 290 dpi across the A4 text width).
PDF_IMAGE_MAX_SIDE = 2000

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

    by_tooth = content["by_tooth"]
    if by_tooth["teeth"] or by_tooth["unassigned"]:
        story.append(Paragraph("Your teeth", styles["h2"]))
        groups = [(t["heading"], t["problems"], t["status"]) for t in by_tooth["teeth"]]
        if by_tooth["unassigned"]:
            unassigned = by_tooth["unassigned"]
            groups.append(
                (
                    content["unassigned_text"],
                    [f for f in unassigned if f["kind"] != "restoration"],
                    [f for f in unassigned if f["kind"] == "restoration"],
                )
            )
        rows = []
        for heading, problems, status in groups:
            lines = [
                f"<b>{escape(f['patient_name'])}</b>"
                + (f" (surfaces {escape(f['surfaces'])})" if f["surfaces"] else "")
                for f in problems
            ]
            lines += [
                f"{escape(f['patient_name'])} <font size=9>· {escape(content['status_text'])}</font>" for f in status
            ]
            rows.append(
                [Paragraph(f"<b>{escape(heading)}</b>", styles["body"]), Paragraph("<br/>".join(lines), styles["body"])]
            )
        teeth_table = Table(rows, colWidths=[75 * mm, width - 75 * mm])
        teeth_table.setStyle(
            TableStyle(
                [
                    ("VALIGN", (0, 0), (-1, -1), "TOP"),
                    ("LINEBELOW", (0, 0), (-1, -1), 0.5, colors.HexColor("#dde3ea")),
                    ("BOTTOMPADDING", (0, 0), (-1, -1), 4),
                ]
            )
        )
        story += [teeth_table, Spacer(1, 4 * mm)]

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
