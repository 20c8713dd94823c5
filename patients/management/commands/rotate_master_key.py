from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from clinics import context
from patients.keys import keys_not_on_current_master_key, master_key_rotate


class Command(BaseCommand):
    help = (
        "Re-wrap every clinic and patient data key with the master key named by MASTER_KEY_ID. "
        "Image blobs are not touched. Keep the old key in MASTER_KEYS until this has finished."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        context.actor_var.set(context.Actor(system="rotate_master_key"))
        per_clinic = master_key_rotate()
        total = sum(per_clinic.values())
        self.stdout.write(f"Re-wrapped {total} data key(s) in {len(per_clinic)} clinic(s).")
        # Keys made meanwhile by a process still configured with the old master key would be lost with it: say so,
        # and fail, so the old key is not retired before a second run.
        left = keys_not_on_current_master_key()
        if left:
            raise CommandError(
                f"{left} data key(s) or authenticator secret(s) are still wrapped with another master key (made while "
                "this ran, by a process configured with the old key?): run it again before retiring the old key."
            )
