"""Analysis jobs: queue, claim (compare-and-swap), execute, finish exactly once.

Invariants: one ``Analysis`` per (image, model version); a worker may write results only while it
holds the claim (``status=running`` and its ``claim_token``); finishing is a second
compare-and-swap, so a duplicated, redelivered or resumed task can never add a second set of
findings. A claim older than ``ANALYSIS_STALE_AFTER_SECONDS`` (above the hard time limit) belongs to
a dead worker and may be taken over.
"""

from __future__ import annotations

import functools
import io
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
from botocore.exceptions import EndpointConnectionError
from django.conf import settings
from django.db import InterfaceError as DjangoInterfaceError
from django.db import OperationalError as DjangoOperationalError
from django.db import connection, transaction
from django.db.models import Case, F, Q, Value, When
from django.utils import timezone
from PIL import Image as PILImage

from clinics import audit
from clinics.models import AuditOutcome
from clinics.services import ServiceError
from clinics.tenancy import require_clinic_id
from core import crypto
from patients.keys import patient_key
from patients.models import Image
from patients.services import image_model_input_replace, image_read, image_read_model_input

from .adaptation import clinic_models_in_use, clinic_results
from .ml import gate, model_input
from .models import Analysis, AnalysisStatus, Finding
from .queue import RUN_ANALYSIS, task_send
from .registry import ModelNotAvailable, artifact_meta, artifact_path, model_version_active, predictor
from .reports import ensure_editable
from .selectors import thresholds_for
from .webhooks import webhook_emit

logger = logging.getLogger(__name__)

# Findings below this probability are not stored; each clinic's threshold decides what is shown.
CANDIDATE_FLOOR = 0.05

# Called with each analysis that finished (done or not assessable) inside the transaction that records it, by apps
# above this one (the DICOM app sends a preliminary report once a visit's images are analysed).
_finished_callbacks: list[Callable[[Analysis], None]] = []


def analysis_finished_register(callback: Callable[[Analysis], None]) -> None:
    """Have ``callback(analysis)`` called in the transaction that records each finished analysis (registered once,
    in the caller's ``AppConfig.ready``)."""
    if callback not in _finished_callbacks:
        _finished_callbacks.append(callback)


# Errors worth a retry with backoff: the database, the broker or the object store was unreachable.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    DjangoOperationalError,
    DjangoInterfaceError,
    ConnectionError,
    TimeoutError,
    EndpointConnectionError,
)


def model_input_maker(modality: str) -> Callable[[PILImage.Image], tuple[str, bytes] | None] | None:
    """For ``image_ingest``: what turns an upload's pixels into the active model's input copy (or None when
    there is no model for the modality, or it takes no copy). The copy is a lossless PNG of the model's
    own first preprocessing step; the worker uses it only while that model (that ``spec``) is active."""
    meta = _active_meta(modality)
    if meta is None or not model_input.spec(meta):
        return None
    return functools.partial(model_input.make, meta=meta)


def image_gate(
    pixels: PILImage.Image,
    modality: str,
    colour_hint: PILImage.Image | None = None,
    meta: dict[str, Any] | None = None,
) -> gate.GateResult | None:
    """The model-free checks of ``analysis.ml.gate`` on an upload's decoded pixels (size, modality, exposure,
    focus, and for photos whether it is an intraoral photograph at all). ``colour_hint``: for an X-ray decoded
    from a colour file, a small copy of its colours (the stored X-ray is grey), to refuse a photo sent as an
    X-ray. None when the gate itself fails: a fault of the gate never refuses or loses an upload, the model then
    runs as it did before the gate.

    The gate runs for a modality whose active model declares it (``"image_gate"`` in its ``model.json``): its
    thresholds were checked against that model's training images (see its model card). A model that does not
    declare it (an older or a home-made artefact) is given every image, as before the gate existed. ``meta``: that
    ``model.json`` when the caller has it (default: the active model's, from the registry)."""
    meta = meta if meta is not None else _active_meta(modality)
    if meta is not None and not meta.get("image_gate"):
        return None
    try:
        if colour_hint is not None:
            coloured = gate.check_image(colour_hint, modality)
            if not coloured.assessable and coloured.code == "wrong_modality":
                return coloured
        if pixels.mode not in ("RGB", "L"):  # 16-bit X-rays: judged as the model sees them, windowed to 8 bit
            pixels = PILImage.fromarray(model_input.xray_to_uint8_grey(pixels))
        return gate.check_image(pixels, modality)
    except Exception:  # noqa: BLE001 - any fault of the checks: log it, analyse the image as before
        logger.exception("image gate failed on a %s upload; analysing it without the gate", modality)
        return None


def _active_meta(modality: str) -> dict | None:
    """The active model's ``model.json`` for a modality, or None when there is none usable."""
    try:
        model = model_version_active(modality)
        return artifact_meta(artifact_path(model), model.weights_sha256)
    except (ModelNotAvailable, OSError, ValueError):
        return None


def model_inputs_refresh(*, modality: str, limit: int = 0) -> dict[str, int]:
    """Give the images of the clinic in scope a model-input copy for the active model of ``modality``
    where theirs was made for another model (or none was made): after a model change the worker would
    otherwise decode every older original again. The original is read with its integrity check; an image
    whose original fails it is counted as ``failed`` (and audited by the read) and keeps what it had.
    Audited once per clinic with the counts. ``limit``: at most that many images (0 = all)."""
    meta = _active_meta(modality)
    spec = model_input.spec(meta) if meta is not None else ""
    counts = {"refreshed": 0, "failed": 0, "changed_meanwhile": 0}
    if not spec:
        return counts
    stale = (
        Image.objects.filter(modality=modality)
        .exclude(model_input_spec=spec)
        .select_related("patient")
        .order_by("uploaded_at")
    )
    for image in stale[:limit] if limit else stale.iterator(chunk_size=200):
        try:
            with PILImage.open(io.BytesIO(image_read(image=image))) as pixels:
                data = model_input.encode(model_input.reduce(pixels, meta))
        except (ServiceError, OSError, ValueError):
            logger.warning("image %s: original unreadable, model-input copy not refreshed", image.pk)
            counts["failed"] += 1
            continue
        ok = image_model_input_replace(image=image, spec=spec, data=data)
        counts["refreshed" if ok else "changed_meanwhile"] += 1
    if any(counts.values()):
        audit.record(
            action="image.model_input.refresh",
            clinic_id=require_clinic_id(),
            object_type="model_version",
            details={"modality": modality, "spec": spec, **counts},
        )
    return counts


def analysis_request(*, image: Image, gate_result: gate.GateResult | None = None) -> Analysis | None:
    """Queue the active model of the image's modality (after commit, ids only in the message).

    An image the gate refused (``gate_result.assessable`` false) is not queued: its analysis is recorded at
    once as ``not_assessable`` with the gate's reason, so the upload's answer already says why (for example
    "blurred: please retake"); the image stays, for a dentist to review by hand.

    Returns None when no model exists for that modality on this installation."""

    try:
        model = model_version_active(image.modality)
    except ModelNotAvailable:
        return None
    refused = gate_result is not None and not gate_result.assessable
    defaults: dict[str, Any] = {"input_sha256": image.sha256}
    if refused:
        defaults |= {
            "status": AnalysisStatus.NOT_ASSESSABLE,
            "not_assessable_code": gate_result.code or "",
            "not_assessable_message": (gate_result.message or "")[:200],
            "gate_measures": _plain_measures(gate_result.measures),
            "finished_at": timezone.now(),
        }
    elif gate_result is not None:
        defaults["gate_measures"] = _plain_measures(gate_result.measures)
    analysis, created = Analysis.objects.get_or_create(image=image, model_version=model, defaults=defaults)
    if created and refused:
        _record_not_assessable(analysis)
    elif created:
        _queue_after_commit(analysis, action="analysis.queue")
    return analysis


def _plain_measures(measures: dict[str, Any] | None) -> dict[str, float]:
    """The gate's numbers as JSON-safe floats (rounded: they explain a decision, they are not data)."""
    return {str(k): round(float(v), 4) for k, v in (measures or {}).items() if isinstance(v, int | float | np.floating)}


def _record_not_assessable(analysis: Analysis) -> None:
    """Audit a refusal of the gate and tell the clinic's systems (``analysis.completed``, status
    ``not_assessable``), like any finished analysis."""
    audit.record(
        action="analysis.not_assessable",
        clinic_id=require_clinic_id(),
        object_type="analysis",
        object_id=analysis.pk,
        details={
            "image_id": str(analysis.image_id),
            "model": analysis.model_version.model_id,
            "code": analysis.not_assessable_code,
        },
    )
    webhook_emit(
        event="analysis.completed",
        payload={
            "analysis_id": str(analysis.pk),
            "image_id": str(analysis.image_id),
            "status": AnalysisStatus.NOT_ASSESSABLE,
            "not_assessable": {"code": analysis.not_assessable_code, "message": analysis.not_assessable_message},
        },
    )
    for callback in _finished_callbacks:
        callback(analysis)


def _queue_after_commit(analysis: Analysis, *, action: str) -> None:
    """Audit ``action`` and send the run message (ids only) once the caller's transaction commits."""
    clinic_id = str(require_clinic_id())
    audit.record(
        action=action,
        clinic_id=clinic_id,
        object_type="analysis",
        object_id=analysis.pk,
        details={"image_id": str(analysis.image_id), "model": analysis.model_version.model_id},
    )
    transaction.on_commit(functools.partial(_enqueue, str(analysis.pk), clinic_id))


def _enqueue(analysis_id: str, clinic_id: str) -> bool:
    """Send the ``analysis.run`` message; a broker that is down must not turn a committed upload into an error
    (the client would retry and store the image twice). The analysis stays ``queued`` and
    ``analysis_requeue_stale`` sends its message again later."""
    try:
        task_send(RUN_ANALYSIS, analysis_id, clinic_id)
    except Exception:  # noqa: BLE001 - kombu raises its own OperationalError and plain socket errors
        logger.warning(
            "analysis %s: broker unavailable, left queued for the re-queue sweep", analysis_id, exc_info=True
        )
        return False
    return True


def analysis_requeue_stale(*, older_than_seconds: float | None = None, limit: int = 1000) -> int:
    """Send again the message of every analysis whose message may have been lost (a broker restarted
    without persistence, a message dropped): ``queued`` for longer than ``older_than_seconds``
    (``ANALYSIS_REQUEUE_AFTER_SECONDS``) since it was created or last re-sent, or ``running`` under a
    claim that went stale (its worker died and no redelivery came). Crosses clinics (an operator job:
    ``manage.py requeue_analyses`` or the ``analysis.requeue_stale`` periodic task); each message
    carries ids only and re-enters its clinic's scope. A duplicate message is harmless: the claim is a
    compare-and-swap. For a queued analysis ``claimed_at`` records when its message was last re-sent,
    so a long backlog is not multiplied by every sweep. Returns how many messages were sent."""
    if older_than_seconds is None:
        older_than_seconds = float(getattr(settings, "ANALYSIS_REQUEUE_AFTER_SECONDS", 300))
    now = timezone.now()
    cutoff = now - timedelta(seconds=older_than_seconds)
    lost = (
        Q(status=AnalysisStatus.QUEUED, claimed_at__isnull=True, created_at__lt=cutoff)
        | Q(status=AnalysisStatus.QUEUED, claimed_at__lt=cutoff)
        | Q(status=AnalysisStatus.RUNNING, claimed_at__lt=_stale_before())
    )
    rows = list(Analysis.unscoped.filter(lost).order_by("created_at").values_list("pk", "clinic_id", "status")[:limit])
    queued = [pk for pk, _, status in rows if status == AnalysisStatus.QUEUED]
    if queued:
        Analysis.unscoped.filter(pk__in=queued, status=AnalysisStatus.QUEUED).update(claimed_at=now)
    sent = sum(_enqueue(str(pk), str(clinic_id)) for pk, clinic_id, _ in rows)
    if rows:
        logger.info("re-queued %d of %d analyses whose message may have been lost", sent, len(rows))
    return sent


def _stale_before() -> Any:
    return timezone.now() - timedelta(seconds=settings.ANALYSIS_STALE_AFTER_SECONDS)


def analysis_claim(analysis_id: object) -> uuid.UUID | None:
    """Take an analysis that is queued, or running under a claim that went stale. None if another
    live worker holds it or it is finished.

    An analysis claimed ``ANALYSIS_MAX_ATTEMPTS`` times already (each worker that took it stopped before finishing:
    an image that crashes or outlasts the worker) is recorded as failed instead: it would loop through the requeue
    sweep for ever, holding its visit unsignable, where a failed one can be retried by hand or reviewed without AI."""
    token = uuid.uuid4()
    claimable = Q(status=AnalysisStatus.QUEUED) | Q(status=AnalysisStatus.RUNNING, claimed_at__lt=_stale_before())
    limit = settings.ANALYSIS_MAX_ATTEMPTS
    taken = Analysis.objects.filter(claimable, pk=analysis_id, attempts__lt=limit).update(
        status=AnalysisStatus.RUNNING, claim_token=token, claimed_at=timezone.now(), attempts=F("attempts") + 1
    )
    if taken:
        return token
    # not taken: held, finished, or worn out (only then a second query, off the usual path)
    if Analysis.objects.filter(claimable, pk=analysis_id, attempts__gte=limit).exists():
        analysis_fail(analysis_id, f"gave up: {limit} workers took it and none finished")
    return None


def analysis_release(analysis_id: object, token: uuid.UUID) -> None:
    """Give a claim back (a transient error: the retry will claim it again)."""
    Analysis.objects.filter(pk=analysis_id, claim_token=token, status=AnalysisStatus.RUNNING).update(
        status=AnalysisStatus.QUEUED, claim_token=None, claimed_at=None
    )


def analysis_retry(*, analysis: Analysis) -> Analysis:
    """Queue a failed analysis again (its cause may be gone: a model file restored, a worker fixed). Not on a
    signed visit (its report is what was signed); a message with ids only goes out after commit."""
    with transaction.atomic():
        ensure_editable(analysis.image.visit_id)
        again = Analysis.objects.filter(pk=analysis.pk, status=AnalysisStatus.FAILED).update(
            status=AnalysisStatus.QUEUED,
            failure_reason="",
            finished_at=None,
            claim_token=None,
            claimed_at=timezone.now(),  # "message sent now", for the re-queue sweep
        )
        if not again:
            raise ServiceError("analysis_not_failed", "Only a failed analysis can be run again.", 409)
        _queue_after_commit(analysis, action="analysis.retry")
    analysis.refresh_from_db()
    return analysis


def analysis_fail(analysis_id: object, reason: str, token: uuid.UUID | None = None) -> bool:
    """Record an analysis as failed with ``reason`` (audited): only one still waiting or running, never a finished
    one (done, not assessable). With ``token``, only under that claim; without, only one no live worker holds
    (queued, or running under a stale claim): giving up must not throw away another worker's result."""
    condition = Q(pk=analysis_id) & Q(status__in=[AnalysisStatus.QUEUED, AnalysisStatus.RUNNING])
    if token is not None:
        condition &= Q(claim_token=token)
    else:
        condition &= Q(status=AnalysisStatus.QUEUED) | Q(claimed_at__lt=_stale_before())
    with transaction.atomic():
        failed = Analysis.objects.filter(condition).update(
            status=AnalysisStatus.FAILED, failure_reason=reason[:200], finished_at=timezone.now()
        )
        if failed:
            audit.record(
                action="analysis.failed",
                clinic_id=require_clinic_id(),
                object_type="analysis",
                object_id=analysis_id,
                outcome=AuditOutcome.FAILURE,
                details={"reason": reason[:200]},
            )
    return bool(failed)


@dataclass
class Claimed:
    analysis: Analysis
    token: uuid.UUID


def _heatmap_blob(analysis: Analysis, finding_id: uuid.UUID, heatmap: Any) -> bytes | None:
    if heatmap is None:
        return None
    data = (np.clip(np.asarray(heatmap, dtype=np.float32), 0, 1) * 255).astype(np.uint8)
    raw = bytes([data.shape[0], data.shape[1]]) + data.tobytes()
    return crypto.encrypt(patient_key(analysis.image.patient), raw, f"finding:{finding_id}:heatmap".encode())


def heatmap_raw(finding: Finding, key: bytes) -> bytes | None:
    """The stored heatmap as written (``[rows, cols] + rows*cols`` bytes, 0-255), decrypted with the patient's key."""
    if not finding.heatmap:
        return None
    return crypto.decrypt(key, bytes(finding.heatmap), f"finding:{finding.pk}:heatmap".encode())


def heatmap_of(finding: Finding) -> np.ndarray | None:
    raw = heatmap_raw(finding, patient_key(finding.image.patient)) if finding.heatmap else None
    if raw is None:
        return None
    return np.frombuffer(raw[2:], dtype=np.uint8).reshape(raw[0], raw[1]).astype(np.float32) / 255.0


def analysis_finish(claimed: Claimed, result: dict[str, Any]) -> bool:
    """Write the findings and mark done, only if this worker still holds the claim."""
    analysis = claimed.analysis
    refusal = result.get("gate") if result.get("gate") and not result["gate"].get("assessable", True) else None
    if refusal is not None:
        return _finish_not_assessable(claimed, result, refusal)
    with transaction.atomic():
        done = Analysis.objects.filter(pk=analysis.pk, claim_token=claimed.token, status=AnalysisStatus.RUNNING).update(
            status=AnalysisStatus.DONE,
            scores=result["scores"],
            finished_at=timezone.now(),
            failure_reason="",
            unfamiliar=bool(result.get("unfamiliar", False)),
            ood_score=result.get("ood_score"),
            **_clinic_fields(result),
        )
        if not done:
            return False
        for item in result["findings"]:
            finding_id = uuid.uuid4()
            Finding.objects.create(
                id=finding_id,
                analysis=analysis,
                image=analysis.image,
                condition=item["condition"],
                probability=float(item["probability"]),
                box=[round(float(v), 6) for v in item["box"]] if item.get("box") is not None else None,
                heatmap=_heatmap_blob(analysis, finding_id, item.get("heatmap")),
            )
        audit.record(
            action="analysis.completed",
            clinic_id=require_clinic_id(),
            object_type="analysis",
            object_id=analysis.pk,
            details={"findings": len(result["findings"]), "model": analysis.model_version.model_id},
        )
        for callback in _finished_callbacks:
            callback(analysis)
        # in the same transaction as the result: the delivery rows commit with it, or neither does (a crash just
        # after the commit no longer loses the webhook; a retry of the task finds the analysis done and skips)
        webhook_emit(
            event="analysis.completed",
            payload={"analysis_id": str(analysis.pk), "image_id": str(analysis.image_id), "status": "done"},
        )
    return True


def _clinic_fields(result: dict[str, Any]) -> dict[str, Any]:
    """The clinic model and shadow columns of a finished analysis (empty when no clinic model ran)."""
    fields: dict[str, Any] = {}
    if result.get("clinic_model_id"):
        fields["clinic_model_id"] = result["clinic_model_id"]
    if result.get("shadow_model_id"):
        fields |= {
            "shadow_model_id": result["shadow_model_id"],
            "shadow_scores": result.get("shadow_scores", {}),
            "shadow_disagrees": result.get("shadow_disagrees"),
        }
    return fields


def _finish_not_assessable(claimed: Claimed, result: dict[str, Any], refusal: dict[str, Any]) -> bool:
    """The model's own gate refused the image (far outside what it was trained on): no findings, the reason."""
    analysis = claimed.analysis
    with transaction.atomic():
        done = Analysis.objects.filter(pk=analysis.pk, claim_token=claimed.token, status=AnalysisStatus.RUNNING).update(
            status=AnalysisStatus.NOT_ASSESSABLE,
            scores={},
            finished_at=timezone.now(),
            failure_reason="",
            not_assessable_code=str(refusal.get("code") or "")[:30],
            not_assessable_message=str(refusal.get("message") or "")[:200],
            gate_measures=_plain_measures(refusal.get("measures")),
            ood_score=result.get("ood_score"),
        )
        if not done:
            return False
        analysis.refresh_from_db()
        _record_not_assessable(analysis)
    return True


def _load_batch(claimed: list[Claimed], model: Any) -> list[PILImage.Image]:
    """Read (and check) each image's model-input copy made at upload when it was made for this model, else
    its original; then decode them in parallel (Pillow releases the GIL). For a photo classifier the
    originals are also resized to its input there (its own preprocessing, so its resize becomes a copy).
    Decoding a full-size original cost more than the model; the copy costs ~1.8 ms to decode and preprocess
    against ~26 ms for a 1280x960 original (bench/bench_throughput.py)."""
    from analysis.ml.fast import decode_many  # imports torch (~1 s): on the first analysis, not in every process

    spec = model_input.spec(getattr(model, "meta", {}))
    datas = [_read_for_model(c.analysis.image, spec) for c in claimed]
    photo = getattr(model, "meta", {}).get("modality") == "photo"
    return decode_many(datas, int(model.input_size) if photo and hasattr(model, "input_size") else None)


def _read_for_model(image: Image, spec: str) -> bytes:
    """The model-input copy, or the original when there is none for this model or the copy fails its check
    (audited by ``image_read_model_input``): a damaged copy must not cost the analysis."""
    try:
        copy = image_read_model_input(image=image, spec=spec)
    except ServiceError:
        logger.warning("image %s: model-input copy unreadable, using the original", image.pk)
        copy = None
    return copy or image_read(image=image)


def _claim_batch(first: Analysis, token: uuid.UUID) -> list[Claimed]:
    """The claimed analysis and up to ``ANALYSIS_BATCH_SIZE - 1`` other queued analyses of the same model and
    clinic, to run in one model batch: the same visit's first, then other visits' oldest first, so many small
    visits get the images/s of one large one. When the batch is not full the worker waits
    ``ANALYSIS_BATCH_WAIT_MS`` once for analyses being queued at that moment (dynamic batching). Never another
    clinic's: a worker runs inside one clinic's scope (row-level security) and its keys."""
    claimed = [Claimed(first, token)]
    size = max(1, settings.ANALYSIS_BATCH_SIZE)
    waited = False
    while len(claimed) < size:
        taken = {c.analysis.pk for c in claimed}
        candidates = (
            Analysis.objects.filter(
                clinic_id=first.clinic_id,
                model_version=first.model_version,
                status=AnalysisStatus.QUEUED,
                attempts=0,  # one a worker took before without finishing runs alone: it may be what stopped it
            )
            .exclude(pk__in=taken)
            .annotate(other_visit=Case(When(image__visit_id=first.image.visit_id, then=Value(0)), default=Value(1)))
            .order_by("other_visit", "created_at", "pk")
            .values_list("pk", flat=True)[: size - len(claimed)]
        )
        for candidate_id in list(candidates):
            if (candidate_token := analysis_claim(candidate_id)) is not None:
                candidate = Analysis.objects.select_related("image__patient", "model_version").get(pk=candidate_id)
                claimed.append(Claimed(candidate, candidate_token))
        if waited or len(claimed) >= size or settings.ANALYSIS_BATCH_WAIT_MS <= 0:
            break
        waited = True
        time.sleep(settings.ANALYSIS_BATCH_WAIT_MS / 1000)
    return claimed


def analysis_execute(*, analysis_id: object) -> str:
    """Claim an analysis (and other queued analyses of the same model and clinic, to batch them: see
    ``_claim_batch``), run the model once per batch, and finish each. Returns what happened, for logging."""
    token = analysis_claim(analysis_id)
    if token is None:
        current = Analysis.objects.filter(pk=analysis_id).values_list("status", flat=True).first()
        return "busy" if current == AnalysisStatus.RUNNING else f"skipped:{current}"
    first = Analysis.objects.select_related("image__patient", "model_version").get(pk=analysis_id)
    claimed = _claim_batch(first, token)
    try:
        model = predictor(artifact_path(first.model_version), registered_sha256=first.model_version.weights_sha256)
        pixels = _load_batch(claimed, model)
        if first.model_version.modality == "photo" and clinic_models_in_use("photo"):
            # every condition's map: the clinic's model may raise a condition the base model scored low
            results = model.predict(pixels, explain=True, min_probability=0.0)
            thresholds = thresholds_for(first.model_version)
            results = clinic_results(results, pixels, model, first.model_version, CANDIDATE_FLOOR, thresholds)
        else:
            results = model.predict(pixels, explain=True, min_probability=CANDIDATE_FLOOR)
        if settings.ANALYSIS_DEBUG_SLEEP_SECONDS:  # fault tests only: widen the window for a kill
            time.sleep(settings.ANALYSIS_DEBUG_SLEEP_SECONDS)
    except TRANSIENT_ERRORS:
        for c in claimed:
            analysis_release(c.analysis.pk, c.token)
        raise
    except Exception as exc:  # noqa: BLE001 - permanent: record why, never retry
        logger.exception("analysis %s failed", analysis_id)
        for c in claimed:
            analysis_fail(c.analysis.pk, f"{type(exc).__name__}: {exc}"[:200], token=c.token)
        return "failed"
    finished = 0
    for index, (c, r) in enumerate(zip(claimed, results, strict=True)):
        try:
            finished_now = analysis_finish(c, r)
            finished += finished_now
            if finished_now and index:  # the task logs the claimed one; each batched one gets its own line
                logger.info("analysis %s: done: batched with %s", c.analysis.pk, first.pk)
        except TRANSIENT_ERRORS:
            # The database went away between two results: hand back the claims not yet finished (if it
            # is reachable again) so the retry need not wait for them to go stale.
            connection.close_if_unusable_or_obsolete()
            for rest in claimed[index:]:
                try:
                    analysis_release(rest.analysis.pk, rest.token)
                except TRANSIENT_ERRORS:
                    break
            raise
        except Exception as exc:  # noqa: BLE001 - this result cannot be recorded: fail it, go on with the others
            logger.exception("analysis %s: result not recorded", c.analysis.pk)
            analysis_fail(c.analysis.pk, f"{type(exc).__name__}: {exc}"[:200], token=c.token)
    return f"done:{finished}/{len(claimed)}"
