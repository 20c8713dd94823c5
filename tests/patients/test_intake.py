"""patients.intake: the hostile-upload corpus plus focused checks (orientation, 16-bit, colour,
limits, names). Pure Python: no database, no files on disk."""

from __future__ import annotations

import ast
import builtins
import io
import os
import struct
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from patients import intake
from patients.intake import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    MODALITIES,
    IntakeError,
    SanitizedImage,
    display_variants,
    safe_display_name,
    sanitize_upload,
)
from tests.patients import hostile_corpus as hc
from tests.patients.hostile_corpus import FORBIDDEN_IN_OUTPUT, Case, build_corpus

CORPUS = build_corpus()
BY_ID = {c.id: c for c in CORPUS}
INFO_KEYS_FORBIDDEN = {"exif", "icc_profile", "comment", "Comment", "Description", "XML:com.adobe.xmp", "dpi", "xmp"}
JPEG_ALLOWED_MARKERS = {0xE0, 0xDB, 0xC0, 0xC2, 0xC4, 0xDA, 0xDD}  # APP0 (JFIF), DQT, SOF0/2, DHT, SOS, DRI


def run(case: Case, **kw) -> SanitizedImage:
    limits = {}
    if case.max_bytes is not None:
        limits["max_bytes"] = case.max_bytes
    if case.max_pixels is not None:
        limits["max_pixels"] = case.max_pixels
    limits.update(kw)
    return sanitize_upload(io.BytesIO(case.data), modality=case.modality, **limits)


def png_chunk_types(data: bytes) -> list[bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, kinds = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kinds.append(data[pos + 4 : pos + 8])
        pos += 12 + length
    assert pos == len(data), "bytes after IEND"
    return kinds


def jpeg_markers(data: bytes) -> list[int]:
    """Marker codes up to the first SOS (no metadata segments may appear before the scan)."""
    assert data[:2] == b"\xff\xd8"
    pos, markers = 2, []
    while pos < len(data):
        assert data[pos] == 0xFF
        marker = data[pos + 1]
        markers.append(marker)
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker == 0xDA:
            break
        pos += 2 + length
    assert data.endswith(b"\xff\xd9")
    return markers


def open_png(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data), formats=["PNG"])
    im.load()
    return im


def assert_clean_output(result: SanitizedImage, case: Case | None = None) -> None:
    # The PNG: only IHDR/IDAT/IEND, nothing after IEND, the expected mode and size.
    assert set(png_chunk_types(result.data)) <= {b"IHDR", b"IDAT", b"IEND"}
    im = open_png(result.data)
    assert im.format == "PNG"
    assert im.mode == result.mode
    assert im.size == (result.width, result.height)
    assert not (set(im.info) & INFO_KEYS_FORBIDDEN), im.info
    assert not getattr(im, "text", {})
    assert not im.getexif()
    assert result.bit_depth == (16 if result.mode == "I;16" else 8)
    windowed_photo = case is not None and case.id == "png16_as_photo"
    assert (result.window is not None) == (result.mode == "I;16" or windowed_photo)
    if case is not None:
        assert result.mode == case.mode
        assert (result.width, result.height) == case.size
        assert result.original_format == case.original_format

    # Preview and thumbnail: 8-bit JPEGs within their size, with no metadata segments.
    for blob, limit in ((preview_of(result), 1024), (thumbnail_of(result), 256)):
        markers = jpeg_markers(blob)
        assert set(markers) <= JPEG_ALLOWED_MARKERS, [hex(m) for m in markers]
        pv = Image.open(io.BytesIO(blob), formats=["JPEG"])
        pv.load()
        assert pv.format == "JPEG"
        assert pv.mode in ("L", "RGB")
        assert max(pv.size) <= limit
        assert "exif" not in pv.info and "icc_profile" not in pv.info

    for blob in (result.data, preview_of(result), thumbnail_of(result)):
        for marker in FORBIDDEN_IN_OUTPUT:
            assert marker not in blob, marker


def preview_of(result: SanitizedImage) -> bytes:
    """The preview a worker makes of the stored PNG (``display_variants``), as the viewer is served it."""
    return display_variants(result.data, result.window)[0]


def thumbnail_of(result: SanitizedImage) -> bytes:
    return display_variants(result.data, result.window)[1]


def px(result: SanitizedImage) -> np.ndarray:
    return np.asarray(open_png(result.data))


# --------------------------------------------------------------------------- the corpus


def test_corpus_is_broad_and_cached():
    assert build_corpus() is CORPUS
    assert len(CORPUS) >= 25
    assert len(BY_ID) == len(CORPUS), "case ids must be unique"
    assert all(c.modality in MODALITIES and c.expect in ("accept", "reject") for c in CORPUS)
    codes = {c.code for c in CORPUS if c.expect == "reject"}
    assert {
        "empty_file",
        "file_too_large",
        "image_too_large",
        "truncated_image",
        "corrupt_image",
        "unsupported_format",
        "multiple_frames",
        "dicom_not_photo",
        "unsupported_dicom_compression",
        "dicom_without_image",
    } <= codes
    names = {c.name for c in CORPUS}
    assert {"../../x.jpg", "x.php%00.jpg", "con.jpg"} <= names
    assert any(len(n) >= 300 for n in names)
    assert max(len(c.data) for c in CORPUS) < 200_000


@pytest.mark.parametrize("case", CORPUS, ids=lambda c: c.id)
def test_corpus_case(case: Case):
    if case.expect == "reject":
        with pytest.raises(IntakeError) as caught:
            run(case)
        err = caught.value
        assert (err.code, err.status) == (case.code, case.status), err.message
        assert type(err) is IntakeError
        assert err.message and err.message.endswith(".") and len(err.message) < 300
        assert str(err) == err.message
    else:
        assert_clean_output(run(case), case)


@pytest.mark.parametrize("case", [c for c in CORPUS if c.expect == "reject"], ids=lambda c: c.id)
def test_corpus_rejections_same_when_size_is_given(case: Case):
    limits = {"max_bytes": case.max_bytes} if case.max_bytes else {}
    if case.max_pixels:
        limits["max_pixels"] = case.max_pixels
    with pytest.raises(IntakeError) as caught:
        sanitize_upload(io.BytesIO(case.data), modality=case.modality, size=len(case.data), **limits)
    assert caught.value.code == case.code


def test_file_name_never_matters():
    """The same bytes give the same result whatever the client called the file."""
    named = [c for c in CORPUS if c.id.startswith("name_")]
    assert len(named) >= 4
    outputs = {run(c).data for c in named}
    assert len(outputs) == 1


# --------------------------------------------------------------------------- orientation and colour


def test_orientation_6_is_applied_and_exif_gone():
    case = BY_ID["jpeg_gps_orientation6"]
    assert b"Exif" in case.data and hc.GPS_MARKER.encode() in case.data
    result = run(case)
    assert (result.width, result.height) == (20, 40)  # was 40x20, rotated 90 degrees clockwise
    arr = px(result).astype(int)
    top, bottom = arr[5, 10], arr[35, 10]  # the red left half is now on top
    assert top[0] > 200 and top[2] < 60, top
    assert bottom[2] > 200 and bottom[0] < 60, bottom
    assert_clean_output(result)


def test_heic_orientation_applied_once():
    arr = px(run(BY_ID["heic_orientation6"])).astype(int)
    assert arr.shape[:2] == (40, 20)
    assert arr[5, 10, 0] > 200 and arr[5, 10, 2] < 60  # red on top
    assert arr[35, 10, 2] > 200 and arr[35, 10, 0] < 60


def test_cmyk_becomes_sensible_rgb():
    arr = px(run(BY_ID["cmyk_jpeg"])).astype(int)
    r, g, b = arr.reshape(-1, 3).mean(axis=0)
    assert r > 230 and g < 30 and b < 30  # C=0 M=100% Y=100% K=0 is red


def test_icc_profile_is_applied_then_dropped():
    case = BY_ID["jpeg_icc_srgb"]
    assert b"ICC_PROFILE" in case.data
    src = np.asarray(Image.open(io.BytesIO(case.data)).convert("RGB")).astype(int)
    out = px(run(case)).astype(int)
    assert out.shape == src.shape
    assert np.abs(out - src).mean() < 3  # sRGB -> sRGB keeps the colours


def test_icc_profile_converts_colours_to_srgb():
    """Grey 128 tagged with a linear-light profile is ~188 in sRGB: the profile really is applied."""
    arr = px(run(BY_ID["png_icc_linear"])).astype(int)
    assert np.all(np.abs(arr - 188) <= 3), arr[0, 0]


@pytest.mark.parametrize("profile", [b"not a profile", b"\x00" * 200, "LAB"])
def test_broken_or_mismatched_icc_profile_is_ignored(profile):
    from PIL import ImageCms

    if profile == "LAB":
        profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    data = hc.save(Image.new("RGB", (8, 8), (200, 100, 50)), "PNG", icc_profile=profile)
    arr = px(sanitize_upload(io.BytesIO(data), modality="photo"))
    assert tuple(arr[0, 0]) == (200, 100, 50)


def test_rgba_flattened_on_white():
    arr = px(run(BY_ID["rgba_png"]))
    assert tuple(arr[10, 5]) == (0, 0, 255)  # opaque blue stays blue
    assert tuple(arr[10, 25]) == (255, 255, 255)  # fully transparent red becomes white


def test_palette_transparency_flattened_on_white():
    arr = px(run(BY_ID["palette_png_transparency"]))
    assert tuple(arr[10, 5]) == (0, 200, 0)
    assert tuple(arr[10, 25]) == (255, 255, 255)


def test_mpo_keeps_first_frame_only():
    arr = px(run(BY_ID["mpo_two_frames"])).astype(int)
    r, g, b = arr.reshape(-1, 3).mean(axis=0)
    assert r > 180 and b < 60  # frame 0 is red, frame 1 blue


def test_rgb_xray_becomes_greyscale():
    result = run(BY_ID["rgb_xray_jpeg"])
    assert result.mode == "L" and result.bit_depth == 8 and result.window is None
    assert Image.open(io.BytesIO(preview_of(result))).mode == "L"


def test_heic_is_decoded():
    case = BY_ID["heic_photo"]
    assert case.data[4:12] == b"ftypheic"
    arr = px(run(case)).astype(int)
    src = np.asarray(hc.gradient_rgb()).astype(int)
    assert np.abs(arr - src).mean() < 12


# --------------------------------------------------------------------------- 16-bit X-rays


def test_png16_xray_values_preserved_exactly_and_preview_windowed():
    result = run(BY_ID["png16_xray"])
    assert result.mode == "I;16" and result.bit_depth == 16
    out = np.asarray(open_png(result.data))
    expected = hc.xray16_array()
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, expected)

    low, high = result.window
    assert 0 <= low < high <= 65535
    assert low >= 500 and high <= 3999  # the 0.5/99.5 percentiles ignore the two outliers (0, 65535)
    preview = np.asarray(Image.open(io.BytesIO(preview_of(result))))
    assert preview.ndim == 2
    assert 40 < preview.mean() < 215, "a clipped convert('L') would be almost all white"
    assert (preview < 30).mean() > 0.01 and (preview > 225).mean() > 0.01  # uses the full range
    assert np.asarray(Image.open(io.BytesIO(thumbnail_of(result)))).mean() < 215


def test_png16_photo_is_windowed_to_rgb():
    result = run(BY_ID["png16_as_photo"])
    assert result.mode == "RGB" and result.bit_depth == 8 and result.window is not None
    arr = px(result)
    assert 40 < arr.mean() < 215
    assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()


def test_windowing_constant_image():
    im = Image.fromarray(np.full((10, 12), 4000, dtype=np.uint16))
    result = sanitize_upload(io.BytesIO(hc.save(im, "PNG")), modality="xray")
    low, high = result.window
    assert low < high
    np.testing.assert_array_equal(np.asarray(open_png(result.data)), np.full((10, 12), 4000))


def test_preview_and_thumbnail_are_downscaled():
    im = Image.effect_noise((1500, 600), 40).convert("RGB")
    result = sanitize_upload(io.BytesIO(hc.save(im, "JPEG", quality=70)), modality="photo")
    assert (result.width, result.height) == (1500, 600)
    assert Image.open(io.BytesIO(preview_of(result))).size == (1024, 410)
    assert Image.open(io.BytesIO(thumbnail_of(result))).size == (256, 102)


# --------------------------------------------------------------------------- DICOM


def test_dicom_16bit_values_kept_and_no_tags_or_preamble():
    case = BY_ID["dicom_mz_preamble_16bit"]
    assert case.data.startswith(b"MZ") and hc.PATIENT_NAME.encode() in case.data
    result = run(case)
    np.testing.assert_array_equal(np.asarray(open_png(result.data)), hc.dicom_array16())
    assert result.window is not None and result.bit_depth == 16
    for blob in (result.data, preview_of(result), thumbnail_of(result)):
        for marker in (b"MZ", b"DOS mode", b"Hostile", b"19700101", b"1.2.826.0.1.3680043", b"DICM"):
            assert marker not in blob
    preview = np.asarray(Image.open(io.BytesIO(preview_of(result))))
    assert 40 < preview.mean() < 215


def test_dicom_monochrome1_is_inverted():
    result = run(BY_ID["dicom_monochrome1_8bit"])
    np.testing.assert_array_equal(np.asarray(open_png(result.data)), 255 - hc.dicom_array8())


def test_dicom_rgb_xray_becomes_greyscale():
    rgb = np.zeros((20, 30, 3), dtype=np.uint8)
    rgb[..., 0] = 200
    rgb[:, 15:, 1] = 200
    data = hc.dicom_bytes(pixels=rgb, samples=3, photometric="RGB", bits_stored=8)
    result = sanitize_upload(io.BytesIO(data), modality="xray")
    assert (result.mode, result.width, result.height) == ("L", 30, 20)
    arr = np.asarray(open_png(result.data)).astype(int)
    assert arr[5, 5] < arr[5, 25]  # red alone is darker than red + green


def test_dicom_signed_pixels():
    values = (hc.dicom_array16() % 2048).astype(np.int16)  # 12-bit signed: 0..2047 are non-negative
    ok = hc.dicom_bytes(pixels=values, bits_stored=12, signed=True)
    np.testing.assert_array_equal(np.asarray(open_png(sanitize_upload(io.BytesIO(ok), modality="xray").data)), values)
    negative = values.copy()
    negative[0, 0] = -5
    with pytest.raises(IntakeError) as caught:
        sanitize_upload(io.BytesIO(hc.dicom_bytes(pixels=negative, bits_stored=12, signed=True)), modality="xray")
    assert (caught.value.code, caught.value.status) == ("unsupported_dicom_image", 415)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"photometric": "PALETTE COLOR"},
        {"photometric": "YBR_FULL"},
        {"bits_allocated": 32, "bits_stored": 32, "pixel_data": b"\x00" * 40 * 30 * 4},
    ],
    ids=["palette", "ybr", "32bit"],
)
def test_dicom_unsupported_pixel_kinds(kwargs):
    data = hc.dicom_bytes(pixels=hc.dicom_array8(), **kwargs)
    with pytest.raises(IntakeError) as caught:
        sanitize_upload(io.BytesIO(data), modality="xray")
    assert (caught.value.code, caught.value.status) == ("unsupported_dicom_image", 415)


def test_dicom_without_file_header_is_unsupported():
    data = hc.dicom_bytes(pixels=hc.dicom_array8())
    with pytest.raises(IntakeError) as caught:
        sanitize_upload(io.BytesIO(data[132:]), modality="xray")  # no preamble, no "DICM"
    assert (caught.value.code, caught.value.status) == ("unsupported_format", 415)


def test_dicom_geometry_checked_before_pixels_are_read(monkeypatch):
    """The 20000x20000 DICOM is refused from its header: pixel decoding is never reached."""
    import pydicom

    def boom(self):  # pragma: no cover - must not run
        raise AssertionError("pixel data decoded")

    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array", property(boom))
    for case_id in ("dicom_declares_20000x20000", "dicom_multiframe"):
        with pytest.raises(IntakeError) as caught:
            run(BY_ID[case_id])
        assert caught.value.code == BY_ID[case_id].code


def test_deflated_dicom_is_not_inflated(monkeypatch):
    import zlib

    def no_inflate(*a, **kw):  # pragma: no cover - must not run
        raise AssertionError("inflated a deflated DICOM dataset")

    monkeypatch.setattr(zlib, "decompress", no_inflate)
    with pytest.raises(IntakeError) as caught:
        run(BY_ID["dicom_deflated"])
    assert caught.value.code == "unsupported_dicom_compression"


def test_dicom_limit_uses_max_pixels():
    with pytest.raises(IntakeError) as caught:
        run(BY_ID["dicom_mz_preamble_16bit"], max_pixels=48 * 32 - 1)
    assert caught.value.code == "image_too_large"


# --------------------------------------------------------------------------- limits and reading


class ExplodingStream(io.RawIOBase):
    def read(self, n=-1):  # pragma: no cover - must not be called
        raise AssertionError("read() called although the declared size is over the limit")


class CountingStream(io.RawIOBase):
    """Non-seekable, endless stream of JPEG-ish bytes that counts what was read."""

    def __init__(self) -> None:
        self.total = 0

    def readable(self) -> bool:
        return True

    def read(self, n=-1):
        n = 65536 if n is None or n < 0 else n
        self.total += n
        return b"\xff" * n


def test_size_checked_before_reading():
    with pytest.raises(IntakeError) as caught:
        sanitize_upload(ExplodingStream(), modality="photo", size=DEFAULT_MAX_BYTES + 1)
    assert (caught.value.code, caught.value.status) == ("file_too_large", 413)
    assert "40 MB" in caught.value.message


def test_size_enforced_while_reading_without_declared_size():
    stream = CountingStream()
    with pytest.raises(IntakeError) as caught:
        sanitize_upload(stream, modality="xray", max_bytes=100_000)
    assert (caught.value.code, caught.value.status) == ("file_too_large", 413)
    assert stream.total == 100_001


def test_size_enforced_when_declared_size_lies():
    data = BY_ID["over_byte_limit"].data
    with pytest.raises(IntakeError) as caught:
        sanitize_upload(io.BytesIO(data), modality="photo", size=10, max_bytes=4096)
    assert caught.value.code == "file_too_large"


def test_exactly_at_byte_limit_is_fine():
    data = BY_ID["jpeg_named_png"].data
    assert sanitize_upload(io.BytesIO(data), modality="photo", max_bytes=len(data), size=len(data)).width == 64


def test_read_failure_is_an_intake_error():
    class Broken(io.RawIOBase):
        def read(self, n=-1):
            raise OSError("connection reset")

    with pytest.raises(IntakeError) as caught:
        sanitize_upload(Broken(), modality="photo")
    assert caught.value.code == "read_failed"


def test_any_file_like_works():
    class Minimal:
        def __init__(self, data: bytes) -> None:
            self._buf = io.BytesIO(data)

        def read(self, n: int = -1) -> bytes:
            return self._buf.read(min(n, 7))  # short reads

    result = sanitize_upload(Minimal(BY_ID["heic_photo"].data), modality="photo")  # type: ignore[arg-type]
    assert result.original_format == "HEIF"


@pytest.mark.parametrize("modality", ["", "XRAY", "video", None])
def test_invalid_modality(modality):
    with pytest.raises(IntakeError) as caught:
        sanitize_upload(io.BytesIO(BY_ID["jpeg_named_png"].data), modality=modality)
    assert (caught.value.code, caught.value.status) == ("invalid_modality", 400)


def test_bomb_warning_is_an_error_even_with_a_generous_limit():
    """With max_pixels raised above 100 MP, Pillow's warning band still refuses (warning -> error)."""
    with pytest.raises(IntakeError) as caught:
        run(BY_ID["png_100mp_warning_band"], max_pixels=10**9)
    assert caught.value.code == "image_too_large"


def test_globals_untouched():
    filters = list(warnings.filters)
    before = Image.MAX_IMAGE_PIXELS
    for case_id in ("png_100mp_warning_band", "bomb_png_20000x20000", "truncated_jpeg"):
        with pytest.raises(IntakeError):
            run(BY_ID[case_id])
    run(BY_ID["png16_xray"])
    assert Image.MAX_IMAGE_PIXELS == before
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    assert list(warnings.filters) == filters
    assert DEFAULT_MAX_PIXELS == 50_000_000 and DEFAULT_MAX_BYTES == 40 * 1024 * 1024


def test_nothing_written_to_disk(monkeypatch):
    accepted = [c for c in CORPUS if c.expect == "accept"]
    for case in accepted:  # warm up lazy imports first
        run(case)

    def forbidden(*a, **kw):
        raise AssertionError(f"file access: {a!r}")

    monkeypatch.setattr(builtins, "open", forbidden)
    monkeypatch.setattr(io, "open", forbidden)
    monkeypatch.setattr(os, "open", forbidden)
    monkeypatch.setattr(tempfile, "mkstemp", forbidden)
    monkeypatch.setattr(tempfile, "NamedTemporaryFile", forbidden)
    monkeypatch.setattr(tempfile, "TemporaryFile", forbidden)
    monkeypatch.setattr(tempfile, "SpooledTemporaryFile", forbidden)
    for case in CORPUS:
        try:
            run(case)
        except IntakeError:
            pass


def test_module_does_not_import_django():
    tree = ast.parse(Path(intake.__file__).read_text())
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module.split(".")[0])
    assert "django" not in modules and "rest_framework" not in modules
    # core: the plain-Python bottom layer (IntakeError derives from core.errors.ApplicationError); tests/core
    # checks that it imports no Django.
    assert modules <= {"__future__", "contextlib", "io", "re", "unicodedata", "warnings", "collections", "dataclasses",
                       "typing", "numpy", "pillow_heif", "pydicom", "PIL", "core"}  # fmt: skip


def test_intake_error_shape():
    err = IntakeError("unsupported_format", "Nope.", 415)
    assert (err.code, err.message, err.status) == ("unsupported_format", "Nope.", 415)
    assert IntakeError("x", "y").status == 400
    assert "unsupported_format" in repr(err)


def test_unsupported_message_names_the_format():
    with pytest.raises(IntakeError) as caught:
        run(BY_ID["multipage_tiff"])
    assert "TIFF" in caught.value.message and "DICOM" in caught.value.message  # X-ray: DICOM allowed
    with pytest.raises(IntakeError) as caught:
        run(BY_ID["pdf_renamed_jpg"])
    assert "PDF" in caught.value.message
    with pytest.raises(IntakeError) as caught:
        run(BY_ID["gif_js_polyglot"])
    assert "GIF" in caught.value.message and "DICOM" not in caught.value.message  # photo: no DICOM


def test_repr_does_not_dump_bytes():
    result = run(BY_ID["jpeg_named_png"])
    assert len(repr(result)) < 200


# --------------------------------------------------------------------------- display names


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("../../x.jpg", "x.jpg"),
        ("..\\..\\windows\\win.ini", "win.ini"),
        ("C:\\Users\\dr\\Desktop\\pano.png", "pano.png"),
        ("/etc/passwd", "passwd"),
        ("x.php%00.jpg", "x.php%00.jpg"),  # literal text, harmless as display text
        ("x.php\x00.jpg", "x.php.jpg"),
        ("con.jpg", "con.jpg"),
        ("photo\u202egpj.exe", "photogpj.exe"),
        ("line\r\nbreak.png", "line break.png"),
        ("tab\there.png", "tab here.png"),
        ('<img src=x onerror="1">.jpg', "_img src=x onerror=_1__.jpg"),
        ("  spaced   out .jpg ", "spaced out .jpg"),
        (".htaccess", "htaccess"),
        ("..", "upload"),
        ("../", "upload"),
        ("", "upload"),
        (None, "upload"),
        ("\x00\x01\x02", "upload"),
        ("Zähne Röntgen.jpg", "Zähne Röntgen.jpg"),
    ],
)
def test_safe_display_name(raw, expected):
    assert safe_display_name(raw) == expected


def test_safe_display_name_truncates_keeping_extension():
    name = safe_display_name("a" * 296 + ".jpg")
    assert len(name) == 100 and name.endswith(".jpg") and name.startswith("aaa")
    assert len(safe_display_name("b" * 300)) == 100
    assert len(safe_display_name("c" * 200 + "." + "d" * 50)) == 100


def test_safe_display_name_never_has_separators_or_controls():
    for case in CORPUS:
        name = safe_display_name(case.name)
        assert name and len(name) <= 100
        assert "/" not in name and "\\" not in name and "\x00" not in name
        assert all(ord(ch) >= 32 for ch in name)
