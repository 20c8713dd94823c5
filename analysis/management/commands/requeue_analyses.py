"""Send again the task message of analyses whose message was lost (broker restarted without persistence,
dropped message): queued for longer than ``--older-than`` seconds, or running under a stale claim.

Safe to run at any time (cron, after a broker incident): a duplicate message never gives a second result.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from analysis.services import analysis_requeue_stale
from clinics import context


class Command(BaseCommand):
    help = "Re-send the messages of analyses left queued (or running under a stale claim) by a lost message."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--older-than",
            type=float,
            default=None,
            help="Seconds an analysis must have waited (default: settings.ANALYSIS_REQUEUE_AFTER_SECONDS, 300).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        context.actor_var.set(context.Actor(system="requeue_analyses"))
        sent = analysis_requeue_stale(older_than_seconds=options["older_than"])
        self.stdout.write(f"Re-queued {sent} analyses.")
