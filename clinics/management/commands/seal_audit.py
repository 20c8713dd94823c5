from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand
from django.db import close_old_connections

from clinics.audit import seal_all


class Command(BaseCommand):
    help = (
        "Seal the audit events recorded since the last run into their clinics' hash chains (what celery beat's "
        "audit-seal task does). Once, or with --loop every --every seconds until stopped: for a deployment "
        "without celery beat."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--loop", action="store_true", help="Keep sealing until stopped (Ctrl-C, SIGTERM).")
        parser.add_argument("--every", type=float, default=2.0, help="Seconds between runs with --loop (default 2).")

    def handle(self, *args: Any, **options: Any) -> None:
        if not options["loop"]:
            self.stdout.write(f"Sealed {seal_all()} audit event(s).")
            return
        try:
            while True:
                close_old_connections()
                sealed = seal_all()
                if sealed:
                    self.stdout.write(f"Sealed {sealed} audit event(s).")
                time.sleep(options["every"])
        except KeyboardInterrupt:
            return
