"""``manage.py remove_orphan_blobs``: blobs no row names (a process killed between writing a blob and committing its
row, an erasure whose clean-up failed) are found and removed; every named blob, a young one (an upload in progress)
and anything the code did not write stay."""

from __future__ import annotations

import json
import os
import time
import uuid
from datetime import timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from clinics.models import AuditEvent
from clinics.tenancy import clinic_scope
from dicom.models import DicomInstance, InstanceStatus
from patients.models import Image
from patients.orphans import orphan_blobs, orphan_blobs_remove
from patients.services import image_derive
from patients.storage import blob_exists, blob_put, image_storage

from ..conftest import World

DAY = 24 * 3600


def run(*args: str) -> dict[str, Any]:
    out = StringIO()
    call_command("remove_orphan_blobs", "--json", *args, stdout=out)
    return json.loads(out.getvalue())


def age(name: str, seconds: float) -> None:
    """Back-date a blob of the local storage."""
    path = image_storage().path(name)
    then = time.time() - seconds
    os.utime(path, (then, then))


def held_instance(world: World) -> DicomInstance:
    """An instance waiting in the DICOM inbox: its file is held in a blob of its own."""
    with clinic_scope(world.clinic.id):
        return DicomInstance.objects.create(
            status=InstanceStatus.UNMATCHED,
            modality="xray",
            sop_index=uuid.uuid4().hex,
            header=b"",
            held_key=blob_put(b"held file"),
            calling_ae="PACS",
        )


def test_orphans_are_found_listed_and_removed_named_blobs_stay(alice: World, bob: World, eager: None) -> None:
    with clinic_scope(alice.clinic.id):
        image_derive(image=alice.image)  # the preview and thumbnail too: every column that names a blob
    assert {"original", "preview", "thumbnail"} <= set(alice.image.blob_keys)
    named = [*alice.image.blob_keys.values(), *bob.image.blob_keys.values(), held_instance(bob).held_key]
    killed_upload, failed_erasure = blob_put(b"a" * 100), blob_put(b"b" * 50)  # no row names them
    in_progress = blob_put(b"c" * 10)  # written a moment ago: its row may be about to commit
    foreign = Path(image_storage().path("blobs/README"))
    foreign.write_text("not ours")
    for name in [*named, killed_upload, failed_erasure, "blobs/README"]:
        age(name, 2 * DAY)
    age(in_progress, 3600)

    listed = run()  # without --delete: only listed
    assert sorted(listed["names"]) == sorted([killed_upload, failed_erasure])
    assert listed["orphans"] == 2 and listed["removed"] == 0 and listed["bytes"] == 150
    assert blob_exists(killed_upload) and blob_exists(failed_erasure)
    assert run("--older-than-hours", "1")["orphans"] == 3  # the hour-old one too, when asked for

    # In this small storage two leftovers are a large share of it, as a database that is not this storage's would
    # show: --delete refuses unless forced.
    with pytest.raises(CommandError, match=r"Nothing removed: 2 of the storage's \d+ blob\(s\) are unnamed"):
        run("--delete")
    assert blob_exists(killed_upload) and not AuditEvent.unscoped.filter(action="storage.orphans.remove").exists()
    removed = run("--delete", "--force")
    assert removed["removed"] == 2 and sorted(removed["names"]) == sorted(listed["names"])
    assert removed["named"] == len(named) and removed["listed"] == len(named) + 3
    assert not blob_exists(killed_upload) and not blob_exists(failed_erasure)
    assert all(blob_exists(name) for name in [*named, in_progress]) and foreign.exists()
    event = AuditEvent.unscoped.get(action="storage.orphans.remove")
    assert event.clinic_id is None and event.outcome == "success"
    assert event.details == {"blobs": 2, "bytes": 150, "names": removed["names"]}
    assert run()["orphans"] == 0


def test_a_database_that_names_no_blob_removes_nothing(db: None, eager: None) -> None:
    """Rows that name no blob beside a storage that holds some: a restored or staging database beside production's
    storage, not leftovers."""
    blobs = [blob_put(b"somebody's image") for _ in range(3)]
    for name in blobs:
        age(name, 2 * DAY)
    assert run()["orphans"] == 3
    with pytest.raises(CommandError, match="the storage holds 3 blob.s. but no row names any"):
        run("--delete")
    assert all(blob_exists(name) for name in blobs)


def test_a_blob_named_since_the_search_is_kept(alice: World, eager: None) -> None:
    orphan = blob_put(b"x" * 10)
    age(orphan, 2 * DAY)
    found = orphan_blobs(older_than=timedelta(hours=24)).orphans
    assert [blob.name for blob in found] == [orphan]
    Image.unscoped.filter(pk=alice.image.pk).update(preview_key=orphan)  # named meanwhile (not by our code: a test)
    assert orphan_blobs_remove(found) == 0 and blob_exists(orphan)


def test_a_failed_removal_is_audited_with_what_was_removed(alice: World, eager: None, monkeypatch) -> None:  # noqa: ANN001
    first, second = blob_put(b"1"), blob_put(b"2")
    for name in (first, second):
        age(name, 2 * DAY)
    found = orphan_blobs(older_than=timedelta(hours=24)).orphans
    storage, real = image_storage(), image_storage().delete

    def delete(name: str) -> None:
        if name == max(first, second):
            raise OSError("storage unavailable")
        real(name)

    monkeypatch.setattr(storage, "delete", delete)
    with pytest.raises(OSError, match="unavailable"):
        orphan_blobs_remove(found)
    event = AuditEvent.unscoped.get(action="storage.orphans.remove")
    assert event.outcome == "failure" and event.details["names"] == [min(first, second)]


def test_an_inbox_file_left_behind_by_its_assignment_is_an_orphan(alice: World, eager: None) -> None:
    instance = held_instance(alice)
    held = instance.held_key
    DicomInstance.unscoped.filter(pk=instance.pk).update(held_key="", status=InstanceStatus.ASSIGNED)
    age(held, 2 * DAY)  # the assignment's clean-up did not run (the process was killed after the commit)
    assert run()["names"] == [held]


def test_a_blob_younger_than_an_hour_cannot_be_asked_for(alice: World) -> None:
    with pytest.raises(CommandError, match="at least 1"):
        run("--older-than-hours", "0.5")


def test_the_human_readable_listing(alice: World, eager: None) -> None:
    orphan = blob_put(b"x")
    age(orphan, 2 * DAY)
    out = StringIO()
    call_command("remove_orphan_blobs", stdout=out)
    text = out.getvalue()
    assert orphan in text and "Found 1 orphan blob(s)" in text and "rows name 1" in text and "Careful:" in text
    assert blob_exists(orphan)
