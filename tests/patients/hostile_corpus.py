"""A corpus of hostile and odd uploads, built in memory (nothing on disk), for the intake tests
and for the API tests that drive the same files through HTTP.

Every case is small (the largest is ~50 KB: a real 20000x20000 decompression bomb). Cases that
need a non-default limit say so in ``max_bytes`` / ``max_pixels``; a test that cannot pass the
limit (e.g. an HTTP test) should configure its upload limit to that value or skip the case.
"""

from __future__ import annotations

import functools
import io
import struct
import zlib
from dataclasses import dataclass

import numpy as np
import pillow_heif
from PIL import Image, ImageCms, PngImagePlugin

pillow_heif.register_heif_opener()

PATIENT_NAME = "Hostile^Marker"
DOS_STUB = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00This program cannot be run in DOS mode.\r\r\n$"
PNG_COMMENT = "secret-comment-do-not-keep"
HTML_PAYLOAD = b"<html><body><script>alert(document.cookie)</script></body></html>"
PHP_PAYLOAD = b"<?php system($_GET['cmd']); ?>"
GPS_MARKER = "GPSMarkerCamera"

# Bytes that must never appear in any sanitised output (data, preview or thumbnail).
FORBIDDEN_IN_OUTPUT: tuple[bytes, ...] = (
    b"Exif",
    b"GPS",
    b"<html",
    b"<?php",
    b"<script",
    b"MZ",
    b"This program cannot",
    PATIENT_NAME.encode(),
    b"Hostile",
    PNG_COMMENT.encode(),
    GPS_MARKER.encode(),
    b"ICC_PROFILE",
    b"<svg",
)


@dataclass(frozen=True)
class Case:
    name: str  # client-side file name
    data: bytes
    modality: str  # "photo" or "xray"
    expect: str  # "reject" or "accept"
    code: str | None = None  # IntakeError.code for rejections
    status: int | None = None  # HTTP status for rejections
    # For acceptances (None = not checked):
    mode: str | None = None  # "RGB", "L" or "I;16"
    size: tuple[int, int] | None = None  # (width, height) after orientation
    original_format: str | None = None
    # Non-default limits this case needs (None = the defaults).
    max_bytes: int | None = None
    max_pixels: int | None = None
    label: str = ""  # test id; defaults to the file name

    @property
    def id(self) -> str:
        return self.label or self.name


def _reject(label: str, name: str, data: bytes, modality: str, code: str, status: int, **kw: object) -> Case:
    return Case(name=name, data=data, modality=modality, expect="reject", code=code, status=status, label=label, **kw)


def _accept(
    label: str, name: str, data: bytes, modality: str, mode: str, size: tuple[int, int], fmt: str, **kw: object
) -> Case:
    return Case(
        name=name,
        data=data,
        modality=modality,
        expect="accept",
        mode=mode,
        size=size,
        original_format=fmt,
        label=label,
        **kw,
    )


# --------------------------------------------------------------------------- small builders


def save(im: Image.Image, fmt: str, **kw: object) -> bytes:
    out = io.BytesIO()
    im.save(out, fmt, **kw)
    return out.getvalue()


def gradient_rgb(width: int = 64, height: int = 48) -> Image.Image:
    y, x = np.mgrid[0:height, 0:width]
    arr = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), np.full_like(x, 128)], axis=-1)
    return Image.fromarray(arr.astype(np.uint8))


def half_red_jpeg_array(width: int = 40, height: int = 20) -> np.ndarray:
    """Left half red, right half blue."""
    arr = np.zeros((height, width, 3), dtype=np.uint8)
    arr[:, : width // 2] = (255, 0, 0)
    arr[:, width // 2 :] = (0, 0, 255)
    return arr


def xray16_array(width: int = 96, height: int = 64) -> np.ndarray:
    """A 16-bit greyscale 'X-ray': a ramp in the 12-bit range with exact, distinctive values."""
    y, x = np.mgrid[0:height, 0:width]
    arr = 500 + (x * 37 + y * 11) % 3500  # 500..3999: far below 65535 (would be white if clipped)
    arr[0, 0] = 65535
    arr[0, 1] = 0
    return arr.astype(np.uint16)


def dicom_array16(width: int = 48, height: int = 32) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return (100 + (x * 53 + y * 29) % 3900).astype(np.uint16)  # BitsStored 12


def dicom_array8(width: int = 40, height: int = 30) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return ((x * 5 + y * 3) % 256).astype(np.uint8)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def handmade_png(width: int, height: int, *, bit_depth: int, color_type: int, rows: int, row_bytes: int) -> bytes:
    """A PNG whose IHDR declares width x height, with a valid zlib stream of ``rows`` zero rows."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    comp = zlib.compressobj(9)
    row = b"\x00" * (row_bytes + 1)  # filter byte + pixels
    parts = []
    done = 0
    while done < rows:
        n = min(1000, rows - done)
        parts.append(comp.compress(row * n))
        done += n
    parts.append(comp.flush())
    return (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", b"".join(parts)) + png_chunk(b"IEND", b"")
    )


def jpeg_with_dimensions(width: int, height: int) -> bytes:
    """A real JPEG whose SOF0 header is patched to declare width x height."""
    data = bytearray(save(Image.new("RGB", (16, 16), (10, 120, 200)), "JPEG", quality=90))
    sof = data.find(b"\xff\xc0")
    assert sof > 0
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def exif_gps_orientation(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = GPS_MARKER  # Make
    exif[0x0131] = "PhoneOS 1.0"  # Software
    gps = exif.get_ifd(0x8825)
    gps[1] = "N"
    gps[2] = (52.0, 13.0, 37.5)
    gps[3] = "E"
    gps[4] = (13.0, 24.0, 11.25)
    return exif.tobytes()


def srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _s15(v: float) -> bytes:
    return struct.pack(">i", round(v * 65536))


def linear_rgb_icc() -> bytes:
    """A minimal ICC v2 matrix/TRC profile: sRGB primaries with a linear (gamma 1.0) curve.

    Pixels tagged with it must get brighter when converted to sRGB (linear 0.5 -> sRGB ~188),
    which proves that the embedded profile is really applied."""
    xyz = {
        b"wtpt": (0.9642, 1.0, 0.8249),
        b"rXYZ": (0.4361, 0.2225, 0.0139),
        b"gXYZ": (0.3851, 0.7169, 0.0971),
        b"bXYZ": (0.1431, 0.0606, 0.7141),
    }
    blobs = [(sig, b"XYZ \x00\x00\x00\x00" + b"".join(_s15(v) for v in vals)) for sig, vals in xyz.items()]
    curve = b"curv\x00\x00\x00\x00" + struct.pack(">IH", 1, 0x0100) + b"\x00\x00"
    tags = [(sig, data) for sig, data in blobs]
    n_tags = len(tags) + 3
    offset = 128 + 4 + 12 * n_tags
    table, body = [], b""
    for sig, data in tags:
        table.append(struct.pack(">4sII", sig, offset + len(body), len(data)))
        body += data
    curve_offset = offset + len(body)
    body += curve
    for sig in (b"rTRC", b"gTRC", b"bTRC"):
        table.append(struct.pack(">4sII", sig, curve_offset, 14))
    size = offset + len(body)
    header = bytearray(128)
    struct.pack_into(">I", header, 0, size)
    header[8:12] = b"\x02\x10\x00\x00"
    header[12:16] = b"mntr"
    header[16:20] = b"RGB "
    header[20:24] = b"XYZ "
    header[36:40] = b"acsp"
    header[68:80] = _s15(0.9642) + _s15(1.0) + _s15(0.8249)
    return bytes(header) + struct.pack(">I", n_tags) + b"".join(table) + body


def _dicom(
    *,
    pixels: np.ndarray | None,
    bits_stored: int = 8,
    photometric: str = "MONOCHROME2",
    transfer_syntax: str | None = None,
    preamble: bytes | None = None,
    frames: int | None = None,
    rows_cols: tuple[int, int] | None = None,
    pixel_data: bytes | None = None,
    samples: int = 1,
    signed: bool = False,
    bits_allocated: int | None = None,
) -> bytes:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - Presentation
    meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.4242.1"
    meta.TransferSyntaxUID = transfer_syntax or ExplicitVRLittleEndian
    if preamble is None:
        preamble = b"\x00" * 128
    preamble = (preamble + b"\x00" * 128)[:128]
    ds = FileDataset("upload.dcm", {}, file_meta=meta, preamble=preamble)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = PATIENT_NAME
    ds.PatientID = "Hostile-0001"
    ds.PatientBirthDate = "19700101"
    ds.InstitutionName = "Hostile Clinic"
    ds.Modality = "DX"
    if pixels is not None or rows_cols is not None:
        rows, cols = rows_cols or (pixels.shape[:2] if samples == 3 else pixels.shape[-2:])
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel = samples
        if samples == 3:
            ds.PlanarConfiguration = 0
        ds.PhotometricInterpretation = photometric
        bits_allocated = bits_allocated or (8 if bits_stored <= 8 else 16)
        ds.BitsAllocated = bits_allocated
        ds.BitsStored = bits_stored
        ds.HighBit = bits_stored - 1
        ds.PixelRepresentation = 1 if signed else 0
        if frames is not None:
            ds.NumberOfFrames = frames
        if pixel_data is not None:
            ds.PixelData = pixel_data
        elif pixels is not None:
            dtype = ("<i2" if signed else "<u2") if bits_allocated == 16 else ("i1" if signed else "u1")
            ds.PixelData = np.ascontiguousarray(pixels, dtype=dtype).tobytes()
        if "PixelData" in ds:
            ds["PixelData"].VR = "OB" if bits_allocated == 8 else "OW"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def dicom_bytes(**kw: object) -> bytes:
    return _dicom(**kw)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the corpus


@functools.lru_cache(maxsize=1)
def build_corpus() -> list[Case]:
    from pydicom.encaps import encapsulate
    from pydicom.uid import DeflatedExplicitVRLittleEndian, JPEGBaseline8Bit

    cases: list[Case] = []
    add = cases.append

    photo = gradient_rgb()
    small_jpeg = save(photo, "JPEG", quality=85)

    # ---- size and pixel limits ------------------------------------------------------------
    add(_reject("zero_bytes", "empty.jpg", b"", "photo", "empty_file", 400))
    add(
        _reject(
            "over_byte_limit",
            "big.jpg",
            save(Image.effect_noise((64, 64), 80), "PNG"),
            "photo",
            "file_too_large",
            413,
            max_bytes=4096,
        )
    )
    # A real decompression bomb: 20000x20000 1-bit, a complete zlib stream of zero rows (~50 KB).
    add(
        _reject(
            "bomb_png_20000x20000",
            "bomb.png",
            handmade_png(20000, 20000, bit_depth=1, color_type=0, rows=20000, row_bytes=2500),
            "photo",
            "image_too_large",
            400,
        )
    )
    # 100 MP: in Pillow's warning band (89-179 MP), where Pillow alone would open and load it.
    add(
        _reject(
            "png_100mp_warning_band",
            "panorama.png",
            handmade_png(10000, 10000, bit_depth=8, color_type=2, rows=4, row_bytes=30000),
            "photo",
            "image_too_large",
            400,
        )
    )
    # 60 MP: below Pillow's warning entirely; only our own 50 MP limit catches it.
    add(
        _reject(
            "png_60mp_own_limit",
            "xray_huge.png",
            handmade_png(7800, 7800, bit_depth=8, color_type=0, rows=4, row_bytes=7800),
            "xray",
            "image_too_large",
            400,
        )
    )
    add(
        _reject(
            "jpeg_declares_65500x65500", "huge.jpg", jpeg_with_dimensions(65500, 65500), "photo", "image_too_large", 400
        )
    )
    add(_reject("small_max_pixels", "photo.jpg", small_jpeg, "photo", "image_too_large", 400, max_pixels=64 * 48 - 1))

    # ---- broken files -----------------------------------------------------------------------
    noisy = Image.effect_noise((160, 120), 60).convert("RGB")
    noisy_jpeg = save(noisy, "JPEG", quality=90)
    add(_reject("truncated_jpeg", "cut.jpg", noisy_jpeg[: len(noisy_jpeg) // 2], "xray", "truncated_image", 400))
    noisy_png = save(noisy, "PNG")
    add(_reject("truncated_png", "cut.png", noisy_png[: len(noisy_png) * 2 // 3], "photo", "truncated_image", 400))
    broken = bytearray(noisy_png)
    broken[200:260] = b"\x00" * 60
    add(_reject("corrupt_png_idat", "broken.png", bytes(broken), "photo", "corrupt_image", 400))
    add(_reject("jpeg_header_only", "head.jpg", noisy_jpeg[:20], "photo", "corrupt_image", 400))

    # ---- formats outside the allow-list -----------------------------------------------------
    gif = bytearray(save(Image.new("P", (1, 1)), "GIF"))
    gif[6:8] = b"/*"  # logical screen width 0x2a2f: the classic GIF/JavaScript polyglot
    polyglot = bytes(gif) + b"*/=1;alert(document.domain);//"
    add(_reject("gif_js_polyglot", "avatar.jpg", polyglot, "photo", "unsupported_format", 415))
    frames = [Image.new("RGB", (20, 20), c) for c in ("red", "green", "blue")]
    add(
        _reject(
            "animated_gif",
            "anim.gif",
            save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0),
            "photo",
            "unsupported_format",
            415,
        )
    )
    add(
        _reject(
            "multipage_tiff",
            "scan.tiff",
            save(frames[0], "TIFF", save_all=True, append_images=frames[1:]),
            "xray",
            "unsupported_format",
            415,
        )
    )
    svg = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><rect width="9"/></svg>'
    add(_reject("svg", "logo.svg", svg, "photo", "unsupported_format", 415))
    pdf = b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n/JavaScript (app.alert(1))\n%%EOF\n"
    add(_reject("pdf_renamed_jpg", "xray.jpg", pdf, "xray", "unsupported_format", 415))
    add(_reject("webp", "photo.webp", save(photo, "WEBP", quality=80), "photo", "unsupported_format", 415))
    add(_reject("bmp", "photo.bmp", save(photo, "BMP"), "photo", "unsupported_format", 415))
    add(_reject("avif", "photo.avif", save(photo, "AVIF", quality=60), "photo", "unsupported_format", 415))
    add(_reject("html", "index.jpg", b"<!DOCTYPE html>\n" + HTML_PAYLOAD, "photo", "unsupported_format", 415))
    add(_reject("php", "shell.php.png", PHP_PAYLOAD, "photo", "unsupported_format", 415))
    add(
        _reject(
            "plain_text", "notes.png", b"Patient notes: nothing to see here.\n" * 4, "xray", "unsupported_format", 415
        )
    )
    add(_reject("exe", "setup.jpg", DOS_STUB + bytes(range(256)) * 4, "photo", "unsupported_format", 415))
    add(_reject("random_bytes", "noise.heic", bytes((i * 97 + 13) % 251 for i in range(3000)), "photo",
                "unsupported_format", 415))  # fmt: skip

    # ---- frames -----------------------------------------------------------------------------
    add(
        _reject(
            "apng_two_frames",
            "anim.png",
            save(frames[0], "PNG", save_all=True, append_images=frames[1:2], duration=100),
            "photo",
            "multiple_frames",
            400,
        )
    )
    add(
        _reject(
            "heif_sequence",
            "burst.heic",
            save(frames[0], "HEIF", save_all=True, append_images=frames[1:], quality=70),
            "photo",
            "multiple_frames",
            400,
        )
    )
    mpo = save(
        Image.new("RGB", (48, 32), (220, 20, 20)),
        "MPO",
        save_all=True,
        append_images=[Image.new("RGB", (48, 32), (20, 20, 220))],
        quality=90,
    )
    add(_accept("mpo_two_frames", "stereo.jpg", mpo, "photo", "RGB", (48, 32), "MPO"))

    # ---- accepted, with things to strip or convert --------------------------------------------
    add(
        _accept(
            "jpeg_html_php_appended",
            "selfie.jpg",
            small_jpeg + HTML_PAYLOAD + PHP_PAYLOAD,
            "photo",
            "RGB",
            (64, 48),
            "JPEG",
        )
    )
    add(
        _accept(
            "png_zip_appended",
            "tooth.png",
            save(photo, "PNG") + b"PK\x03\x04" + HTML_PAYLOAD,
            "photo",
            "RGB",
            (64, 48),
            "PNG",
        )
    )
    add(
        _accept(
            "jpeg_gps_orientation6",
            "IMG_0001.JPG",
            save(Image.fromarray(half_red_jpeg_array()), "JPEG", quality=95, exif=exif_gps_orientation(6)),
            "photo",
            "RGB",
            (20, 40),
            "JPEG",
        )
    )
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", PNG_COMMENT)
    info.add_text("Description", PNG_COMMENT + " <html>", zip=True)
    info.add_itxt("XML:com.adobe.xmp", f"<x:xmpmeta>{PNG_COMMENT}</x:xmpmeta>")
    add(
        _accept(
            "png_text_chunks", "scan.png", save(photo, "PNG", pnginfo=info, dpi=(300, 300)), "photo", "RGB",
            (64, 48), "PNG",
        )
    )  # fmt: skip
    add(
        _accept(
            "jpeg_icc_srgb",
            "camera.jpg",
            save(photo, "JPEG", quality=90, icc_profile=srgb_icc()),
            "photo",
            "RGB",
            (64, 48),
            "JPEG",
        )
    )
    add(
        _accept(
            "png_icc_linear",
            "linear.png",
            save(Image.new("RGB", (16, 16), (128, 128, 128)), "PNG", icc_profile=linear_rgb_icc()),
            "photo",
            "RGB",
            (16, 16),
            "PNG",
        )
    )
    add(
        _accept(
            "jpeg_comment_segment",
            "comment.jpg",
            save(photo, "JPEG", quality=90, comment=HTML_PAYLOAD * 200),
            "photo",
            "RGB",
            (64, 48),
            "JPEG",
        )
    )
    add(
        _accept(
            "cmyk_jpeg",
            "print.jpg",
            save(Image.new("CMYK", (30, 20), (0, 255, 255, 0)), "JPEG", quality=95),
            "photo",
            "RGB",
            (30, 20),
            "JPEG",
        )
    )
    rgba = Image.new("RGBA", (30, 20), (255, 0, 0, 0))
    rgba.paste((0, 0, 255, 255), (0, 0, 15, 20))
    add(_accept("rgba_png", "cutout.png", save(rgba, "PNG"), "photo", "RGB", (30, 20), "PNG"))
    pal = Image.new("P", (30, 20), 0)
    pal.putpalette([0, 0, 0, 0, 200, 0] + [0] * 762)
    pal.paste(1, (0, 0, 15, 20))
    add(
        _accept(
            "palette_png_transparency", "icon.png", save(pal, "PNG", transparency=0), "photo", "RGB", (30, 20), "PNG"
        )
    )
    add(_accept("palette_png_xray", "pano.png", save(pal, "PNG"), "xray", "L", (30, 20), "PNG"))
    add(
        _accept(
            "png16_xray",
            "pano16.png",
            save(Image.fromarray(xray16_array()), "PNG"),
            "xray",
            "I;16",
            (96, 64),
            "PNG",
        )
    )
    add(
        _accept(
            "png16_as_photo",
            "grey16.png",
            save(Image.fromarray(xray16_array()), "PNG"),
            "photo",
            "RGB",
            (96, 64),
            "PNG",
        )
    )
    add(_accept("png8_grey_photo", "grey.png", save(photo.convert("L"), "PNG"), "photo", "RGB", (64, 48), "PNG"))
    add(_accept("rgb_xray_jpeg", "bitewing.jpg", save(photo, "JPEG", quality=90), "xray", "L", (64, 48), "JPEG"))
    add(_accept("jpeg_named_png", "photo.png", small_jpeg, "photo", "RGB", (64, 48), "JPEG"))
    heic = save(photo, "HEIF", quality=80, exif=exif_gps_orientation(1))
    add(_accept("heic_photo", "IMG_0002.HEIC", heic, "photo", "RGB", (64, 48), "HEIF"))
    add(_accept("heic_xray", "xray.heic", heic, "xray", "L", (64, 48), "HEIF"))
    heic_rotated = save(Image.fromarray(half_red_jpeg_array()), "HEIF", quality=90, exif=exif_gps_orientation(6))
    add(_accept("heic_orientation6", "IMG_0003.HEIC", heic_rotated, "photo", "RGB", (20, 40), "HEIF"))

    # ---- hostile names on valid images (the name must not matter) ------------------------------
    for label, hostile in (
        ("name_traversal", "../../x.jpg"),
        ("name_windows_traversal", "..\\..\\windows\\win.ini.jpg"),
        ("name_php_nul_encoded", "x.php%00.jpg"),
        ("name_php_nul", "x.php\x00.jpg"),
        ("name_reserved", "con.jpg"),
        ("name_300_chars", "a" * 296 + ".jpg"),
        ("name_rtl_override", "photo\u202egpj.exe"),
        ("name_html", "<img src=x onerror=alert(1)>.jpg"),
    ):
        add(_accept(label, hostile, small_jpeg, "photo", "RGB", (64, 48), "JPEG"))

    # ---- DICOM -------------------------------------------------------------------------------
    mz_preamble = DOS_STUB + HTML_PAYLOAD
    dcm16 = dicom_bytes(pixels=dicom_array16(), bits_stored=12, preamble=mz_preamble)
    add(_accept("dicom_mz_preamble_16bit", "IM0001.dcm", dcm16, "xray", "I;16", (48, 32), "DICOM"))
    add(_reject("dicom_as_photo", "IM0001.dcm", dcm16, "photo", "dicom_not_photo", 415))
    add(
        _accept(
            "dicom_monochrome1_8bit",
            "IM0002",
            dicom_bytes(pixels=dicom_array8(), bits_stored=8, photometric="MONOCHROME1"),
            "xray",
            "L",
            (40, 30),
            "DICOM",
        )
    )
    add(
        _reject(
            "dicom_jpeg_compressed",
            "IM0003.dcm",
            dicom_bytes(
                pixels=dicom_array8(),
                transfer_syntax=JPEGBaseline8Bit,
                pixel_data=encapsulate([save(Image.fromarray(dicom_array8()), "JPEG")]),
            ),
            "xray",
            "unsupported_dicom_compression",
            415,
        )
    )
    add(
        _reject(
            "dicom_deflated",
            "IM0004.dcm",
            dicom_bytes(pixels=dicom_array8(), transfer_syntax=DeflatedExplicitVRLittleEndian),
            "xray",
            "unsupported_dicom_compression",
            415,
        )
    )
    two = np.stack([dicom_array8(), dicom_array8()[::-1]])
    add(
        _reject(
            "dicom_multiframe",
            "cbct.dcm",
            dicom_bytes(pixels=two, frames=2, pixel_data=two.tobytes()),
            "xray",
            "multiple_frames",
            400,
        )
    )
    add(
        _reject(
            "dicom_declares_20000x20000",
            "IM0005.dcm",
            dicom_bytes(pixels=None, rows_cols=(20000, 20000), pixel_data=b"\x00" * 64),
            "xray",
            "image_too_large",
            400,
        )
    )
    garbage = DOS_STUB + b"\x00" * (128 - len(DOS_STUB)) + b"DICM" + bytes((i * 31 + 7) % 256 for i in range(500))
    add(_reject("dicom_garbage_after_prefix", "IM0007.dcm", garbage, "xray", "corrupt_image", 400))
    add(_reject("dicom_no_image", "report.dcm", dicom_bytes(pixels=None), "xray", "dicom_without_image", 400))
    add(
        _reject(
            "dicom_truncated_pixels",
            "IM0006.dcm",
            dicom_bytes(pixels=None, rows_cols=(30, 40), pixel_data=dicom_array8().tobytes()[:600]),
            "xray",
            "truncated_image",
            400,
        )
    )
    return cases
