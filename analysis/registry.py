"""The model registry: register trained artefacts, pick the active one, load it once per process."""

from __future__ import annotations

import functools
import hashlib
import json
import threading
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import DatabaseError, transaction

from core import conditions

from .models import ModelModality, ModelVersion

SHIPPED_MODELS_DIR = Path(settings.BASE_DIR) / "analysis" / "models"


class ModelNotAvailable(RuntimeError):
    """No usable model for a modality (none registered or shipped, or its weights do not verify)."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_artifact(artifact_dir: Path) -> dict[str, Any]:
    """``model.json`` of an artefact, after checking that the weights match their recorded SHA-256."""
    meta_path = artifact_dir / "model.json"
    if not meta_path.is_file():
        raise ModelNotAvailable(f"{artifact_dir} has no model.json")
    meta = json.loads(meta_path.read_text())
    weights = artifact_dir / meta.get("weights_file", "weights.pt")
    if not weights.is_file():
        raise ModelNotAvailable(f"{artifact_dir} has no weights file")
    if _sha256(weights) != meta.get("weights_sha256"):
        raise ModelNotAvailable(f"weights of {meta.get('name')}@{meta.get('version')} do not match their SHA-256")
    if meta.get("modality") not in ModelModality.values:
        raise ModelNotAvailable(f"{artifact_dir}: unknown modality {meta.get('modality')!r}")
    label_codes(meta)
    return meta


def label_codes(meta: dict[str, Any]) -> dict[str, str]:
    """``{model label: platform condition code}`` from ``model.json``'s ``condition_codes``; a model with a label
    that maps onto no code of its modality is not usable here (``ModelNotAvailable`` naming the labels)."""
    try:
        return conditions.label_codes(meta.get("labels", []), meta.get("condition_codes"), modality=meta["modality"])
    except conditions.UnmappedLabel as exc:
        raise ModelNotAvailable(f"{meta.get('name')}@{meta.get('version')}: {exc}") from exc


def _stored_path(artifact_dir: Path) -> str:
    resolved = artifact_dir.resolve()
    try:
        return str(resolved.relative_to(Path(settings.BASE_DIR).resolve()))
    except ValueError:
        return str(resolved)


@functools.lru_cache(maxsize=16)
def _meta(path: str, sha256: str) -> dict[str, Any]:
    return json.loads((Path(path) / "model.json").read_text())


def artifact_meta(artifact_dir: Path, weights_sha256: str) -> dict[str, Any]:
    """``model.json`` of a registered artefact, read once per process (the weights are checked when the
    model is loaded, not here: this is for the web process, which never loads a model)."""
    return _meta(str(artifact_dir.resolve()), weights_sha256)


def artifact_path(model: ModelVersion) -> Path:
    path = Path(model.artifact_dir)
    return path if path.is_absolute() else Path(settings.BASE_DIR) / path


@transaction.atomic
def model_register(*, artifact_dir: Path | str, activate: bool = True) -> ModelVersion:
    """Register (or refresh) an artefact and optionally make it the active one of its modality."""
    artifact_dir = Path(artifact_dir)
    meta = read_artifact(artifact_dir)
    codes = label_codes(meta)
    model, _ = ModelVersion.objects.update_or_create(
        name=meta["name"],
        version=meta["version"],
        defaults={
            "modality": meta["modality"],
            "artifact_dir": _stored_path(artifact_dir),
            "weights_sha256": meta["weights_sha256"],
            "labels": [codes[label] for label in meta.get("labels", [])],
            "thresholds": {codes[k]: v for k, v in meta.get("thresholds", {}).items() if k in codes},
            "metrics": meta.get("metrics", {}),
        },
    )
    if activate and not model.is_active:
        ModelVersion.objects.filter(modality=model.modality, is_active=True).update(is_active=False)
        model.is_active = True
        model.save(update_fields=["is_active"])
    return model


def shipped_artifacts(modality: str) -> list[Path]:
    """Artefacts shipped in the repository for a modality, newest version last."""
    root = SHIPPED_MODELS_DIR / modality
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if (p / "model.json").is_file()]

    def version_key(path: Path) -> tuple:
        return tuple(int(x) if x.isdigit() else x for x in path.name.replace("-", ".").split("."))

    return sorted(found, key=version_key)


def model_version_active(modality: str) -> ModelVersion:
    """The active registered model; registers the newest shipped one on first use."""
    model = ModelVersion.objects.filter(modality=modality, is_active=True).first()
    if model is not None:
        return model
    for candidate in reversed(shipped_artifacts(modality)):
        try:
            return model_register(artifact_dir=candidate, activate=True)
        except ModelNotAvailable:
            continue
    raise ModelNotAvailable(f"no {modality} model is registered or shipped")


def active_artifact_dir(modality: str, *, use_database: bool = True) -> Path:
    """Where the active model of a modality lives. Without a usable database (for example
    ``analyze_images`` on a fresh checkout) the newest shipped artefact is used."""
    if use_database:
        try:
            return artifact_path(model_version_active(modality))
        except DatabaseError:
            pass
    shipped = shipped_artifacts(modality)
    if not shipped:
        raise ModelNotAvailable(f"no {modality} model is shipped in {SHIPPED_MODELS_DIR / modality}")
    return shipped[-1]


_load_lock = threading.Lock()


class CodedPredictor:
    """A loaded model that speaks the platform's condition codes: ``predict`` renames the model's own labels
    (scores and findings) through its ``condition_codes``, and ``labels`` and ``thresholds`` are keyed by code;
    everything else is the wrapped predictor's (``meta`` stays the artefact's own ``model.json``)."""

    def __init__(self, loaded: Any, codes: dict[str, str]):
        self.loaded = loaded
        self.codes = codes
        self.labels = [codes[label] for label in loaded.labels]
        self.thresholds = {codes[label]: value for label, value in loaded.thresholds.items() if label in codes}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loaded, name)

    def predict(self, images: Any, **options: Any) -> list[dict[str, Any]]:
        codes = self.codes
        return [
            {
                **result,
                "scores": {codes[label]: value for label, value in result["scores"].items()},
                "findings": [{**f, "condition": codes[f["condition"]]} for f in result["findings"]],
            }
            for result in self.loaded.predict(images, **options)
        ]


@functools.lru_cache(maxsize=4)
def _load(path: str, sha256: str, onnx: bool) -> CodedPredictor:
    from analysis.ml.infer import make_predictor  # imports torch (~1 s): when a model is first loaded only

    loaded = make_predictor(path)
    if onnx:  # photo classifier on CPU only; anything else stays as loaded
        from analysis.ml.fast import maybe_onnx  # torch and ONNX Runtime: likewise

        loaded = maybe_onnx(loaded)
    return CodedPredictor(loaded, label_codes(loaded.meta))


def predictor(artifact_dir: Path, *, registered_sha256: str | None = None) -> CodedPredictor:
    """The loaded model for an artefact, once per process (worker or command), speaking condition codes.
    ``registered_sha256``: the weights' SHA-256 the registry recorded for the version (``ModelVersion``): weights
    replaced on disk since (an artefact folder overwritten in place) are refused, so no finding is credited to a
    version whose weights did not make it."""
    meta = read_artifact(artifact_dir)
    if registered_sha256 is not None and meta["weights_sha256"] != registered_sha256:
        raise ModelNotAvailable(
            f"weights of {meta.get('name')}@{meta.get('version')} on disk are not the ones registered for it"
        )
    with _load_lock:
        return _load(str(artifact_dir.resolve()), meta["weights_sha256"], settings.ANALYSIS_ONNX_RUNTIME)
