"""``Idempotency-Key`` on ``POST /api/v1/patients/{id}/images/``: a retried upload is stored once.

Runs on SQLite and, with ``DATABASE_URL`` set, on PostgreSQL (where the key table has row-level security)."""

from __future__ import annotations

import datetime as dt
import io
import threading
import time
import uuid
from typing import Any

import pytest
from django.db import connections
from django.urls import reverse
from django.utils import timezone

from analysis import uploads
from analysis.models import Analysis, UploadIdempotencyKey
from clinics.models import AuditEvent
from clinics.tenancy import clinic_scope
from patients.models import Image
from patients.services import patient_create

from ..conftest import World, build_clinic, png_bytes, token_client


def _post(client: Any, patient_id: object, key: str | None, data: bytes | None = None) -> Any:
    f = io.BytesIO(data if data is not None else png_bytes(color=(10, 200, 30)))
    f.name = "scan.png"
    headers = {} if key is None else {"Idempotency-Key": key}
    return client.post(
        reverse("api:patient-image-list", kwargs={"pk": patient_id}),
        {"file": f, "modality": "photo"},
        format="multipart",
        headers=headers,
    )


def _images(world: World) -> int:
    return Image.unscoped.filter(clinic=world.clinic).count()


def test_a_repeated_request_with_the_same_key_returns_the_stored_image(alice: World) -> None:
    client = token_client(alice, "staff")
    before = _images(alice)
    key = str(uuid.uuid4())
    first = _post(client, alice.patient.pk, key)
    assert first.status_code == 201, first.content
    again = _post(client, alice.patient.pk, key)
    assert again.status_code == 200, again.content
    assert again.json() == first.json()  # the same body shape (and image) as the 201
    assert _images(alice) == before + 1
    image_id = first.json()["id"]
    assert Analysis.unscoped.filter(image_id=image_id).count() <= 1  # nothing queued twice
    repeated = AuditEvent.unscoped.filter(clinic=alice.clinic, action="image.upload_repeated")
    assert [e.object_id for e in repeated] == [image_id]
    # Without a key, as before: each request stores.
    assert _post(client, alice.patient.pk, None).status_code == 201
    assert _post(client, alice.patient.pk, None).status_code == 201
    assert _images(alice) == before + 3


def test_another_api_client_of_the_same_clinic_gets_the_same_image(alice: World) -> None:
    key = "retry-" + "x" * 58  # 64 characters: the longest key
    first = _post(token_client(alice, "staff"), alice.patient.pk, key)
    second = _post(token_client(alice, "dentist"), alice.patient.pk, key)
    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json()["id"] == first.json()["id"]


@pytest.mark.parametrize("key", ["", " ", "a" * 65, "has space", "semi;colon", "ünïcode", "a/b", "a.b"])
def test_an_invalid_key_is_refused_and_nothing_is_stored(alice: World, key: str) -> None:
    before = _images(alice)
    response = _post(token_client(alice, "staff"), alice.patient.pk, key)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid_idempotency_key" and error["message"]
    assert _images(alice) == before and not UploadIdempotencyKey.unscoped.exists()


def test_a_key_reused_for_another_patient_is_a_conflict(alice: World) -> None:
    with clinic_scope(alice.clinic.id):
        other = patient_create(
            external_id="alice-0002", given_name="Other", family_name="Person", date_of_birth=dt.date(1990, 1, 2)
        )
    client = token_client(alice, "staff")
    key = str(uuid.uuid4())
    assert _post(client, alice.patient.pk, key).status_code == 201
    before = _images(alice)
    conflict = _post(client, other.pk, key)
    assert conflict.status_code == 409, conflict.content
    assert conflict.json()["error"]["code"] == "idempotency_key_reused"
    assert _images(alice) == before
    with clinic_scope(alice.clinic.id):
        assert not Image.objects.filter(visit__patient=other).exists()


def test_keys_are_per_clinic(alice: World, bob: World) -> None:
    key = str(uuid.uuid4())
    mine = _post(token_client(alice, "staff"), alice.patient.pk, key)
    theirs = _post(token_client(bob, "staff"), bob.patient.pk, key)
    assert (mine.status_code, theirs.status_code) == (201, 201)
    assert mine.json()["id"] != theirs.json()["id"]
    # Nor can bob reach alice's image through her key: alice's patient is not found for him.
    assert _post(token_client(bob, "staff"), alice.patient.pk, key).status_code == 404


def test_a_rejected_upload_frees_its_key(alice: World) -> None:
    client = token_client(alice, "staff")
    key = str(uuid.uuid4())
    rejected = _post(client, alice.patient.pk, key, data=b"not an image at all")
    assert rejected.status_code in (400, 415), rejected.content
    assert not UploadIdempotencyKey.unscoped.exists()
    assert _post(client, alice.patient.pk, key).status_code == 201  # the corrected retry stores


def test_a_key_expires_after_24_hours(alice: World) -> None:
    client = token_client(alice, "staff")
    key = str(uuid.uuid4())
    first = _post(client, alice.patient.pk, key)
    UploadIdempotencyKey.unscoped.filter(key=key).update(created_at=timezone.now() - dt.timedelta(hours=24, minutes=1))
    later = _post(client, alice.patient.pk, key)
    assert later.status_code == 201 and later.json()["id"] != first.json()["id"]
    assert UploadIdempotencyKey.unscoped.filter(key=key).count() == 1  # the expired row is gone


def test_deleting_the_image_deletes_its_key(alice: World) -> None:
    key = str(uuid.uuid4())
    image_id = _post(token_client(alice, "staff"), alice.patient.pk, key).json()["id"]
    with clinic_scope(alice.clinic.id):
        Analysis.objects.filter(image_id=image_id).delete()
        Image.objects.filter(pk=image_id).delete()
    assert not UploadIdempotencyKey.unscoped.filter(key=key).exists()


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_requests_with_the_same_key_store_one_image(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both requests are in flight together (a barrier before their transactions start); the first to claim the
    key is slowed down while it holds it, so the second really meets it: it waits, then answers the first's image."""
    world = build_clinic("idem-race")
    before = _images(world)
    barrier = threading.Barrier(2, timeout=30)
    real_validate, real_upload = uploads.idempotency_key_validate, uploads.image_upload

    def validate_together(raw: str) -> str:
        barrier.wait()
        return real_validate(raw)

    def slow_upload(**kwargs: Any) -> Image:
        time.sleep(0.5)  # holds the claimed key while the other request tries to claim it
        return real_upload(**kwargs)

    monkeypatch.setattr(uploads, "idempotency_key_validate", validate_together)
    monkeypatch.setattr(uploads, "image_upload", slow_upload)
    key = str(uuid.uuid4())
    clients = [token_client(world, "staff"), token_client(world, "dentist")]
    answers: dict[int, Any] = {}

    def post(n: int) -> None:
        try:
            answers[n] = _post(clients[n], world.patient.pk, key)
        except BaseException as exc:  # noqa: BLE001 - checked below
            answers[n] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=post, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert all(not isinstance(a, BaseException) for a in answers.values()), answers
    assert sorted(a.status_code for a in answers.values()) == [200, 201], [a.content for a in answers.values()]
    assert answers[0].json()["id"] == answers[1].json()["id"]
    assert _images(world) == before + 1
    assert UploadIdempotencyKey.unscoped.filter(key=key).count() == 1
