"""An unexpected server fault: a short page with a reference (HTML) or the API's error shape, never a trace or
Django's debug page, and nothing stored for a failed upload."""

from __future__ import annotations

import io
import logging

import pytest
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from clinics.tenancy import clinic_scope
from patients.models import Image

from .conftest import World, png_bytes, user_client


def _boom(*args: object, **kwargs: object) -> None:
    raise RuntimeError("secret internal detail 4242")


def test_api_fault_answers_the_error_shape_with_a_reference(alice: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("analysis.uploads.image_ingest", _boom)
    client = APIClient(raise_request_exception=False)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {alice.api_secret}")
    with clinic_scope(alice.clinic.id):
        before = Image.objects.count()
    response = client.post(
        reverse("api:patient-image-list", kwargs={"pk": alice.patient.pk}),
        {"file": io.BytesIO(png_bytes()), "modality": "photo"},
        format="multipart",
    )
    assert response.status_code == 500 and response["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == "server_error" and error["details"] == {"reference": response["X-Request-ID"]}
    assert b"4242" not in response.content and b"Traceback" not in response.content
    with clinic_scope(alice.clinic.id):
        assert Image.objects.count() == before


def test_page_fault_shows_a_short_page_not_the_debug_page(alice: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("patients.views.patient_list", _boom)
    client: Client = user_client(alice.users["staff"])
    client.raise_request_exception = False
    response = client.get(reverse("patients:list"))
    assert response.status_code == 500 and response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    assert "Server problem" in html and response["X-Request-ID"] in html
    assert len(response.content) < 2048  # Django's debug page is about 200 KB
    assert "4242" not in html and "Traceback" not in html and "SECRET_KEY" not in html


def test_the_reference_on_the_error_page_is_in_the_log(
    alice: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("patients.views.patient_list", _boom)
    client: Client = user_client(alice.users["staff"])
    client.raise_request_exception = False
    with caplog.at_level(logging.ERROR, logger="django.request"):
        response = client.get(reverse("patients:list"))
    [record] = [r for r in caplog.records if r.name == "django.request" and r.levelno >= logging.ERROR]
    handler = next(h for h in logging.getLogger().handlers if getattr(h, "filters", None))
    assert response["X-Request-ID"] in handler.format(record)  # the console log line carries the page's reference
