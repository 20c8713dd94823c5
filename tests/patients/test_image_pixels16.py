"""The 16-bit values of an X-ray for the review viewer's window/level (``?variant=pixels16`` of the image page)."""

from __future__ import annotations

import io

import numpy as np
from django.urls import reverse
from PIL import Image as PILImage

from clinics.models import AuditEvent
from clinics.tenancy import clinic_scope
from patients.services import image_ingest

from ..conftest import World, user_client


def _xray(world: World, pixels: np.ndarray) -> object:
    out = io.BytesIO()
    PILImage.fromarray(pixels).save(out, "PNG")
    with clinic_scope(world.clinic.id):
        return image_ingest(
            patient=world.patient,
            stream=io.BytesIO(out.getvalue()),
            filename="pano.png",
            size=None,
            modality="xray",
            visit_id=world.image.visit_id,
        )


def test_a_sixteen_bit_xray_gives_its_exact_values_and_the_read_is_audited(alice: World) -> None:
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 65536, size=(30, 40), dtype=np.uint16)
    pixels[0, 0], pixels[0, 1] = 1, 65535  # the full range survives (no 8-bit rounding, no windowing)
    image = _xray(alice, pixels)
    assert image.bit_depth == 16
    url = reverse("patients:image", kwargs={"pk": image.pk}) + "?variant=pixels16"
    response = user_client(alice.users["dentist"]).get(url)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/octet-stream" and response["Cache-Control"] == "no-store"
    values = np.frombuffer(response.content, dtype="<u2").reshape(30, 40)
    assert np.array_equal(values, pixels)
    assert AuditEvent.unscoped.filter(action="image.view", object_id=str(image.pk)).exists()


def test_an_eight_bit_image_has_no_sixteen_bit_values(alice: World) -> None:
    url = reverse("patients:image", kwargs={"pk": alice.image.pk}) + "?variant=pixels16"
    response = user_client(alice.users["dentist"]).get(url)
    assert response.status_code == 404 and b"no 16-bit" in response.content


def test_another_clinic_gets_nothing(alice: World, bob: World) -> None:
    image = _xray(alice, np.full((8, 8), 40000, dtype=np.uint16))
    url = reverse("patients:image", kwargs={"pk": image.pk}) + "?variant=pixels16"
    assert user_client(bob.users["dentist"]).get(url).status_code == 404
