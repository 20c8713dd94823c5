"""Make the model-input copies of stored images match the active model again (after ``register_model``
activated a model with another input): the worker reads the copy instead of decoding each full-size
original. Without it nothing breaks -- older images are read from their originals, only slower.

Safe to run at any time and to interrupt: each image's copy is swapped by compare-and-swap, the old blob
removed after commit; images already matching the active model are skipped.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from analysis.services import model_inputs_refresh
from clinics import context
from clinics.models import Clinic
from clinics.tenancy import clinic_scope
from patients.models import Modality


class Command(BaseCommand):
    help = "Re-make stored images' model-input copies for the active model of each modality (after a model change)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--modality",
            choices=[m.value for m in Modality],
            action="append",
            help="Only this modality (repeatable; default: all).",
        )
        parser.add_argument("--limit", type=int, default=0, help="At most N images per clinic and modality.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["limit"] < 0:
            raise CommandError("--limit must be 0 (all) or more.")
        context.actor_var.set(context.Actor(system="refresh_model_inputs"))
        totals = {"refreshed": 0, "failed": 0, "changed_meanwhile": 0}
        for modality in options["modality"] or [m.value for m in Modality]:
            for clinic_id in Clinic.objects.order_by("created_at").values_list("pk", flat=True):
                with clinic_scope(clinic_id):
                    counts = model_inputs_refresh(modality=modality, limit=options["limit"])
                for key, value in counts.items():
                    totals[key] += value
        self.stdout.write(
            f"Refreshed {totals['refreshed']} model-input copies; {totals['failed']} original(s) unreadable "
            f"(audited, left as they were); {totals['changed_meanwhile']} changed meanwhile."
        )
        if totals["failed"]:
            raise CommandError(f"{totals['failed']} image(s) could not be read; see the audit trail.")
