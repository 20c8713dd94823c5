"""The S3 path against a real S3-speaking server (moto in server mode, over HTTP), not a mock object."""

from __future__ import annotations

import io
import socket
from collections.abc import Iterator
from datetime import timedelta

import boto3
import pytest
from django.urls import reverse
from django.utils import timezone

from ..conftest import World, png_bytes, token_client

BUCKET = "dentalscan-test-images"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test"
    ).create_bucket(Bucket=BUCKET)
    yield endpoint
    server.stop()


@pytest.fixture
def s3_images(settings, s3_endpoint: str):  # noqa: ANN001, ANN201
    settings.STORAGES = {
        **settings.STORAGES,
        "images": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": BUCKET,
                "endpoint_url": s3_endpoint,
                "region_name": "us-east-1",
                "access_key": "test",
                "secret_key": "test",
                "default_acl": None,
                "file_overwrite": False,
            },
        },
    }
    return boto3.client(
        "s3", endpoint_url=s3_endpoint, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test"
    )


def _keys(client) -> set[str]:  # noqa: ANN001
    return {o["Key"] for o in client.list_objects_v2(Bucket=BUCKET).get("Contents", [])}


def test_images_round_trip_through_s3_encrypted(
    s3_images,
    alice: World,  # noqa: ANN001
    eager: None,
    django_capture_on_commit_callbacks,
) -> None:  # noqa: ANN001
    before = _keys(s3_images)
    f = io.BytesIO(png_bytes((90, 70), (12, 34, 56)))
    f.name = "../../etc/passwd.png"
    client = token_client(alice, "staff")
    with django_capture_on_commit_callbacks(execute=True):  # and the preview and thumbnail, made after commit
        response = client.post(
            reverse("api:patient-image-list", kwargs={"pk": alice.patient.pk}),
            {"file": f, "modality": "photo"},
            format="multipart",
        )
    assert response.status_code == 201, response.content
    new = _keys(s3_images) - before
    # original, preview, thumbnail and the model-input copy
    assert len(new) == 4 and all(k.startswith("blobs/") and "passwd" not in k for k in new)
    for key in new:
        body = s3_images.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        assert not body.startswith((b"\x89PNG", b"\xff\xd8")) and b"IHDR" not in body
    # the quota's count is what the bucket holds; a missing object counts 0
    from clinics.tenancy import clinic_scope
    from patients.models import Image as ImageRow
    from patients.storage import blob_size

    with clinic_scope(alice.clinic.id):
        row = ImageRow.objects.get(pk=response.json()["id"])
    sizes = {k: s3_images.head_object(Bucket=BUCKET, Key=k)["ContentLength"] for k in new}
    assert row.stored_bytes == sum(sizes.values()) == sum(blob_size(k) for k in row.blob_keys.values())
    assert blob_size("blobs/" + "0" * 32) == 0
    served = client.get(response.json()["file"])
    assert served.status_code == 200 and served.content.startswith(b"\x89PNG")
    from PIL import Image

    assert Image.open(io.BytesIO(served.content)).getpixel((5, 5)) == (12, 34, 56)

    # A rejected upload writes nothing to the bucket.
    bad = io.BytesIO(b"%PDF-1.4 not an image")
    bad.name = "scan.jpg"
    keys = _keys(s3_images)
    rejected = client.post(
        reverse("api:patient-image-list", kwargs={"pk": alice.patient.pk}),
        {"file": bad, "modality": "photo"},
        format="multipart",
    )
    assert rejected.status_code == 415 and _keys(s3_images) == keys

    # Erasure removes the patient's objects from the bucket.
    admin = token_client(alice, "clinic_admin")
    with django_capture_on_commit_callbacks(execute=True):
        assert admin.delete(reverse("api:patient-detail", kwargs={"pk": alice.patient.pk})).status_code == 204
    assert not (new & _keys(s3_images))


def test_audit_checkpoints_on_an_object_locked_bucket(alice: World, settings, s3_endpoint: str) -> None:  # noqa: ANN001
    """What docker/compose.yaml's ``buckets`` service sets up: a bucket with object lock and a default retention.
    Checkpoints are written there and verified from there, and the application's credentials cannot delete them."""
    from botocore.exceptions import ClientError
    from django.core.management import call_command

    from clinics.audit_checkpoints import checkpoints_load

    bucket = "dentalscan-test-checkpoints"
    client = boto3.client(
        "s3", endpoint_url=s3_endpoint, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test"
    )
    client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    client.put_object_lock_configuration(
        Bucket=bucket,
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}},
        },
    )
    settings.STORAGES = {
        **settings.STORAGES,
        "audit_checkpoints": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": bucket,
                "endpoint_url": s3_endpoint,
                "region_name": "us-east-1",
                "access_key": "test",
                "secret_key": "test",
                "default_acl": None,
                "file_overwrite": False,
            },
        },
    }
    call_command("audit_checkpoint", stdout=io.StringIO())
    (version,) = client.list_object_versions(Bucket=bucket)["Versions"]
    head = client.head_object(Bucket=bucket, Key=version["Key"])
    assert head["ObjectLockMode"] == "GOVERNANCE"  # the bucket's default retention applied to the checkpoint
    assert checkpoints_load().files == 1
    out = io.StringIO()
    call_command("verify_audit_chain", stdout=out)
    assert "against 1 sealed checkpoint(s)" in out.getvalue()
    with pytest.raises(ClientError) as refused:
        client.delete_object(Bucket=bucket, Key=version["Key"], VersionId=version["VersionId"])
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    assert checkpoints_load().files == 1


def test_orphan_blobs_are_found_and_removed_in_the_bucket(
    s3_images,  # noqa: ANN001
    alice: World,
    eager: None,
    django_capture_on_commit_callbacks,  # noqa: ANN001
) -> None:
    """``remove_orphan_blobs``'s search on S3: the bucket is listed, a blob no row names is removed, the image's
    stay."""
    from patients import orphans
    from patients.models import Image as ImageRow
    from patients.storage import blob_put

    f = io.BytesIO(png_bytes((90, 70), (12, 34, 56)))
    f.name = "photo.png"
    with django_capture_on_commit_callbacks(execute=True):  # and the preview and thumbnail, made after commit
        response = token_client(alice, "staff").post(
            reverse("api:patient-image-list", kwargs={"pk": alice.patient.pk}),
            {"file": f, "modality": "photo"},
            format="multipart",
        )
    assert response.status_code == 201, response.content
    named = set(ImageRow.unscoped.get(pk=response.json()["id"]).blob_keys.values())
    orphan = blob_put(b"left by a killed process")
    assert orphans.orphan_blobs(older_than=timedelta(hours=24)).orphans == []  # just written: may be in progress
    search = orphans.orphan_blobs(older_than=timedelta(hours=24), now=timezone.now() + timedelta(days=2))
    assert orphan in [blob.name for blob in search.orphans] and search.named >= 4  # (and what other tests left)
    assert orphans.orphan_blobs_remove(search.orphans) == len(search.orphans)
    assert orphan not in _keys(s3_images) and len(named) == 4 and named <= _keys(s3_images)
