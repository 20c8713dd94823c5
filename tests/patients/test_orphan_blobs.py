"""``manage.py remove_orphan_blobs``: blobs no row names (a process killed between writing a blob and committing its
row, an erasure whose clean-up failed) are found and removed; every named blob, a young one (an upload in progress)
and anything the code did not write stay."""

from __future__ import annotations

import json
import os
import time
import uuid
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from clinics.models import AuditEvent
from clinics.tenancy import clinic_scope
from dicom.models import DicomInstance, InstanceStatus
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

    removed = run("--delete")
    assert removed["removed"] == 2 and sorted(removed["names"]) == sorted(listed["names"])
    assert not blob_exists(killed_upload) and not blob_exists(failed_erasure)
    assert all(blob_exists(name) for name in [*named, in_progress]) and foreign.exists()
    event = AuditEvent.unscoped.get(action="storage.orphans.remove")
    assert event.clinic_id is None and event.details == {"blobs": 2, "bytes": removed["bytes"]}
    assert run()["orphans"] == 0


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
    assert orphan in out.getvalue() and "Found 1 orphan blob(s)" in out.getvalue() and "--delete" in out.getvalue()
    assert blob_exists(orphan)
