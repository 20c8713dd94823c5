"""``POST /api/v1/patients/{id}/images/batch/``: several files in one request, one result per file.

Each file is handled as the single-file upload handles it, in its own transaction: a rejected file stores nothing
and does not stop the others. Runs on SQLite and, with ``DATABASE_URL`` set, on PostgreSQL."""

from __future__ import annotations

import io
import uuid
from typing import Any

import pytest
from django.core.cache import cache
from django.urls import reverse

from analysis.models import Analysis, UploadIdempotencyKey
from clinics.models import AuditEvent
from patients.models import Image

from ..conftest import World, build_clinic, png_bytes, token_client


def _file(name: str, data: bytes) -> io.BytesIO:
    f = io.BytesIO(data)
    f.name = name
    return f


def _post(client: Any, patient_id: object, files: list[tuple[str, bytes]], **fields: Any) -> Any:
    return client.post(
        reverse("api:patient-image-batch", kwargs={"pk": patient_id}),
        {"file": [_file(name, data) for name, data in files], "modality": "photo", **fields},
        format="multipart",
    )


def _images(world: World) -> int:
    return Image.unscoped.filter(clinic=world.clinic).count()


def test_every_file_gets_its_own_result_and_a_bad_one_does_not_stop_the_others(alice: World) -> None:
    client = token_client(alice, "staff")
    before = _images(alice)
    response = _post(
        client,
        alice.patient.pk,
        [("a.png", png_bytes(color=(200, 40, 40))), ("notes.png", b"not an image"), ("b.png", png_bytes())],
    )
    assert response.status_code == 207, response.content
    body = response.json()
    assert (body["stored"], body["rejected"]) == (2, 1)
    assert [(r["index"], r["filename"], r["status"]) for r in body["results"]] == [
        (0, "a.png", 201),
        (1, "notes.png", 415),
        (2, "b.png", 201),
    ]
    bad = body["results"][1]
    assert "image" not in bad and bad["error"]["code"] and bad["error"]["message"]
    stored = [r["image"]["id"] for r in body["results"] if r["status"] == 201]
    assert _images(alice) == before + 2  # the refused file stored nothing
    assert Analysis.unscoped.filter(image_id__in=stored).count() == 2  # each stored file is analysed
    assert AuditEvent.unscoped.filter(clinic=alice.clinic, action="image.rejected").count() == 1
    assert AuditEvent.unscoped.filter(clinic=alice.clinic, action="image.upload", object_id__in=stored).count() == 2


def test_all_stored_is_201_and_keys_make_a_retry_store_nothing_twice(alice: World) -> None:
    client = token_client(alice, "staff")
    files = [("a.png", png_bytes(color=(1, 2, 3))), ("b.png", png_bytes(color=(4, 5, 6)))]
    keys = [str(uuid.uuid4()), str(uuid.uuid4())]
    first = _post(client, alice.patient.pk, files, idempotency_key=keys)
    assert first.status_code == 201, first.content
    before = _images(alice)
    again = _post(client, alice.patient.pk, files, idempotency_key=keys)
    assert again.status_code == 201, again.content
    assert [r["status"] for r in again.json()["results"]] == [200, 200]
    assert [r["image"]["id"] for r in again.json()["results"]] == [r["image"]["id"] for r in first.json()["results"]]
    assert _images(alice) == before
    assert UploadIdempotencyKey.unscoped.filter(key__in=keys).count() == 2


def test_whole_request_refusals_store_nothing(alice: World, settings: Any) -> None:
    client = token_client(alice, "staff")
    before = _images(alice)
    one = [("a.png", png_bytes())]
    mismatch = _post(client, alice.patient.pk, one * 2, idempotency_key=[str(uuid.uuid4())])
    assert mismatch.status_code == 400 and mismatch.json()["error"]["code"] == "idempotency_keys_mismatch"
    same_key = _post(client, alice.patient.pk, one * 2, idempotency_key=[str(uuid.uuid4())] * 2)
    assert same_key.status_code == 400 and same_key.json()["error"]["code"] == "idempotency_key_repeated"
    bad_key = _post(client, alice.patient.pk, one, idempotency_key=["not a key!"])
    assert bad_key.status_code == 400 and bad_key.json()["error"]["code"] == "invalid_idempotency_key"
    settings.UPLOAD_BATCH_MAX_FILES = 2
    too_many = _post(client, alice.patient.pk, one * 3)
    assert too_many.status_code == 400 and too_many.json()["error"]["code"] == "too_many_files"
    assert AuditEvent.unscoped.filter(clinic=alice.clinic, action="image.rejected", details__code="too_many_files")
    none = client.post(
        reverse("api:patient-image-batch", kwargs={"pk": alice.patient.pk}), {"modality": "photo"}, format="multipart"
    )
    assert none.status_code == 400 and none.json()["error"]["code"] == "no_file"
    no_modality = client.post(
        reverse("api:patient-image-batch", kwargs={"pk": alice.patient.pk}),
        {"file": [_file("a.png", png_bytes())]},
        format="multipart",
    )
    assert no_modality.status_code == 400
    assert _images(alice) == before


def test_the_batch_limit_is_the_whole_request_and_each_file_keeps_its_own(alice: World, settings: Any) -> None:
    client = token_client(alice, "staff")
    before = _images(alice)
    data = png_bytes(size=(300, 200), color=(9, 9, 9))
    settings.IMAGE_MAX_BYTES = len(data) + 10
    settings.UPLOAD_BATCH_MAX_BYTES = 3 * len(data) + 10
    ok = _post(client, alice.patient.pk, [(f"{i}.png", png_bytes(size=(300, 200), color=(i, 9, 9))) for i in range(3)])
    assert ok.status_code == 201, ok.content  # each file under one file's limit, the three of them over it
    over = _post(client, alice.patient.pk, [(f"{i}.png", data) for i in range(5)])
    assert over.status_code == 413 and over.json()["error"]["code"] == "file_too_large"
    big = _post(client, alice.patient.pk, [("big.png", png_bytes(size=(900, 700), color=(1, 99, 7)))])
    assert big.status_code == 413
    assert _images(alice) == before + 3
    # The single-file upload keeps its own cap: three files' worth is refused there.
    single = client.post(
        reverse("api:patient-image-list", kwargs={"pk": alice.patient.pk}),
        {"file": _file("x.png", data + b"\0" * (2 * len(data))), "modality": "photo"},
        format="multipart",
    )
    assert single.status_code == 413


def test_each_file_counts_against_the_upload_limit(alice: World, settings: Any) -> None:
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "upload": "2/60"}
    cache.clear()
    client = token_client(alice, "staff")
    response = _post(client, alice.patient.pk, [(f"{i}.png", png_bytes(color=(i, 50, 50))) for i in range(3)])
    assert response.status_code == 207, response.content
    results = response.json()["results"]
    assert [r["status"] for r in results] == [201, 201, 429]
    assert int(response["Retry-After"]) == results[2]["error"]["details"]["retry_after_seconds"]
    assert results[2]["error"]["code"] == "rate_limited" and results[2]["error"]["details"]["retry_after_seconds"] > 0
    assert _post(client, alice.patient.pk, [("d.png", png_bytes())]).status_code == 429  # the next request too


def test_another_clinics_patient_is_not_found(alice: World, db: object) -> None:
    bob = build_clinic("bob")
    response = _post(token_client(alice, "staff"), bob.patient.pk, [("a.png", png_bytes())])
    assert response.status_code == 404
    assert Image.unscoped.filter(clinic=bob.clinic).count() == 1  # bob's own image only


def test_a_file_for_an_unknown_visit_is_refused_and_the_refusal_is_audited(alice: World) -> None:
    client = token_client(alice, "staff")
    missing = _post(client, alice.patient.pk, [("a.png", png_bytes())], visit=str(uuid.uuid4()))
    assert missing.status_code == 207
    assert [(r["status"], r["error"]["code"]) for r in missing.json()["results"]] == [(404, "visit_not_found")]
    assert AuditEvent.unscoped.filter(clinic=alice.clinic, action="image.rejected", details__code="visit_not_found")


def test_a_fault_on_one_file_is_that_files_answer_and_the_others_are_stored(
    alice: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The storage fails while the second file is written: the batch still answers what was stored and which file
    to send again (a 500 for the whole request hid the first file's stored image)."""
    from patients import services as patient_services

    real_put, calls = patient_services.blob_put, []

    def flaky_put(blob: bytes) -> str:
        calls.append(1)
        if len(calls) == 3:  # the first file writes two blobs (original, model-input copy) or one; fail a later one
            raise OSError("storage unreachable")
        return real_put(blob)

    monkeypatch.setattr(patient_services, "blob_put", flaky_put)
    before = _images(alice)
    response = _post(token_client(alice, "staff"), alice.patient.pk, [(f"{n}.png", png_bytes()) for n in range(3)])
    assert response.status_code == 207, response.content
    statuses = [r["status"] for r in response.json()["results"]]
    assert statuses.count(503) == 1 and statuses.count(201) == 2
    failed = next(r for r in response.json()["results"] if r["status"] == 503)
    assert failed["error"]["code"] == "upload_failed" and "image" not in failed
    assert _images(alice) == before + 2
