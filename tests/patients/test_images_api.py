"""Image intake through the API, encrypted storage, integrity, rotation, export and erasure."""

from __future__ import annotations

import io
import json
import os
import tempfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from django.db import connections
from django.db.models import Sum
from django.test import Client
from django.urls import reverse
from PIL import Image as PILImage

from clinics.models import AuditEvent
from clinics.tenancy import clinic_scope
from core import crypto
from core.key_providers import reset_key_provider
from patients.intake import IntakeError
from patients.models import DataKey, Image, Patient
from patients.selectors import image_get, patient_get
from patients.services import image_derive, image_ingest, image_read
from patients.storage import blob_size

from ..conftest import World, build_clinic, png_bytes, requires_postgres, token_client, user_client
from .hostile_corpus import build_corpus, exif_gps_orientation, half_red_jpeg_array, save

CORPUS = build_corpus()


def upload(client, world: World, name: str, data: bytes, modality: str = "photo"):  # noqa: ANN001, ANN201
    f = io.BytesIO(data)
    f.name = name
    return client.post(
        reverse("api:patient-image-list", kwargs={"pk": world.patient.pk}),
        {"file": f, "modality": modality},
        format="multipart",
    )


def stored_files(location: Path) -> list[Path]:
    return sorted(p for p in location.rglob("*") if p.is_file())


def test_corpus_has_at_least_25_cases() -> None:
    assert len(CORPUS) >= 25
    assert sum(c.expect == "reject" for c in CORPUS) >= 15


@pytest.mark.parametrize("case", CORPUS, ids=[c.id for c in CORPUS])
def test_every_hostile_or_odd_file_through_the_api(
    case,
    alice: World,
    settings,
    _image_storage: Path,  # noqa: ANN001
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if case.max_bytes:
        settings.IMAGE_MAX_BYTES = case.max_bytes
    if case.max_pixels:
        settings.IMAGE_MAX_PIXELS = case.max_pixels
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    before_files = stored_files(_image_storage)
    before_rows = Image.unscoped.count()
    response = upload(token_client(alice, "staff"), alice, case.name, case.data, case.modality)
    assert response.status_code < 500, response.content
    assert not list(spool.iterdir()), "a temporary file was left behind"
    if case.expect == "reject":
        body = response.json()
        assert response.status_code == case.status, body
        assert body["error"]["code"] == case.code and body["error"]["message"]
        assert stored_files(_image_storage) == before_files, "a rejected upload stored a blob"
        assert Image.unscoped.count() == before_rows
        assert AuditEvent.unscoped.filter(action="image.rejected", details__code=case.code).exists()
    else:
        assert response.status_code == 201, response.content
        body = response.json()
        if case.size:
            assert (body["width"], body["height"]) == case.size
        if case.original_format:
            assert body["original_format"] == case.original_format
        stored = Image.unscoped.get(pk=body["id"])
        # the original and the copy at the active model's input (the shipped model's); the preview and thumbnail
        # come after the answer (tests/patients/test_image_derive.py)
        assert stored.model_input_key and stored.model_input_spec
        assert len(stored_files(_image_storage)) == len(before_files) + len(stored.blob_keys) == len(before_files) + 2
        served = token_client(alice, "staff").get(body["file"])
        assert served.status_code == 200 and served["Cache-Control"] == "no-store"
        image = PILImage.open(io.BytesIO(served.content))
        assert image.format == "PNG" and not {"exif", "icc_profile", "comment"} & set(image.info)
        if case.mode:
            assert image.mode == case.mode


def test_stored_objects_are_opaque_and_bound_to_their_object(alice: World, _image_storage: Path) -> None:
    data = save(PILImage.new("RGB", (80, 60), (10, 200, 30)), "JPEG")
    response = upload(token_client(alice, "staff"), alice, "Alicesonmarker_front.jpg", data)
    assert response.status_code == 201
    for path in stored_files(_image_storage):
        blob = path.read_bytes()
        assert not blob.startswith((b"\xff\xd8", b"\x89PNG")) and b"JFIF" not in blob[:64]
        assert b"Alicesonmarker" not in blob and b"PNG" not in blob[:16]
        assert path.name not in ("Alicesonmarker_front.jpg",) and "marker" not in str(path).lower()
    with clinic_scope(alice.clinic.id):
        row = Patient.objects.get(pk=alice.patient.pk)
        assert b"Alicesonmarker" not in bytes(row.identity) and b"alice-0001" not in bytes(row.identity)
        image = image_get(response.json()["id"])
        other = image_get(alice.image.pk)
        key = crypto.decrypt  # the same patient key, another object's binding
        from patients.keys import patient_key

        blob = (_image_storage / image.original_key).read_bytes()
        with pytest.raises(crypto.IntegrityFailure):
            key(patient_key(image.patient), blob, f"image:{other.pk}:original".encode())
        assert crypto.decrypt(patient_key(image.patient), blob, f"image:{image.pk}:original".encode())
        for row in Image.objects.all():  # the uploaded file name is stored encrypted too
            assert b"Alicesonmarker" not in bytes(row.display_name)


def test_served_image_has_no_exif_and_is_upright(alice: World) -> None:
    data = save(PILImage.fromarray(half_red_jpeg_array()), "JPEG", quality=95, exif=exif_gps_orientation(6))
    response = upload(token_client(alice, "staff"), alice, "IMG_0001.JPG", data)
    assert response.status_code == 201
    served = token_client(alice, "dentist").get(response.json()["file"])
    assert b"Exif" not in served.content and b"GPS" not in served.content
    image = PILImage.open(io.BytesIO(served.content)).convert("RGB")
    assert image.size == (20, 40) and not image.getexif()
    top, bottom = image.getpixel((10, 5)), image.getpixel((10, 35))
    assert top[0] > 150 and top[1] < 100, top  # the red half is on top after applying Orientation=6
    assert bottom[0] < 100, bottom


def test_a_flipped_byte_is_an_error_and_an_audit_event(alice: World, _image_storage: Path) -> None:
    with clinic_scope(alice.clinic.id):
        image_derive(image=image_get(alice.image.pk))  # the thumbnail, made before the damage
    path = _image_storage / alice.image.original_key
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    path.write_bytes(bytes(blob))
    response = token_client(alice, "staff").get(reverse("api:image-file", kwargs={"pk": alice.image.pk}))
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "integrity_check_failed"
    assert not response.content.startswith(b"\x89PNG")
    event = AuditEvent.unscoped.filter(action="image.integrity_failed").latest("id")
    assert event.object_id == str(alice.image.pk) and event.outcome == "failure"
    assert (
        token_client(alice, "staff")
        .get(reverse("api:image-file", kwargs={"pk": alice.image.pk}) + "?variant=thumbnail")
        .status_code
        == 200
    )
    # a preview not made yet is not made from a damaged original
    with clinic_scope(alice.clinic.id):
        Image.objects.filter(pk=alice.image.pk).update(preview_key="")
    preview = token_client(alice, "staff").get(
        reverse("api:image-file", kwargs={"pk": alice.image.pk}) + "?variant=preview"
    )
    assert preview.status_code == 500 and preview.json()["error"]["code"] == "integrity_check_failed"


def test_rotation_rewraps_keys_and_every_image_still_decrypts(
    alice: World,
    bob: World,
    settings,  # noqa: ANN001
    _image_storage: Path,
) -> None:
    import base64
    import os

    from clinics.mfa import verify
    from patients import keys as patient_keys

    from ..conftest import enrol_totp, next_totp

    dentist = alice.users["dentist"]
    totp_secret = enrol_totp(dentist)
    blobs_before = {p: p.read_bytes() for p in stored_files(_image_storage)}
    wrapped_before = dict(DataKey.unscoped.values_list("id", "wrapped"))
    new_key = base64.b64encode(os.urandom(32)).decode()
    settings.MASTER_KEYS = f"{settings.MASTER_KEYS},next:{new_key}"
    settings.MASTER_KEY_ID = "next"
    reset_key_provider()
    try:
        out = io.StringIO()
        call_command("rotate_master_key", stdout=out)
        assert "in 2 clinic(s)" in out.getvalue()
        assert set(DataKey.unscoped.values_list("master_key_id", flat=True)) == {"next"}
        # a key made under the old master key while a run goes on (a process with the old settings) fails the run
        straggler = DataKey.unscoped.first()
        old_id = settings.MASTER_KEYS.split(",")[0].split(":")[0]
        real_rewrap = patient_keys.totp_rewrap_all

        def rewrap_meanwhile() -> int:
            DataKey.unscoped.filter(pk=straggler.pk).update(master_key_id=old_id, wrapped=wrapped_before[straggler.pk])
            return real_rewrap()

        patient_keys.totp_rewrap_all = rewrap_meanwhile
        try:
            with pytest.raises(CommandError, match="run it again"):
                call_command("rotate_master_key", stdout=io.StringIO())
        finally:
            patient_keys.totp_rewrap_all = real_rewrap
        call_command("rotate_master_key", stdout=io.StringIO())  # the second run takes it
        assert set(DataKey.unscoped.values_list("master_key_id", flat=True)) == {"next"}
        assert all(bytes(w) != bytes(wrapped_before[i]) for i, w in DataKey.unscoped.values_list("id", "wrapped"))
        assert {p: p.read_bytes() for p in stored_files(_image_storage)} == blobs_before  # blobs untouched
        settings.MASTER_KEYS = f"next:{new_key}"  # the old master key is retired
        reset_key_provider()
        for world in (alice, bob):
            with clinic_scope(world.clinic.id):
                for image in Image.objects.all():
                    assert image_read(image=image_get(image.pk), variant="original").startswith(b"\x89PNG")
        assert (
            token_client(alice, "staff")
            .get(reverse("api:patient-detail", kwargs={"pk": alice.patient.pk}))
            .json()["family_name"]
            == alice.patient_name
        )
        assert AuditEvent.unscoped.filter(action="crypto.master_key.rotate", clinic=alice.clinic).exists()
        # Authenticator secrets were re-wrapped too: codes still work with the old key retired.
        assert verify(dentist, next_totp(dentist, totp_secret)) == "totp"
    finally:
        reset_key_provider()


def test_export_holds_every_record_and_image_of_that_patient_only(alice: World, bob: World) -> None:
    client = token_client(alice, "clinic_admin")
    upload(token_client(alice, "staff"), alice, "second.png", png_bytes((30, 30)))
    response = client.get(reverse("api:patient-export", kwargs={"pk": alice.patient.pk}))
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    record = json.loads(archive.read("patient.json"))
    assert record["patient"]["family_name"] == alice.patient_name
    images = [i for v in record["visits"] for i in v["images"]]
    assert len(images) == 2 and {i["original_name"] for i in images} == {"smile.png", "second.png"}
    for item in images:
        assert PILImage.open(io.BytesIO(archive.read(item["file"]))).format == "PNG"
    assert str(bob.patient.pk) not in json.dumps(record) and str(bob.image.pk) not in archive.namelist()
    assert AuditEvent.unscoped.filter(action="patient.export", object_id=str(alice.patient.pk)).exists()
    assert (
        token_client(alice, "staff").get(reverse("api:patient-export", kwargs={"pk": alice.patient.pk})).status_code
        == 403
    )


def test_erasure_removes_everything_and_crypto_shreds_copies(
    alice: World,
    _image_storage: Path,
    django_capture_on_commit_callbacks,  # noqa: ANN001
) -> None:
    with clinic_scope(alice.clinic.id):
        image_derive(image=image_get(alice.image.pk))
        image = image_get(alice.image.pk)
        copy = (_image_storage / image.original_key).read_bytes()  # e.g. a backup taken before erasure
        from patients.keys import patient_key

        assert crypto.decrypt(patient_key(image.patient), copy, f"image:{image.pk}:original".encode())
    blobs = set(image.blob_keys.values())
    assert len(blobs) == 3  # original, preview, thumbnail (the fixture stores no model-input copy)
    client = token_client(alice, "clinic_admin")
    with django_capture_on_commit_callbacks(execute=True):
        response = client.delete(reverse("api:patient-detail", kwargs={"pk": alice.patient.pk}))
    assert response.status_code == 204
    assert not Patient.unscoped.filter(pk=alice.patient.pk).exists()
    assert not Image.unscoped.filter(patient_id=alice.patient.pk).exists()
    assert not DataKey.unscoped.filter(patient_id=alice.patient.pk).exists()
    assert not any((_image_storage / name).exists() for name in blobs)
    # The copy no longer decrypts: its data key is gone, and no other key of the clinic opens it.
    for key in DataKey.unscoped.filter(clinic=alice.clinic):
        with clinic_scope(alice.clinic.id), pytest.raises(crypto.IntegrityFailure):
            from patients.keys import unwrap

            crypto.decrypt(unwrap(key), copy, f"image:{image.pk}:original".encode())
    event = AuditEvent.unscoped.filter(action="patient.erase").latest("id")
    assert event.object_id == str(alice.patient.pk) and alice.patient_name not in json.dumps(event.details)
    assert (
        token_client(alice, "staff").get(reverse("api:patient-detail", kwargs={"pk": alice.patient.pk})).status_code
        == 404
    )


def test_legal_hold_refuses_erasure(alice: World) -> None:
    Patient.unscoped.filter(pk=alice.patient.pk).update(legal_hold=True)
    response = token_client(alice, "clinic_admin").delete(
        reverse("api:patient-detail", kwargs={"pk": alice.patient.pk})
    )
    assert response.status_code == 409 and response.json()["error"]["code"] == "legal_hold"
    assert Patient.unscoped.filter(pk=alice.patient.pk).exists()


def test_a_hold_set_after_the_patient_was_read_still_refuses_erasure(alice: World) -> None:
    from clinics.services import ServiceError
    from patients.services import patient_erase

    with clinic_scope(alice.clinic.id):
        read_before = Patient.objects.get(pk=alice.patient.pk)  # as a request read it, before the hold was set
        Patient.objects.filter(pk=alice.patient.pk).update(legal_hold=True)
        with pytest.raises(ServiceError) as refused:
            patient_erase(patient=read_before)
    assert refused.value.code == "legal_hold" and Patient.unscoped.filter(pk=alice.patient.pk).exists()


def test_html_pages_upload_thumbnails_export_and_erase(alice: World) -> None:
    staff = user_client(alice.users["staff"])
    page = staff.get(reverse("patients:upload", kwargs={"pk": alice.patient.pk}))
    assert page.status_code == 200 and b"dropzone" in page.content and b"camera" in page.content
    detail = staff.get(reverse("patients:detail", kwargs={"pk": alice.patient.pk})).content.decode()
    thumb_url = reverse("patients:image", kwargs={"pk": alice.image.pk}) + "?variant=thumbnail"
    assert thumb_url.replace("?", "?") in detail.replace("&amp;", "&")
    thumb = staff.get(thumb_url)
    assert thumb.status_code == 200 and thumb["Content-Type"] == "image/jpeg" and thumb["Cache-Control"] == "no-store"
    assert b"Erase patient" not in staff.get(reverse("patients:detail", kwargs={"pk": alice.patient.pk})).content
    admin = user_client(alice.users["clinic_admin"])
    export = admin.post(reverse("patients:export", kwargs={"pk": alice.patient.pk}))
    assert export.status_code == 200 and zipfile.is_zipfile(io.BytesIO(export.content))
    wrong = admin.post(reverse("patients:erase", kwargs={"pk": alice.patient.pk}), {"confirm": "nope"})
    assert wrong.status_code == 302 and Patient.unscoped.filter(pk=alice.patient.pk).exists()
    admin.post(reverse("patients:erase", kwargs={"pk": alice.patient.pk}), {"confirm": "alice-0001"})
    assert not Patient.unscoped.filter(pk=alice.patient.pk).exists()


def test_search_uses_blind_indexes(alice: World) -> None:
    client = token_client(alice, "staff")
    url = reverse("api:patient-search")
    for query in ("alice-0001", "alicesonmarker", "Marker Alicesonmarker", "MARKER"):
        found = client.post(url, {"query": query}, format="json").json()["results"]
        assert [p["id"] for p in found] == [str(alice.patient.pk)], query
    assert client.post(url, {"query": "Alices"}, format="json").json()["results"] == []


def test_a_declared_length_over_the_cap_is_refused_unread(alice: World, settings, _image_storage: Path) -> None:  # noqa: ANN001
    """A body whose Content-Length is already over the cap (+ 64 KiB for the form) is not parsed at all: 413 with
    the error shape, nothing stored -- not a 500 from the parser. Other POSTs so large get no form data either."""
    settings.IMAGE_MAX_BYTES = 10_000
    before = stored_files(_image_storage)
    data = png_bytes((200, 200)) + b"\0" * 100_000
    response = upload(token_client(alice, "staff"), alice, "huge.png", data)
    assert response.status_code == 413 and response.json()["error"]["code"] == "file_too_large"
    assert stored_files(_image_storage) == before
    with clinic_scope(alice.clinic.id):
        assert Image.objects.count() == 1
    # an HTML form POST of that size: the CSRF check sees no token in the (unread) body and refuses it
    page = Client(enforce_csrf_checks=True).post(
        reverse("clinics:login"), {"email": "x@y.z", "password": "p" * 100_000}, format="multipart"
    )
    assert page.status_code == 403


def test_byte_cap_is_enforced_while_streaming(alice: World, settings, _image_storage: Path) -> None:  # noqa: ANN001
    settings.IMAGE_MAX_BYTES = 10_000
    before = stored_files(_image_storage)
    data = png_bytes((200, 200)) + b"\0" * 20_000
    response = upload(token_client(alice, "staff"), alice, "big.png", data)
    assert response.status_code == 413 and response.json()["error"]["code"] == "file_too_large"
    assert stored_files(_image_storage) == before
    with clinic_scope(alice.clinic.id):
        assert Image.objects.count() == 1


def test_images_are_listed_per_patient(alice: World) -> None:
    response = token_client(alice, "dentist").get(reverse("api:patient-image-list", kwargs={"pk": alice.patient.pk}))
    body = response.json()
    assert response.status_code == 200 and [i["id"] for i in body["results"]] == [str(alice.image.pk)]
    meta = token_client(alice, "dentist").get(reverse("api:image-detail", kwargs={"pk": alice.image.pk})).json()
    assert meta["sha256"] == alice.image.sha256
    # not_assessable: only set when the image gate refused the image
    assert meta["analysis"] == {"id": str(alice.analysis.pk), "status": "done", "not_assessable": None}


def test_patient_get_prefetches_keys(alice: World, django_assert_max_num_queries) -> None:  # noqa: ANN001
    with clinic_scope(alice.clinic.id):
        with django_assert_max_num_queries(2):
            patient_get(alice.patient.pk)


def _noise_png(seed: int) -> bytes:
    out = io.BytesIO()
    rng = np.random.default_rng(seed)
    PILImage.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(out, "PNG")
    return out.getvalue()


def test_quota_counts_every_stored_blob_not_only_originals(alice: World, settings) -> None:  # noqa: ANN001
    """Previews, thumbnails and model-input copies take space too: the quota counts what storage holds."""
    settings.IMAGE_QUOTA_BYTES_PER_CLINIC = 0
    first = upload(token_client(alice, "staff"), alice, "first.png", _noise_png(1))
    assert first.status_code == 201
    with clinic_scope(alice.clinic.id):
        images = list(Image.objects.all())
        for image in images:
            assert image.stored_bytes == sum(blob_size(k) for k in image.blob_keys.values()) > image.size_bytes
        new = Image.objects.get(pk=first.json()["id"])
    stored = sum(i.stored_bytes for i in images)
    # room for one more original (all the old rule counted) but not for its preview and thumbnail
    settings.IMAGE_QUOTA_BYTES_PER_CLINIC = stored + new.size_bytes + 100
    assert new.stored_bytes > new.size_bytes + 200
    response = upload(token_client(alice, "staff"), alice, "second.png", _noise_png(2))
    assert response.status_code == 413 and response.json()["error"]["code"] == "quota_exceeded"
    with clinic_scope(alice.clinic.id):
        assert Image.objects.count() == len(images)  # the rejected upload stored nothing
    settings.IMAGE_QUOTA_BYTES_PER_CLINIC = stored + 2 * new.stored_bytes  # room for all its blobs
    response = upload(token_client(alice, "staff"), alice, "second.png", _noise_png(2))
    assert response.status_code == 201, response.json()


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_uploads_cannot_both_pass_the_quota_on_the_same_total(settings, monkeypatch) -> None:  # noqa: ANN001
    """Two uploads of one clinic race: both pass the early check and write their blobs, then the check under
    the clinic's lock lets exactly one in; the other stores nothing (its blobs are removed)."""
    from patients import services as patient_services

    world = build_clinic("race")
    with clinic_scope(world.clinic.id):
        used = Image.objects.aggregate(total=Sum("stored_bytes"))["total"]
    data = [_noise_png(11), _noise_png(12)]
    probe = build_clinic("race-probe")  # what each upload will occupy, measured in another clinic
    with clinic_scope(probe.clinic.id):
        sizes = [
            image_ingest(
                patient=probe.patient, stream=io.BytesIO(d), filename="p.png", size=None, modality="photo"
            ).stored_bytes
            for d in data
        ]
    settings.IMAGE_QUOTA_BYTES_PER_CLINIC = used + max(sizes) + min(sizes) // 2  # room for one, not two

    barrier = threading.Barrier(2, timeout=30)
    real_put = patient_services.blob_put
    local = threading.local()
    written: dict[int, list[str]] = {0: [], 1: []}

    def put_after_both_passed_the_early_check(blob: bytes) -> str:
        if not getattr(local, "met", False):
            local.met = True
            barrier.wait()
        key = real_put(blob)
        written[local.n].append(key)
        return key

    monkeypatch.setattr(patient_services, "blob_put", put_after_both_passed_the_early_check)
    outcomes: dict[int, object] = {}

    def upload_one(n: int) -> None:
        local.n = n
        try:
            with clinic_scope(world.clinic.id):
                outcomes[n] = image_ingest(
                    patient=world.patient, stream=io.BytesIO(data[n]), filename=f"{n}.png", size=None, modality="photo"
                )
        except BaseException as exc:  # noqa: BLE001 - checked below
            outcomes[n] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=upload_one, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stored = [n for n, o in outcomes.items() if isinstance(o, Image)]
    refused = [n for n, o in outcomes.items() if isinstance(o, IntakeError) and o.code == "quota_exceeded"]
    assert len(stored) == 1 and len(refused) == 1, outcomes
    with clinic_scope(world.clinic.id):
        assert Image.objects.count() == 2  # the fixture's image and the winner
        assert Image.objects.aggregate(total=Sum("stored_bytes"))["total"] <= settings.IMAGE_QUOTA_BYTES_PER_CLINIC
    assert written[refused[0]] and all(blob_size(k) == 0 for k in written[refused[0]])  # the loser's blobs are gone
    assert all(blob_size(k) > 0 for k in written[stored[0]])


def test_per_clinic_quota_and_one_file_per_request(alice: World, bob: World, settings) -> None:  # noqa: ANN001
    with clinic_scope(alice.clinic.id):
        used = Image.objects.get().stored_bytes
    settings.IMAGE_QUOTA_BYTES_PER_CLINIC = used + 8000  # room for a tiny image (~2 kB), not for 12 kB of noise
    noise = io.BytesIO()
    PILImage.frombytes("RGB", (64, 64), os.urandom(64 * 64 * 3)).save(noise, "PNG")
    response = upload(token_client(alice, "staff"), alice, "more.png", noise.getvalue())
    assert response.status_code == 413 and response.json()["error"]["code"] == "quota_exceeded"
    assert upload(token_client(bob, "staff"), bob, "b.png", png_bytes((8, 8))).status_code == 201  # per clinic
    settings.IMAGE_QUOTA_BYTES_PER_CLINIC = 0
    files = [io.BytesIO(png_bytes((8, 8))), io.BytesIO(png_bytes((9, 9)))]
    for i, f in enumerate(files):
        f.name = f"{i}.png"
    response = token_client(alice, "staff").post(
        reverse("api:patient-image-list", kwargs={"pk": alice.patient.pk}),
        {"file": files, "modality": "photo"},
        format="multipart",
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == "too_many_files"


def test_stored_bytes_backfill_of_images_uploaded_before_it_was_counted(alice: World) -> None:
    import importlib

    from django.apps import apps

    migration = importlib.import_module("patients.migrations.0006_image_stored_bytes")
    with clinic_scope(alice.clinic.id):
        Image.objects.update(stored_bytes=0)
    migration.backfill(apps, None)  # as the migration runs it: no clinic in scope
    with clinic_scope(alice.clinic.id):
        image = Image.objects.get()
        assert image.stored_bytes == sum(blob_size(k) for k in image.blob_keys.values()) > image.size_bytes


def test_an_oversized_json_body_gets_the_api_error_shape(alice: World) -> None:
    """Bodies over DATA_UPLOAD_MAX_MEMORY_SIZE are refused before any view runs: 413 in the API's JSON error
    shape (it was Django's HTML 400 page), nothing created."""
    body = json.dumps({"external_id": "x", "given_name": "A" * 3_000_000, "family_name": "B"})
    for client, url in (
        (Client(), reverse("api:token")),
        (token_client(alice, "staff"), reverse("api:patient-list")),
    ):
        response = client.post(url, body, content_type="application/json")
        assert response.status_code == 413, (url, response.status_code)
        assert response["Content-Type"] == "application/json"
        assert response.json()["error"]["code"] == "request_too_large"
    with clinic_scope(alice.clinic.id):
        assert Patient.objects.count() == 1


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_an_uploads_quota_lock_does_not_block_the_clinics_other_writes(settings) -> None:  # noqa: ANN001
    """While an upload holds the quota lock (until it commits), another request of the clinic can still record its
    audit event: with FOR UPDATE on the clinic row it waited (the event's key-share lock on the clinic), and an
    upload waiting for the audit chain meanwhile deadlocked with it."""
    from django.db import connection, connections, transaction

    from clinics import audit
    from patients import services as patient_services

    world = build_clinic("quota-lock")
    settings.IMAGE_QUOTA_BYTES_PER_CLINIC = 10**12
    holding, release, outcome = threading.Event(), threading.Event(), {}

    def upload_holding_the_quota_lock() -> None:
        try:
            with clinic_scope(world.clinic.id), transaction.atomic():
                patient_services.quota_check(1, lock=True)
                holding.set()
                release.wait(20)
        finally:
            connections.close_all()

    holder = threading.Thread(target=upload_holding_the_quota_lock)
    holder.start()
    try:
        assert holding.wait(20)
        with clinic_scope(world.clinic.id), transaction.atomic():
            connection.cursor().execute("SET LOCAL lock_timeout = '3s'")
            audit.record(action="patient.list", clinic_id=world.clinic.id, object_type="patient")
            outcome["recorded"] = True
    finally:
        release.set()
        holder.join(30)
    assert outcome == {"recorded": True}
