"""Train a clinic's own model from its dentists' reviewed images, evaluate it against the base model on the
clinic's held-back reviewed images, register it as a candidate and, with ``--activate``, make it active.

    python manage.py adapt_model --clinic ID --modality photo [--activate] [--json]
"""

from __future__ import annotations

import json
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from analysis.adaptation import clinic_model_activate, clinic_model_train
from clinics import context
from clinics.models import Clinic
from clinics.services import ServiceError
from clinics.tenancy import clinic_scope

RATES = ("sensitivity", "specificity", "ppv")


def _rates(block: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        code: {key: values.get(key) for key in (*RATES, "positives", "negatives")}
        for code, values in block.items()
        if code != "any_finding_on_negatives"
    }


class Command(BaseCommand):
    help = "Adapt the base model to one clinic from its reviewed images (that clinic's data only)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--clinic", required=True, help="Clinic id.")
        parser.add_argument("--modality", choices=["photo", "xray"], default="photo")
        parser.add_argument("--activate", action="store_true", help="Make the new model the clinic's active one.")
        parser.add_argument("--json", action="store_true", help="Print one JSON object.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            clinic = Clinic.objects.get(pk=options["clinic"])
        except (Clinic.DoesNotExist, ValidationError, ValueError) as exc:
            raise CommandError(f"No clinic with id {options['clinic']}.") from exc
        context.actor_var.set(context.Actor(system="adapt_model"))
        with clinic_scope(clinic.id):
            try:
                model = clinic_model_train(modality=options["modality"])
                if options["activate"]:
                    model = clinic_model_activate(model=model)
            except ServiceError as exc:
                raise CommandError(exc.message) from exc
        evaluation = model.evaluation
        result = {
            "model": model.model_id,
            "clinic": str(clinic.id),
            "parent": model.parent.model_id,
            "version": model.version,
            "trained_on": model.data_counts["trained_on"],
            "held_back": model.data_counts["held_back"],
            "training_seconds": model.training_seconds,
            "base": _rates(evaluation["base"]),
            "adapted": _rates(evaluation["adapted"]),
            "any_finding_on_held_back_negatives": {
                "base": evaluation["base"].get("any_finding_on_negatives"),
                "adapted": evaluation["adapted"].get("any_finding_on_negatives"),
            },
            "activated": model.status == "active",
        }
        if options["json"]:
            self.stdout.write(json.dumps(result))
            return
        state = "activated" if result["activated"] else "candidate"
        self.stdout.write(
            f"{result['model']}: trained on {result['trained_on']} reviewed image(s) in "
            f"{model.training_seconds:.1f} s, evaluated on {result['held_back']} held back; {state}."
        )

        def shown(value: Any) -> str:
            return "-" if value is None else str(value)

        for code in result["base"]:
            base, adapted = result["base"][code], result["adapted"][code]
            pairs = "  ".join(f"{k} {shown(base[k])} -> {shown(adapted[k])}" for k in RATES)
            self.stdout.write(f"  {code:15s} {pairs}")
