from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from analysis.models import ModelModality
from analysis.registry import ModelNotAvailable, model_register, shipped_artifacts


class Command(BaseCommand):
    help = "Register a trained model artefact (a folder with weights.pt and model.json) and activate it."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("artifact_dirs", nargs="*", type=Path)
        parser.add_argument("--shipped", action="store_true", help="Register the newest shipped model per modality.")
        parser.add_argument("--no-activate", action="store_true", help="Register without making it active.")

    def handle(self, *args: Any, **options: Any) -> None:
        dirs: list[Path] = list(options["artifact_dirs"])
        if options["shipped"]:
            dirs += [found[-1] for m in ModelModality.values if (found := shipped_artifacts(m))]
        if not dirs:
            if options["shipped"]:
                self.stdout.write("No shipped model artefacts found under analysis/models/.")
                return
            raise CommandError("Name an artefact folder, or use --shipped.")
        for artifact_dir in dirs:
            try:
                model = model_register(artifact_dir=artifact_dir, activate=not options["no_activate"])
            except ModelNotAvailable as exc:
                raise CommandError(str(exc)) from exc
            state = "active" if model.is_active else "registered"
            self.stdout.write(f"{model.model_id} ({model.modality}) {state}: {model.artifact_dir}")
