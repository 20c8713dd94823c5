"""The one intake pipeline for uploaded images, shared by the HTML upload and the REST API.

``sanitize_upload`` takes the raw bytes of an upload and returns a freshly built PNG made from decoded
pixels only, or raises ``IntakeError`` with a stable machine code, a sentence for clinic staff and an HTTP
status. ``display_variants`` makes the JPEG preview and thumbnail of such a PNG: a worker does that after the
upload has been answered (``patients.services.image_derive``).

What it guarantees (see /shared/SECURITY.md, "Hostile and odd uploads"):

* the byte limit is checked before reading (when the size is known) and again while reading;
* the type is decided by decoding, never by the file name or Content-Type; only JPEG, PNG,
  MPO (first frame), HEIC/HEIF (primary image) and, for X-rays, uncompressed DICOM are accepted;
* the pixel limit is checked after the header is parsed and before any pixel is decoded, and
  Pillow's decompression-bomb warning is an error here;
* every image is decoded in full (truncated files are rejected, never padded with grey);
* EXIF orientation is applied, colours go to sRGB, alpha is flattened on white, and the output
  is rebuilt from raw pixels so that no metadata (EXIF/GPS, ICC, XMP, comments, text chunks,
  trailing bytes, DICOM tags or preamble) survives;
* 16-bit greyscale X-rays keep their exact values; previews of 16-bit data are windowed
  explicitly (``window``), never clipped by ``convert("L")``.

Nothing is written to disk and nothing from Django is imported: limits are arguments.
"""

from __future__ import annotations

import contextlib
import io
import re
import unicodedata
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import BinaryIO

import numpy as np
import pillow_heif
import pydicom
import pydicom.errors
import pydicom.filereader
import pydicom.multival
import pydicom.uid
from PIL import Image, ImageCms, ImageOps

from core.errors import ApplicationError

# The only global side effect: Pillow learns to open HEIF files (no option is changed).
pillow_heif.register_heif_opener()

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "MODALITIES",
    "IntakeError",
    "SanitizedImage",
    "display_variants",
    "safe_display_name",
    "sanitize_upload",
]

DEFAULT_MAX_BYTES = 40 * 1024 * 1024
DEFAULT_MAX_PIXELS = 50_000_000
MODALITIES = ("photo", "xray")

PREVIEW_SIZE = 1024
THUMBNAIL_SIZE = 256
PREVIEW_QUALITY = 88
THUMBNAIL_QUALITY = 85
WINDOW_PERCENTILES = (0.5, 99.5)

# Pillow format ids tried when opening; MPO comes back through the JPEG plugin.
_PILLOW_FORMATS = ["JPEG", "PNG", "HEIF"]
_ACCEPTED_PILLOW_FORMATS = frozenset({"JPEG", "PNG", "MPO", "HEIF"})
_DICOM_TRANSFER_SYNTAXES = frozenset({pydicom.uid.ImplicitVRLittleEndian, pydicom.uid.ExplicitVRLittleEndian})
_MAX_ICC_BYTES = 1024 * 1024
_READ_CHUNK = 1024 * 1024
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})


class IntakeError(ApplicationError):
    """An upload that cannot be accepted; ``code`` is stable, ``message`` is for clinic staff."""

    def __repr__(self) -> str:
        return f"IntakeError(code={self.code!r}, status={self.status}, message={self.message!r})"


@dataclass(frozen=True)
class SanitizedImage:
    data: bytes  # PNG rebuilt from pixels only, no metadata chunks
    width: int
    height: int
    mode: str  # "RGB", "L" or "I;16"
    bit_depth: int  # 8 or 16
    original_format: str  # "JPEG", "PNG", "MPO", "HEIF", "DICOM"
    window: tuple[int, int] | None  # raw (low, high) used to window 16-bit data for display
    pixels: Image.Image | None = field(default=None, compare=False)  # the decoded pixels of ``data``
    # An X-ray decoded from a colour image: a small RGB copy (longest side <= COLOUR_HINT_SIZE) of that image
    # before it was made grey, so the layer above can tell a colour photo sent as an X-ray (kept nowhere).
    colour_hint: Image.Image | None = field(default=None, compare=False)

    def __repr__(self) -> str:  # keep the bytes out of logs and tracebacks
        return (
            f"SanitizedImage({self.original_format}->{self.mode} {self.width}x{self.height}, "
            f"{len(self.data)} bytes, window={self.window})"
        )


# --------------------------------------------------------------------------- public API


def sanitize_upload(
    stream: BinaryIO,
    *,
    modality: str,
    size: int | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    dicom_photo: bool = False,
) -> SanitizedImage:
    """Read, validate, decode and rebuild one uploaded image. Raises ``IntakeError``.

    ``dicom_photo``: a DICOM file may be a photo (a VL photographic image received over the DICOM network, whose
    SOP class says it is one); uploads keep refusing DICOM photos."""
    if modality not in MODALITIES:
        raise IntakeError(
            "invalid_modality",
            "Choose whether the image is a photo or an X-ray.",
            400,
        )
    if size is not None and size > max_bytes:
        raise _too_large(size, max_bytes)

    data = _bounded_read(stream, max_bytes)
    if not data:
        raise IntakeError("empty_file", "The file is empty (0 bytes); choose the image again and re-upload it.", 400)

    if _is_dicom(data) and modality != "xray" and not dicom_photo:
        raise IntakeError(
            "dicom_not_photo",
            "This file is a DICOM image; DICOM files can only be uploaded as X-rays.",
            415,
        )
    try:
        if _is_dicom(data):
            image, original_format = _decode_dicom(data, max_pixels), "DICOM"
        else:
            image, original_format = _decode_pillow(data, modality, max_pixels)
        hint = _colour_hint(image) if modality == "xray" else None
        image, window = _normalise(image, modality)
        return replace(_finish(image, original_format, window), colour_hint=hint)
    except (IntakeError, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - last resort: a decoder tripped over hostile bytes; never a 500
        raise _corrupt(None) from exc


def safe_display_name(name: str | None) -> str:
    """A file name that is safe to show (and to put in a Content-Disposition): the base name only,
    without path parts, control/format characters or NULs, at most 100 characters; "upload" when
    nothing is left. It is display text only: storage never uses client names."""
    if not name:
        return "upload"
    text = unicodedata.normalize("NFC", str(name))
    text = re.split(r"[/\\]", text)[-1]
    text = re.sub(r"\s", " ", text)  # tabs and line breaks become spaces (collapsed below)
    text = "".join(ch for ch in text if unicodedata.category(ch) not in {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
    text = re.sub(r'[<>:"|?*]', "_", text)
    text = re.sub(r"\s+", " ", text).strip()
    text = text.lstrip(". ").rstrip(". ")
    if not text:
        return "upload"
    if len(text) > 100:
        stem, dot, ext = text.rpartition(".")
        if dot and stem and 0 < len(ext) <= 10:
            text = stem[: 100 - len(ext) - 1].rstrip(". ") + "." + ext
        else:
            text = text[:100].rstrip(". ")
    return text or "upload"


# --------------------------------------------------------------------------- reading


def _mb(n: int) -> str:
    value = n / (1024 * 1024)
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}".rstrip("0").rstrip(".")


def _too_large(size: int, max_bytes: int) -> IntakeError:
    if size > max_bytes and size - max_bytes > 1:
        detail = f"This file is {_mb(size)} MB; the limit is {_mb(max_bytes)} MB."
    else:
        detail = f"This file is larger than the {_mb(max_bytes)} MB limit."
    return IntakeError("file_too_large", f"{detail} Export a smaller image and try again.", 413)


def _bounded_read(stream: BinaryIO, max_bytes: int) -> bytes:
    """Read at most ``max_bytes + 1`` bytes; one byte more than the limit is a rejection."""
    buf = bytearray()
    limit = max_bytes + 1
    try:
        while len(buf) < limit:
            chunk = stream.read(min(_READ_CHUNK, limit - len(buf)))
            if not chunk:
                break
            buf += chunk
    except (OSError, ValueError) as exc:  # client disconnect, closed file...
        raise IntakeError("read_failed", "The upload was interrupted before it finished; please try again.") from exc
    if len(buf) > max_bytes:
        raise _too_large(len(buf), max_bytes)
    return bytes(buf)


# --------------------------------------------------------------------------- sniffing (for messages)

_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1"}


def _is_dicom(data: bytes) -> bool:
    return len(data) >= 132 and data[128:132] == b"DICM"


def _ftyp_brands(data: bytes) -> list[bytes]:
    if len(data) < 16 or data[4:8] != b"ftyp":
        return []
    box = min(int.from_bytes(data[:4], "big"), 256, len(data))
    brands = [data[8:12]]
    brands += [data[i : i + 4] for i in range(16, box - 3, 4)]
    return brands


def _sniff(data: bytes) -> str | None:
    """What the bytes look like, only to choose the right message: "JPEG", "PNG" or "HEIF" for the
    accepted families, otherwise a phrase such as "a TIFF image", or None when unknown."""
    head = data[:4096]
    low = head.lower().lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    brands = _ftyp_brands(data)
    if brands:
        if b"avif" in brands or b"avis" in brands:
            return "an AVIF image"
        if any(b in _HEIF_BRANDS for b in brands):
            return "HEIF"
        return "a video (MP4/MOV)"
    for magic, label in _MAGIC:
        if head.startswith(magic):
            return label
    if head[:4] == b"RIFF":
        return "a WebP image" if head[8:12] == b"WEBP" else "a RIFF media file"
    if b"<svg" in low[:1024]:
        return "an SVG drawing"
    if low.startswith((b"<!doctype html", b"<html", b"<head", b"<body", b"<script", b"<iframe")):
        return "a web page (HTML)"
    if low.startswith(b"<?php"):
        return "a PHP script"
    if low.startswith(b"<?xml"):
        return "an XML document"
    if low.startswith(b"#!"):
        return "a script"
    if data[:4] in (b"\x08\x00\x05\x00", b"\x08\x00\x16\x00", b"\x02\x00\x00\x00"):
        return "a DICOM file without the standard file header"
    if b"\x00" not in head:
        try:
            head.decode("utf-8")
        except UnicodeDecodeError:
            try:  # a multi-byte character may have been cut at 4096 bytes
                head[:-4].decode("utf-8")
            except UnicodeDecodeError:
                return None
        return "a text file"
    return None


_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"II+\x00", "a TIFF image"),
    (b"MM\x00+", "a TIFF image"),
    (b"BM", "a BMP image"),
    (b"%PDF-", "a PDF document"),
    (b"8BPS", "a Photoshop document"),
    (b"\x00\x00\x00\x0cjP  ", "a JPEG 2000 image"),
    (b"\xffO\xffQ", "a JPEG 2000 image"),
    (b"\x00\x00\x01\x00", "an icon file"),
    (b"qoif", "a QOI image"),
    (b"MZ", "a Windows program"),
    (b"\x7fELF", "a Linux program"),
    (b"\xca\xfe\xba\xbe", "a program"),
    (b"\xcf\xfa\xed\xfe", "a program"),
    (b"PK\x03\x04", "a ZIP archive or Office document"),
    (b"\x1f\x8b", "a compressed archive"),
    (b"Rar!", "a compressed archive"),
    (b"7z\xbc\xaf", "a compressed archive"),
    (b"\xd0\xcf\x11\xe0", "an Office document"),
    (b"{\\rtf", "an RTF document"),
)


def _allowed_list(modality: str) -> str:
    return "JPEG, PNG, HEIC or DICOM" if modality == "xray" else "JPEG, PNG or HEIC"


def _unsupported(kind: str | None, modality: str) -> IntakeError:
    allowed = _allowed_list(modality)
    if kind:
        msg = f"This file appears to be {kind}, which is not accepted; upload {allowed}."
    else:
        msg = f"This file is not an image format we accept; upload {allowed}."
    return IntakeError("unsupported_format", msg, 415)


# --------------------------------------------------------------------------- Pillow path


@contextlib.contextmanager
def _bomb_guard() -> Iterator[None]:
    """Pillow only *warns* between MAX_IMAGE_PIXELS and twice that; make it an error here.

    ``catch_warnings`` restores the filters on exit. (It edits the process-wide filter list while
    active; other threads would at most see a DecompressionBombWarning raised, which is safe.)"""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


def _pixels(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1e6:.3g} megapixels"
    return f"{n:,} pixels"


def _too_many_pixels(width: int, height: int, max_pixels: int) -> IntakeError:
    return IntakeError(
        "image_too_large",
        f"The image is {width} x {height} ({_pixels(width * height)}); the limit is {_pixels(max_pixels)}. "
        "Export it at a lower resolution.",
        400,
    )


def _bomb_error() -> IntakeError:
    return IntakeError(
        "image_too_large",
        "The image declares far more pixels than allowed (it may be a decompression bomb); it was not opened.",
        400,
    )


def _corrupt(kind: str | None = None) -> IntakeError:
    what = f"a {kind} image" if kind in ("JPEG", "PNG", "HEIF") else (kind or "an image")
    return IntakeError(
        "corrupt_image",
        f"This file looks like {what} but could not be decoded; it may be damaged. Export it again and re-upload.",
        400,
    )


def _truncated() -> IntakeError:
    return IntakeError(
        "truncated_image",
        "The image is incomplete (the file is cut short), so part of it would be missing. "
        "Upload the complete file again.",
        400,
    )


def _decode_error(exc: BaseException, kind: str | None) -> IntakeError:
    text = str(exc).lower()
    if isinstance(exc, EOFError) or "truncated" in text or "premature end" in text:
        return _truncated()
    return _corrupt(kind)


def _decode_pillow(data: bytes, modality: str, max_pixels: int) -> tuple[Image.Image, str]:
    kind = _sniff(data)
    if kind not in (None, "JPEG", "PNG", "HEIF"):
        raise _unsupported(kind, modality)

    with _bomb_guard():
        try:
            im = Image.open(io.BytesIO(data), formats=_PILLOW_FORMATS)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _bomb_error() from exc
        except Image.UnidentifiedImageError as exc:
            if kind is None:
                raise _unsupported(None, modality) from exc
            raise _corrupt(kind) from exc
        except Exception as exc:  # noqa: BLE001 - hostile input must never become a 500
            raise _decode_error(exc, kind) from exc

        fmt = im.format or ""
        if fmt not in _ACCEPTED_PILLOW_FORMATS:  # defensive: the formats list should prevent it
            raise _unsupported(f"a {fmt} image" if fmt else None, modality)

        width, height = im.size
        if width <= 0 or height <= 0:
            raise _corrupt(kind)
        if width * height > max_pixels:
            raise _too_many_pixels(width, height, max_pixels)

        frames = getattr(im, "n_frames", 1) or 1
        if fmt == "MPO":
            im.seek(0)  # the primary picture; the others (stereo/depth) are dropped
        elif frames > 1:
            raise IntakeError(
                "multiple_frames",
                f"This file contains {frames} images (animation, sequence or burst); upload a single image.",
                400,
            )

        try:
            im.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _bomb_error() from exc
        except Exception as exc:  # noqa: BLE001 - hostile input must never become a 500
            raise _decode_error(exc, kind) from exc

        try:
            oriented = ImageOps.exif_transpose(im)
        except Exception:  # noqa: BLE001 - unreadable EXIF: keep the pixels as stored
            oriented = im
        if oriented is None:  # pragma: no cover - only with in_place=True
            oriented = im
    return oriented, fmt


# --------------------------------------------------------------------------- DICOM path


def _dicom_int(ds: pydicom.Dataset, keyword: str, default: int | None = None) -> int | None:
    if keyword not in ds:
        return default
    value = ds[keyword].value
    if value is None or value == "":
        return default
    if isinstance(value, list | tuple | pydicom.multival.MultiValue):
        value = value[0] if len(value) else default
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise IntakeError(
            "corrupt_image",
            "This DICOM file has an invalid image description and cannot be read.",
            400,
        ) from exc


def _dicom_unsupported(detail: str) -> IntakeError:
    return IntakeError(
        "unsupported_dicom_image",
        f"This DICOM file {detail}; only single-frame greyscale (or RGB) X-ray images can be uploaded.",
        415,
    )


def _dicom_corrupt() -> IntakeError:
    return IntakeError("corrupt_image", "This DICOM file is damaged and cannot be read.", 400)


def _decode_dicom(data: bytes, max_pixels: int) -> Image.Image:
    """pydicom converts element values lazily, on access: any failure there is a damaged file."""
    try:
        return _decode_dicom_unchecked(data, max_pixels)
    except (IntakeError, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001
        raise _dicom_corrupt() from exc


def _decode_dicom_unchecked(data: bytes, max_pixels: int) -> Image.Image:
    corrupt = _dicom_corrupt

    # 1. File meta information only: the transfer syntax must be known before the dataset is
    #    parsed (a deflated dataset would be inflated in full by pydicom, a zip bomb).
    buf = io.BytesIO(data)
    try:
        pydicom.filereader.read_preamble(buf, False)  # the preamble is skipped and never kept
        meta = pydicom.filereader.read_dataset(
            buf, is_implicit_VR=False, is_little_endian=True, stop_when=lambda tag, vr, length: tag.group != 2
        )
        syntax = meta.get("TransferSyntaxUID")
    except Exception as exc:  # noqa: BLE001
        raise corrupt() from exc
    if not syntax:
        raise IntakeError(
            "corrupt_image", "This DICOM file does not say how its pixels are encoded and cannot be read.", 400
        )
    syntax = pydicom.uid.UID(str(syntax).strip("\x00 "))
    if syntax not in _DICOM_TRANSFER_SYNTAXES:
        known = syntax in pydicom.uid.UID_dictionary
        if known and (syntax.is_compressed or syntax.is_deflated):
            what = f"is compressed ({syntax.name})"
        elif known:
            what = f"uses the {syntax.name} encoding"
        else:
            what = "uses an unknown or private encoding"
        raise IntakeError(
            "unsupported_dicom_compression",
            f"This DICOM file {what}; export it uncompressed (Explicit VR Little Endian) and upload it again.",
            415,
        )

    # 2. Header without pixels: check the declared geometry against the limits.
    try:
        header = pydicom.dcmread(io.BytesIO(data), force=False, stop_before_pixels=True)
    except Exception as exc:  # noqa: BLE001
        raise corrupt() from exc
    rows = _dicom_int(header, "Rows")
    cols = _dicom_int(header, "Columns")
    if not rows or not cols:
        raise IntakeError(
            "dicom_without_image",
            "This DICOM file contains no image (it may be a report or a study description).",
            400,
        )
    frames = _dicom_int(header, "NumberOfFrames", 1) or 1
    samples = _dicom_int(header, "SamplesPerPixel", 1)
    bits_allocated = _dicom_int(header, "BitsAllocated")
    bits_stored = _dicom_int(header, "BitsStored", bits_allocated)
    high_bit = _dicom_int(header, "HighBit", (bits_stored or 1) - 1)
    signed = _dicom_int(header, "PixelRepresentation", 0)
    photometric = str(header.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()

    if rows < 0 or cols < 0:
        raise corrupt()
    if rows * cols > max_pixels:
        raise _too_many_pixels(cols, rows, max_pixels)
    if frames > 1:
        raise IntakeError(
            "multiple_frames",
            f"This DICOM file contains {frames} frames (a series or volume); upload a single X-ray image.",
            400,
        )
    if bits_allocated not in (8, 16):
        raise _dicom_unsupported(f"stores {bits_allocated} bits per pixel")
    if not bits_stored or not 1 <= bits_stored <= bits_allocated or high_bit != bits_stored - 1:
        raise _dicom_unsupported("uses an unusual pixel layout")
    if signed not in (0, 1):
        raise corrupt()
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        if samples != 1:
            raise corrupt()
    elif photometric == "RGB":
        if samples != 3 or bits_allocated != 8:
            raise _dicom_unsupported("stores colour in an unsupported way")
    else:
        raise _dicom_unsupported(f"uses the {photometric[:20]} colour model")

    # 3. The whole dataset, then the pixels (native little-endian data only, checked above).
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=False)
    except Exception as exc:  # noqa: BLE001
        raise _decode_error(exc, "a DICOM file") from exc
    if "PixelData" not in ds:
        raise IntakeError("dicom_without_image", "This DICOM file contains no image data.", 400)
    expected = rows * cols * samples * (bits_allocated // 8)
    pixel_bytes = ds.PixelData
    if not isinstance(pixel_bytes, bytes | bytearray):
        raise corrupt()
    if len(pixel_bytes) < expected:
        raise _truncated()
    try:
        arr = np.array(ds.pixel_array)
    except Exception as exc:  # noqa: BLE001
        raise _decode_error(exc, "a DICOM file") from exc
    if arr.shape[:2] != (rows, cols):
        raise corrupt()

    if photometric == "RGB":
        return Image.frombytes("RGB", (cols, rows), np.ascontiguousarray(arr, dtype=np.uint8).tobytes())

    max_value = (1 << (bits_stored - 1 if signed else bits_stored)) - 1
    if signed:
        if arr.size and int(arr.min()) < 0:
            raise _dicom_unsupported("contains negative (signed) pixel values")
        arr = arr.astype(np.int64)
    else:
        arr = arr.astype(np.int64) & max_value  # bits above BitsStored are not pixel data
    if photometric == "MONOCHROME1":  # 0 means white: invert so that 0 is black
        arr = max_value - np.clip(arr, 0, max_value)
    arr = np.clip(arr, 0, max_value)
    if bits_stored <= 8:
        return Image.frombytes("L", (cols, rows), arr.astype(np.uint8).tobytes())
    return Image.frombytes("I;16", (cols, rows), arr.astype("<u2").tobytes())


# --------------------------------------------------------------------------- colour and rebuild


def _uint16_array(im: Image.Image) -> np.ndarray:
    arr = np.asarray(im)
    if arr.dtype.kind == "f" or (arr.size and (int(arr.min()) < 0 or int(arr.max()) > 0xFFFF)):
        raise IntakeError(
            "unsupported_color_mode",
            "This image stores pixel values we cannot interpret; export it as 16-bit PNG.",
            415,
        )
    return arr.astype(np.uint16)


def _window_of(arr: np.ndarray) -> tuple[int, int]:
    """0.5th-99.5th percentile of the raw values, via a histogram (exact, linear time)."""
    hist = np.bincount(arr.ravel(), minlength=65536)
    cdf = np.cumsum(hist)
    total = int(cdf[-1])
    low = int(np.searchsorted(cdf, total * WINDOW_PERCENTILES[0] / 100.0, side="left"))
    high = int(np.searchsorted(cdf, total * WINDOW_PERCENTILES[1] / 100.0, side="left"))
    if high <= low:
        nonzero = np.flatnonzero(hist)
        low, high = int(nonzero[0]), int(nonzero[-1])
    if high <= low:
        high = low + 1
    return low, high


def _apply_window(arr: np.ndarray, window: tuple[int, int]) -> Image.Image:
    low, high = window
    lut = np.clip(np.round((np.arange(65536, dtype=np.float64) - low) * (255.0 / (high - low))), 0, 255)
    out = lut.astype(np.uint8)[arr]
    return Image.frombytes("L", (arr.shape[1], arr.shape[0]), out.tobytes())


def _to_srgb(im: Image.Image) -> Image.Image:
    """Use an embedded ICC profile to convert RGB/RGBA/CMYK to sRGB; a broken profile is ignored."""
    icc = im.info.get("icc_profile")
    if not icc or len(icc) > _MAX_ICC_BYTES or im.mode not in ("RGB", "RGBA", "CMYK"):
        return im
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
        out_mode = "RGBA" if im.mode == "RGBA" else "RGB"
        converted = ImageCms.profileToProfile(
            im, source, srgb, renderingIntent=ImageCms.Intent.PERCEPTUAL, outputMode=out_mode
        )
    except Exception:  # noqa: BLE001 - profile does not match or cannot be parsed: use the pixels as they are
        return im
    return converted if converted is not None else im


def _flatten(im: Image.Image) -> Image.Image:
    rgba = im.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _to_eight_bit(im: Image.Image, modality: str) -> Image.Image:
    """Any 8-bit Pillow mode to "RGB" (photo) or "L" (X-ray)."""
    mode = im.mode
    has_key = "transparency" in im.info
    if mode in ("RGB", "RGBA", "CMYK"):
        im = _to_srgb(im)
        mode = im.mode
    try:
        if mode == "1":
            im = im.convert("L")
        elif mode == "L" and modality == "xray":
            pass
        elif mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode in ("P", "L", "RGB") and has_key):
            im = _flatten(im)
        elif mode != "L" and mode != "RGB":
            im = im.convert("RGB")  # P, CMYK without profile, YCbCr, RGBX...
    except (ValueError, OSError) as exc:
        raise IntakeError(
            "unsupported_color_mode",
            f"This image uses a colour format ({mode}) we cannot convert; export it as an RGB JPEG or PNG.",
            415,
        ) from exc
    if modality == "xray":
        return im if im.mode == "L" else im.convert("L")
    return im if im.mode == "RGB" else im.convert("RGB")


def _normalise(im: Image.Image, modality: str) -> tuple[Image.Image, tuple[int, int] | None]:
    """Rebuild from raw pixels into "RGB", "L" or "I;16": nothing but pixels survives."""
    if im.mode in _SIXTEEN_BIT_MODES:
        arr = _uint16_array(im)
        window = _window_of(arr)
        if modality == "xray":
            rebuilt = Image.frombytes("I;16", im.size, np.ascontiguousarray(arr, dtype="<u2").tobytes())
            return rebuilt, window
        grey = _apply_window(arr, window)
        return Image.frombytes("RGB", grey.size, grey.convert("RGB").tobytes()), window
    if im.mode == "F":
        raise IntakeError(
            "unsupported_color_mode", "This image stores floating-point pixels; export it as a PNG or JPEG.", 415
        )
    eight = _to_eight_bit(im, modality)
    return Image.frombytes(eight.mode, eight.size, eight.tobytes()), None


COLOUR_HINT_SIZE = 512


def _colour_hint(im: Image.Image) -> Image.Image | None:
    """A small RGB copy of a colour image (None for greyscale and 16-bit images)."""
    if im.mode not in ("RGB", "RGBA", "P", "CMYK", "YCbCr", "RGBX", "PA", "RGBa"):
        return None
    small = _to_eight_bit(im, "photo").copy()
    small.thumbnail((COLOUR_HINT_SIZE, COLOUR_HINT_SIZE), Image.Resampling.BILINEAR)
    return small


def _jpeg(im: Image.Image, box: int, quality: int) -> bytes:
    small = im.copy()
    small.thumbnail((box, box), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    small.save(out, "JPEG", quality=quality)
    return out.getvalue()


def _finish(image: Image.Image, original_format: str, window: tuple[int, int] | None) -> SanitizedImage:
    png = io.BytesIO()
    # level 2: about 30% faster than 3 (the old choice) for 4% more bytes on 1280x960 photos (bench README), and
    # about 3x faster than 6; the PNG is most of what an upload request costs
    image.save(png, "PNG", compress_level=2)
    return SanitizedImage(
        data=png.getvalue(),
        width=image.width,
        height=image.height,
        mode=image.mode,
        bit_depth=16 if image.mode == "I;16" else 8,
        original_format=original_format,
        window=window,
        pixels=image,
    )


def display_variants(data: bytes, window: tuple[int, int] | None) -> tuple[bytes, bytes]:
    """The preview and the thumbnail (8-bit JPEGs, longest side at most ``PREVIEW_SIZE`` and ``THUMBNAIL_SIZE``)
    of a sanitised image: ``data`` is ``SanitizedImage.data`` as stored, ``window`` its ``window``. 16-bit data
    is shown through that window, never clipped. Only this module's own PNGs come here: they are decoded
    without the intake's checks, which they passed when they were made."""
    with Image.open(io.BytesIO(data)) as decoded:
        decoded.load()
        if decoded.mode in _SIXTEEN_BIT_MODES:
            display = _apply_window(np.asarray(decoded).astype(np.uint16), window or (0, 65535))
        else:
            display = decoded
        return _jpeg(display, PREVIEW_SIZE, PREVIEW_QUALITY), _jpeg(display, THUMBNAIL_SIZE, THUMBNAIL_QUALITY)
