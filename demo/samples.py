"""Sample visits for the demo clinic (``seed_demo --samples``): patients with photos and an X-ray,
analysed by the active models and partly reviewed, so a newcomer sees the whole workflow at once.

Images come from ``../shared/datasets`` when that folder exists (real labelled photos and a
panoramic X-ray; never copied into the repository), otherwise they are drawn here.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.db import transaction
from PIL import Image as PILImage
from PIL import ImageDraw

from analysis.models import Finding
from analysis.reviews import finding_review
from analysis.uploads import image_upload
from patients.selectors import patient_list
from patients.services import patient_create

SHARED = Path(settings.BASE_DIR).parent / "shared" / "datasets"
SAMPLES = [
    # practice id, given, family, date of birth, photo labels wanted, with an X-ray, reviewed
    ("DEMO-0001", "Ada", "Example", dt.date(1984, 3, 9), ["caries", "gingivitis"], True, True),
    ("DEMO-0002", "Ben", "Sample", dt.date(1971, 11, 23), ["calculus", ""], False, False),
]


def _drawn_photo(seed: int) -> bytes:
    """An intraoral-looking drawing: gums, a row of teeth, a dark spot on one of them."""
    rng = np.random.default_rng(seed)
    image = PILImage.new("RGB", (480, 320), (150, 40, 55))
    draw = ImageDraw.Draw(image)
    draw.ellipse((-40, 60, 520, 360), fill=(196, 86, 96))
    for i in range(7):
        x = 30 + i * 62
        draw.rounded_rectangle((x, 110, x + 54, 210 + int(rng.integers(-10, 10))), 14, fill=(236, 230, 214))
    spot = 30 + int(rng.integers(0, 7)) * 62 + 20
    draw.ellipse((spot, 150, spot + 14, 166), fill=(70, 50, 30))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def _drawn_xray() -> bytes:
    yy, xx = np.mgrid[0:300, 0:600]
    arch = np.exp(-(((yy - 150) / 70.0) ** 2)) * (0.6 + 0.4 * np.cos(xx / 18.0) ** 2)
    pixels = (arch * 50000 + 4000).astype(np.uint16)
    out = io.BytesIO()
    PILImage.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def _shared_photo(label: str, used: set[str]) -> tuple[str, bytes] | None:
    manifest = SHARED / "intraoral-photos" / "manifest.csv"
    if not manifest.exists():
        return None
    with manifest.open() as handle:
        for row in csv.DictReader(handle):
            labels = set(filter(None, row["labels"].split(";")))
            wanted = labels == {label} if label else not labels
            if wanted and row["file"] not in used:
                used.add(row["file"])
                path = manifest.parent / row["file"]
                return path.name, path.read_bytes()
    return None


def _shared_xray() -> tuple[str, bytes] | None:
    folder = SHARED / "dental-xrays" / "test" / "images"
    files = sorted(folder.glob("*.jpg")) if folder.exists() else []
    return (files[0].name, files[0].read_bytes()) if files else None


def seed_samples(dentist: Any) -> list[str]:
    """Create the sample patients of the clinic in scope (idempotent); returns their ids."""
    created: list[str] = []
    used: set[str] = set()
    for index, (external_id, given, family, born, labels, with_xray, reviewed) in enumerate(SAMPLES):
        if patient_list(search=external_id).exists():
            continue
        with transaction.atomic():
            patient = patient_create(external_id=external_id, given_name=given, family_name=family, date_of_birth=born)
            visit_id = None
            files: list[tuple[str, bytes, str]] = []
            for n, label in enumerate(labels):
                name, data = _shared_photo(label, used) or (f"photo-{n + 1}.jpg", _drawn_photo(index * 10 + n))
                files.append((name, data, "photo"))
            if with_xray:
                name, data = _shared_xray() or ("panoramic.png", _drawn_xray())
                files.append((name, data, "xray"))
            for name, data, modality in files:
                image = image_upload(
                    patient=patient,
                    stream=io.BytesIO(data),
                    filename=name,
                    size=len(data),
                    modality=modality,
                    visit_id=visit_id,
                )
                visit_id = image.visit_id
        created.append(str(patient.pk))
        if reviewed:  # analyses ran in-process (embedded) once the block above committed
            findings = list(Finding.objects.filter(image__patient=patient, status="pending").order_by("-probability"))
            if findings:
                finding_review(finding=findings[0], decision="confirm", actor=dentist)
            if len(findings) > 1:
                finding_review(finding=findings[-1], decision="reject", actor=dentist, reason="not_present")
    return created
