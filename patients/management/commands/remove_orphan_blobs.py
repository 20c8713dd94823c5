from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from clinics import context
from patients.orphans import MAX_SHARE, orphan_blobs, orphan_blobs_remove


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
        parser.add_argument(
            "--force",
            action="store_true",
            help=f"remove them even when no row names any blob or more than {MAX_SHARE:.0%} of the storage is "
            "unnamed (what a database that is not this storage's would show)",
        )
        parser.add_argument("--json", action="store_true", help="print one JSON object")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["older_than_hours"] < 1:
            raise CommandError("--older-than-hours must be at least 1: a younger blob may be an upload in progress.")
        context.actor_var.set(context.Actor(system="remove_orphan_blobs"))
        search = orphan_blobs(older_than=timedelta(hours=options["older_than_hours"]))
        found = search.orphans
        doubt = search.implausible()
        if options["delete"] and doubt and not options["force"]:
            raise CommandError(
                f"Nothing removed: {doubt}. Check DATABASE_URL and the storage settings; --force removes them anyway."
            )
        removed = orphan_blobs_remove(found) if options["delete"] and found else 0
        summary = {
            "listed": search.listed,
            "named": search.named,
            "orphans": len(found),
            "bytes": search.bytes,
            "removed": removed,
            "names": [blob.name for blob in found],
        }
        if options["json"]:
            self.stdout.write(json.dumps(summary))
            return
        for blob in found:
            self.stdout.write(f"{blob.name}\t{blob.size}\t{blob.modified.isoformat()}")
        self.stdout.write(f"The storage holds {search.listed} blob(s); the rows name {search.named}.")
        if options["delete"]:
            self.stdout.write(f"Removed {removed} orphan blob(s).")
            return
        self.stdout.write(f"Found {len(found)} orphan blob(s), {search.bytes} byte(s).")
        if doubt:
            self.stdout.write(f"Careful: {doubt}.")
        elif found:
            self.stdout.write("Run again with --delete to remove them.")
