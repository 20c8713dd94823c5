"""The report's images as the patient sees them: a display copy, and the boxes of findings drawn on it.

Plain Python (no Django): ``to_display_rgb`` makes an RGB copy fit for display (16-bit X-rays windowed),
``annotate`` draws the boxes of CONFIRMED findings in their condition's colour with the plain-language name.
Rejected suggestions are never drawn; pending ones only when a caller asks (``annotate(..., show_pending=True)``,
e.g. for a clinician's preview) -- a signed report has none.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .report_wording import condition_colour, plain_name

#: Percentiles of the raw values used to window 16-bit X-rays for display.
WINDOW_PERCENTILES = (0.5, 99.5)

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
