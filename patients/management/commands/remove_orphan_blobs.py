from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from clinics import context
from patients.orphans import orphan_blobs, orphan_blobs_remove


class Command(BaseCommand):
    help = (
        "List the encrypted blobs in the image storage that no image or DICOM instance names any more (left by a "
        "process killed between writing a blob and committing its row, or by an erasure whose clean-up failed) "
        "and, with --delete, remove them. Only blobs older than --older-than-hours are considered: a younger one "
        "may belong to an upload still in progress."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--older-than-hours", type=float, default=24.0)
        parser.add_argument("--delete", action="store_true", help="remove them (without it: list only)")
        parser.add_argument("--json", action="store_true", help="print one JSON object")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["older_than_hours"] < 1:
            raise CommandError("--older-than-hours must be at least 1: a younger blob may be an upload in progress.")
        context.actor_var.set(context.Actor(system="remove_orphan_blobs"))
        found = orphan_blobs(older_than=timedelta(hours=options["older_than_hours"]))
        removed = orphan_blobs_remove(found) if options["delete"] and found else 0
        summary = {
            "orphans": len(found),
            "bytes": sum(blob.size for blob in found),
            "removed": removed,
            "names": [blob.name for blob in found],
        }
        if options["json"]:
            self.stdout.write(json.dumps(summary))
            return
        for blob in found:
            self.stdout.write(f"{blob.name}\t{blob.size}\t{blob.modified.isoformat()}")
        verb = "Removed" if options["delete"] else "Found"
        count = removed if options["delete"] else len(found)
        self.stdout.write(f"{verb} {count} orphan blob(s), {summary['bytes']} byte(s).")
        if found and not options["delete"]:
            self.stdout.write("Run again with --delete to remove them.")
