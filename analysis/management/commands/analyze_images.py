"""Run the active model of a modality on image files and print one JSON object per file.

Needs neither a broker nor the database: without a usable database the newest shipped model is
used. Files go through the same intake checks as uploads (with the configured ``IMAGE_MAX_BYTES`` and
``IMAGE_MAX_PIXELS``); an invalid file prints an error object and the command goes on with the next.
Lines come out in the order of the paths given.

Every analysed line carries ``"assessable"``: the image gate (``analysis.ml.gate``) runs first, as for an
upload; an image it refuses is not given to the model and its line says why in ``"not_assessable"``
(``{"code", "message"}``) with empty scores and findings. ``"unfamiliar": true`` marks an image that passed but
is unlike the model's training images.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from PIL import Image

from analysis.registry import ModelNotAvailable, active_artifact_dir, predictor
from analysis.services import image_gate
from patients.intake import IntakeError, sanitize_upload

BATCH = 16


def _rounded(value: float) -> float:
    return round(float(value), 6)


class Command(BaseCommand):
    help = "Analyse image files with the active photo or X-ray model (JSON lines on stdout)."
    requires_system_checks: list[str] = []
    requires_migrations_checks = False

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("paths", nargs="+", type=Path)
        parser.add_argument("--modality", choices=["photo", "xray"], required=True)
        parser.add_argument("--json", action="store_true", help="JSON lines (the only output format).")
        parser.add_argument("--no-database", action="store_true", help="Use the shipped model, not the registry.")

    def handle(self, *args: Any, **options: Any) -> None:
        modality = options["modality"]
        try:
            model = predictor(active_artifact_dir(modality, use_database=not options["no_database"]))
        except ModelNotAvailable as exc:
            raise CommandError(str(exc)) from exc
        # in path order: an image, or the error line of a file that was refused
        pending: list[tuple[str, Image.Image | dict[str, str]]] = []
        for path in options["paths"]:
            try:
                with path.open("rb") as handle:
                    clean = sanitize_upload(
                        handle,
                        modality=modality,
                        size=path.stat().st_size,
                        max_bytes=settings.IMAGE_MAX_BYTES,
                        max_pixels=settings.IMAGE_MAX_PIXELS,
                    )
                checked = (
                    image_gate(clean.pixels, modality, colour_hint=clean.colour_hint, meta=model.meta)
                    if clean.pixels
                    else None
                )
                if checked is not None and not checked.assessable:
                    pending.append((str(path), {"refused": checked}))
                else:
                    pending.append((str(path), Image.open(io.BytesIO(clean.data))))
            except IntakeError as exc:
                pending.append((str(path), {"code": exc.code, "message": exc.message}))
            except OSError as exc:
                pending.append((str(path), {"code": "unreadable_file", "message": str(exc)}))
            if sum(isinstance(item, Image.Image) for _, item in pending) >= BATCH:
                self._run(model, pending)
                pending = []
        if pending:
            self._run(model, pending)

    def _run(self, model: Any, batch: list[tuple[str, Image.Image | dict[str, Any]]]) -> None:
        images = [item for _, item in batch if isinstance(item, Image.Image)]
        results = iter(model.predict(images, explain=True) if images else [])
        for name, item in batch:
            if isinstance(item, dict) and "refused" in item:
                refused = item["refused"]
                self._emit(self._not_assessable(name, model, refused.code, refused.message))
                continue
            if not isinstance(item, Image.Image):
                self._emit({"file": name, "error": item})
                continue
            result = next(results)
            gate = result.get("gate") or {}
            if gate and not gate.get("assessable", True):
                self._emit(self._not_assessable(name, model, gate.get("code"), gate.get("message")))
                continue
            self._emit(
                {
                    "file": name,
                    "model": model.model_id,
                    "assessable": True,
                    "unfamiliar": bool(result.get("unfamiliar", False)),
                    "scores": {k: _rounded(v) for k, v in result["scores"].items()},
                    "findings": [
                        {
                            "condition": f["condition"],
                            "probability": _rounded(f["probability"]),
                            "box": [_rounded(v) for v in f["box"]],
                        }
                        for f in result["findings"]
                    ],
                }
            )

    @staticmethod
    def _not_assessable(name: str, model: Any, code: str | None, message: str | None) -> dict[str, Any]:
        return {
            "file": name,
            "model": model.model_id,
            "assessable": False,
            "not_assessable": {"code": code or "", "message": message or ""},
            "scores": {},
            "findings": [],
        }

    def _emit(self, obj: dict[str, Any]) -> None:
        self.stdout.write(json.dumps(obj))
