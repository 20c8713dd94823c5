"""What the review page's viewer starts from: the 16-bit source of an X-ray, the photo heatmaps, and the patient's
previous signed visit beside this one (same modality, nearest view, findings per tooth)."""

from __future__ import annotations

import base64
import datetime as dt
import io
from typing import Any

import numpy as np
from PIL import Image as PILImage

from analysis.models import Finding
from analysis.reports import report_sign
from analysis.services import _heatmap_blob
from clinics.tenancy import clinic_scope
from patients.models import Visit
from patients.services import image_ingest, patient_create

from ..conftest import World
from .test_review_pages import _blob, _review


def _png(size: tuple[int, int], *, sixteen: bool = False) -> bytes:
    out = io.BytesIO()
    if sixteen:
        PILImage.fromarray(np.full((size[1], size[0]), 30000, dtype=np.uint16)).save(out, "PNG")
    else:
        PILImage.new("RGB", size, (180, 80, 80)).save(out, "PNG")
    return out.getvalue()


def _image(world: World, visit: Visit, size: tuple[int, int], modality: str, **kw: Any) -> Any:
    return image_ingest(
        patient=world.patient,
        stream=io.BytesIO(_png(size, **kw)),
        filename="x.png",
        size=None,
        modality=modality,
        visit_id=visit.pk,
    )


def _signed_visit(world: World, days_ago: int, images: list[tuple[tuple[int, int], str, str]]) -> Visit:
    """An earlier visit with one confirmed finding per image (condition, on tooth 16 for photos), signed."""
    visit = Visit.objects.create(patient=world.patient, visit_date=dt.date.today() - dt.timedelta(days=days_ago))
    for size, modality, condition in images:
        image = _image(world, visit, size, modality)
        Finding.objects.create(
            image=image,
            condition=condition,
            box=[0.1, 0.1, 0.2, 0.2],
            status="confirmed",
            source="clinician",
            tooth="16" if modality == "photo" else "36",
        )
    Finding.objects.create(
        image=image, condition=condition, box=[0.5, 0.5, 0.1, 0.1], status="rejected", source="model", probability=0.4
    )
    report_sign(visit=visit, signer=world.users["dentist"])
    return visit


def test_sixteen_bit_xray_and_heatmap_data(alice: World) -> None:
    with clinic_scope(alice.clinic.id):
        xray = _image(alice, alice.image.visit, (300, 150), "xray", sixteen=True)
        heat = np.zeros((28, 28), dtype=np.float32)
        heat[0, 0] = 1.0
        alice.finding.heatmap = _heatmap_blob(alice.analysis, alice.finding.pk, heat)
        alice.finding.save(update_fields=["heatmap"])
    data = _blob(_review(alice, "dentist"))
    photo, radiograph = data["images"]
    assert photo["bit_depth"] == 8 and photo["pixels_url"] is None and photo["window"] is None
    assert photo["preview_size"] == [64, 48] and photo["original_url"].endswith("?variant=original")
    assert radiograph["id"] == str(xray.pk) and radiograph["bit_depth"] == 16
    assert radiograph["pixels_url"].endswith("?variant=pixels16")
    assert radiograph["window"] == [xray.window_low, xray.window_high]
    heatmap = photo["findings"][0]["heatmap"]
    raw = base64.b64decode(heatmap["data"])
    assert (heatmap["rows"], heatmap["cols"], len(raw), raw[0], raw[1]) == (28, 28, 784, 255, 0)
    assert data["previous"] is None  # no earlier signed visit


def test_previous_signed_visit_same_modality_nearest_view_by_tooth(alice: World) -> None:
    with clinic_scope(alice.clinic.id):
        _signed_visit(alice, 400, [((64, 48), "photo", "gingivitis")])  # older: not the one shown
        earlier = _signed_visit(
            alice,
            100,
            [((300, 100), "photo", "calculus"), ((64, 48), "photo", "caries"), ((200, 100), "xray", "filling")],
        )
        # a later signed visit and an unsigned earlier one are never "the previous signed visit"
        Visit.objects.create(patient=alice.patient, visit_date=dt.date.today() - dt.timedelta(days=10))
        xray = _image(alice, alice.image.visit, (400, 200), "xray", sixteen=True)
    data = _blob(_review(alice, "dentist"))
    previous = data["previous"]
    assert previous["visit_id"] == str(earlier.pk) and previous["version"] == 1
    assert previous["date"] == (dt.date.today() - dt.timedelta(days=100)).isoformat()
    photo = previous["matches"][str(alice.image.pk)]
    assert photo["number"] == 2 and (photo["width"], photo["height"]) == (64, 48)  # 4:3 like this photo, not 3:1
    assert photo["preview_url"].endswith("?variant=preview")
    assert photo["teeth"] == [{"heading": "Tooth 16 (upper right first molar)", "problems": ["Caries"], "status": []}]
    assert [f["condition"] for f in photo["findings"]] == ["caries"]
    radiograph = previous["matches"][str(xray.pk)]
    assert radiograph["number"] == 3
    # the rejected suggestion is left out; the filling is the tooth's status, not a problem
    assert radiograph["teeth"] == [
        {"heading": "Tooth 36 (lower left first molar)", "problems": [], "status": ["Filling"]}
    ]
    assert [f["condition"] for f in radiograph["findings"]] == ["filling"]


def test_the_previous_visit_of_another_patient_is_never_shown(alice: World) -> None:
    with clinic_scope(alice.clinic.id):
        other = patient_create(
            external_id="alice-0002", given_name="Other", family_name="Person", date_of_birth=dt.date(1970, 1, 1)
        )
        visit = Visit.objects.create(patient=other, visit_date=dt.date.today() - dt.timedelta(days=30))
        image = image_ingest(
            patient=other,
            stream=io.BytesIO(_png((64, 48))),
            filename="x.png",
            size=None,
            modality="photo",
            visit_id=visit.pk,
        )
        Finding.objects.create(
            image=image, condition="caries", box=[0, 0, 0.1, 0.1], status="confirmed", source="clinician"
        )
        report_sign(visit=visit, signer=alice.users["dentist"])
    assert _blob(_review(alice, "dentist"))["previous"] is None
