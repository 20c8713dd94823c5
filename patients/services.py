"""Writes for patients, visits and images. Every function runs inside the caller's clinic scope and
writes its audit event in the same transaction (ids only: never names in the trail)."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import io
import json
import logging
import uuid
import zipfile
from collections.abc import Callable
from typing import Any, BinaryIO, NoReturn

import numpy as np
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Sum
from django.db.models.functions import Greatest
from django.utils import timezone
from PIL import Image as PILImage

from clinics import audit, context
from clinics.models import AuditOutcome, Clinic
from clinics.services import ServiceError
from clinics.tenancy import require_clinic_id
from core import crypto
from core.queue import task_send_after_response

from .exports import clinical_record
from .intake import IntakeError, SanitizedImage, display_variants, safe_display_name, sanitize_upload
from .keys import clinic_key, keys_forget, patient_key, patient_key_new
from .models import Image, Patient, Sex, Visit
from .queue import DERIVE_IMAGE
from .selectors import PatientIdentity, identity_aad, image_display_name, patient_identity
from .storage import blob_delete, blob_get, blob_put, blob_size

logger = logging.getLogger(__name__)

IDENTITY_FIELDS = ("external_id", "given_name", "family_name", "date_of_birth")
UPDATABLE_FIELDS = (*IDENTITY_FIELDS, "sex")
IMAGE_VARIANTS = ("original", "preview", "thumbnail")


def _validate(*, external_id: str | None = None, date_of_birth: dt.date | None = None) -> None:
    if external_id is not None and not external_id.strip():
        raise ServiceError("invalid_external_id", "The external id may not be empty.")
    if date_of_birth is not None and date_of_birth > timezone.localdate():
        raise ServiceError("invalid_date_of_birth", "The date of birth is in the future.")


def _seal_identity(patient: Patient, identity: PatientIdentity, key: bytes) -> None:
    plaintext = json.dumps(
        {
            "external_id": identity.external_id,
            "given_name": identity.given_name,
            "family_name": identity.family_name,
            "date_of_birth": identity.date_of_birth.isoformat(),
        }
    ).encode()
    patient.identity = crypto.encrypt(key, plaintext, identity_aad(patient.pk))
    index_key = clinic_key()
    patient.external_id_index = crypto.blind_index(index_key, identity.external_id)
    patient.family_name_index = crypto.blind_index(index_key, identity.family_name)
    patient.given_name_index = crypto.blind_index(index_key, identity.given_name)
    patient._identity = identity


def patient_create(
    *, external_id: str, given_name: str, family_name: str, date_of_birth: dt.date, sex: str = Sex.UNKNOWN
) -> Patient:
    _validate(external_id=external_id, date_of_birth=date_of_birth)
    identity = PatientIdentity(
        external_id=external_id.strip(),
        given_name=given_name.strip(),
        family_name=family_name.strip(),
        date_of_birth=date_of_birth,
    )
    try:
        with transaction.atomic():
            patient = Patient(id=uuid.uuid4(), sex=sex)
            data_key, raw_key = patient_key_new(patient.id)
            _seal_identity(patient, identity, raw_key)
            patient.save(force_insert=True)
            data_key.save(force_insert=True)
            audit.record(
                action="patient.create", clinic_id=require_clinic_id(), object_type="patient", object_id=patient.id
            )
    except IntegrityError as exc:
        raise ServiceError("duplicate_external_id", "A patient with this external id already exists.", 409) from exc
    return patient


def patient_update(*, patient: Patient, **changes: Any) -> Patient:
    unknown = set(changes) - set(UPDATABLE_FIELDS)
    if unknown:
        raise ServiceError("invalid_field", f"Fields that cannot be changed: {', '.join(sorted(unknown))}.")
    _validate(external_id=changes.get("external_id"), date_of_birth=changes.get("date_of_birth"))
    current = patient_identity(patient)
    values = {name: getattr(current, name) for name in IDENTITY_FIELDS} | {"sex": patient.sex}
    new = {name: (v.strip() if isinstance(v, str) else v) for name, v in changes.items()}
    changed = sorted(name for name, value in new.items() if values[name] != value)
    values.update(new)
    try:
        with transaction.atomic():
            if changed:
                patient.sex = values.pop("sex")
                _seal_identity(patient, PatientIdentity(**values), patient_key(patient))
                patient.updated_at = timezone.now()
                patient.save()
            # Field names only: the values are patient data and stay out of the trail.
            audit.record(
                action="patient.update",
                clinic_id=require_clinic_id(),
                object_type="patient",
                object_id=patient.id,
                details={"fields": changed},
            )
    except IntegrityError as exc:
        raise ServiceError("duplicate_external_id", "A patient with this external id already exists.", 409) from exc
    return patient


def visit_for_upload(*, patient: Patient, visit_id: object = None) -> Visit:
    """The named visit of this patient, or today's open visit (created on the first upload of the day, and
    again after today's visit was signed). A signed visit takes no more scans: its report is what the dentist
    signed; an amendment opened on it takes them again (``Visit.locked``, kept by the app that signs reports).

    Inside the upload's transaction the visit's row stays locked (``FOR NO KEY UPDATE``) until the image is recorded:
    signing locks it ``FOR UPDATE``, so a scan either lands before the signature (which then waits for its analysis)
    or sees the visit signed, never on a visit signed in between."""
    if visit_id:
        visit = Visit.objects.select_for_update(no_key=True).filter(pk=visit_id, patient=patient).first()
        if visit is None:
            raise ServiceError("visit_not_found", "That visit does not exist for this patient.", 404)
        if visit.locked:
            raise ServiceError(
                "visit_signed",
                "That visit's report is signed: send the scan without a visit (it starts a new one) or have a "
                "dentist open an amendment first.",
                409,
            )
        return visit
    today = timezone.localdate()
    todays = Visit.objects.select_for_update(no_key=True).filter(patient=patient, visit_date=today)
    todays = todays.order_by("-created_at")
    visit = next((v for v in todays if not v.locked), None)
    if visit is None:
        actor = context.actor_var.get()
        visit = Visit.objects.create(patient=patient, visit_date=today, created_by=actor.user if actor else None)
        audit.record(
            action="visit.create",
            clinic_id=require_clinic_id(),
            object_type="visit",
            object_id=visit.id,
            details={"patient_id": str(patient.pk)},
        )
    return visit


def _aad(image_id: object, variant: str) -> bytes:
    return f"image:{image_id}:{variant}".encode()


def image_ingest(
    *,
    patient: Patient,
    stream: BinaryIO,
    filename: str | None,
    size: int | None,
    modality: str,
    visit_id: object = None,
    model_input: Callable[[Any], tuple[str, bytes] | None] | None = None,
    inspect: Callable[[SanitizedImage], None] | None = None,
    dicom_photo: bool = False,
) -> Image:
    """Sanitise one upload, encrypt and store it, and record it. A rejection (``IntakeError``)
    stores nothing; a failure after blobs were written removes them again.

    The sanitised PNG is stored here, and the model-input copy when ``model_input`` is given; the preview and
    thumbnail are made after the caller's transaction commits, by a worker (``patients.derive_image``; in the
    embedded default, in this process once the response is sent), and by whatever reads them first if that has
    not happened yet (``image_read``), so the upload is answered without them.

    ``model_input`` (the analysis app's, for the active model of the modality) turns the decoded pixels
    into ``(spec, PNG bytes)``: a copy already reduced to the model's input, stored beside the original so
    the worker does not decode the full-size image again; None when that model takes no copy. It stays in the
    request because the pixels are decoded here anyway: about 11 ms for a 1280x960 photo, against about 26 ms
    for a worker to decode the original again.

    ``inspect`` (the analysis app's image gate) sees the sanitised upload, pixels included, before anything
    is stored."""
    sanitized: SanitizedImage = sanitize_upload(
        stream,
        modality=modality,
        size=size,
        max_bytes=settings.IMAGE_MAX_BYTES,
        max_pixels=settings.IMAGE_MAX_PIXELS,
        dicom_photo=dicom_photo,
    )
    if inspect is not None:
        inspect(sanitized)
    key = patient_key(patient)
    image_id = uuid.uuid4()
    reduced = model_input(sanitized.pixels) if model_input is not None and sanitized.pixels is not None else None
    variants = [("original", sanitized.data)]
    if reduced is not None:
        variants.append(("model_input", reduced[1]))
    blobs = [crypto.encrypt(key, data, _aad(image_id, variant)) for variant, data in variants]
    stored_bytes = sum(len(blob) for blob in blobs)
    quota_check(stored_bytes)  # early: a clinic over its quota writes nothing
    written: list[str] = []
    try:
        for blob in blobs:
            written.append(blob_put(blob))
        actor = context.actor_var.get() or context.Actor()
        with transaction.atomic():
            quota_check(stored_bytes, lock=True)  # again, under the clinic's lock, against concurrent uploads
            visit = visit_for_upload(patient=patient, visit_id=visit_id)
            image = Image.objects.create(
                id=image_id,
                patient=patient,
                visit=visit,
                modality=modality,
                width=sanitized.width,
                height=sanitized.height,
                mode=sanitized.mode,
                bit_depth=sanitized.bit_depth,
                original_format=sanitized.original_format,
                window_low=sanitized.window[0] if sanitized.window else None,
                window_high=sanitized.window[1] if sanitized.window else None,
                sha256=hashlib.sha256(sanitized.data).hexdigest(),
                size_bytes=len(sanitized.data),
                stored_bytes=stored_bytes,
                display_name=crypto.encrypt(key, safe_display_name(filename).encode(), _aad(image_id, "name")),
                original_key=written[0],
                model_input_key=written[1] if reduced is not None else "",
                model_input_spec=reduced[0] if reduced is not None else "",
                uploaded_by=actor.user,
                uploaded_by_api_key=actor.api_key,
            )
            clinic_id = require_clinic_id()
            audit.record(
                action="image.upload",
                clinic_id=clinic_id,
                object_type="image",
                object_id=image.id,
                details={
                    "patient_id": str(patient.pk),
                    "visit_id": str(visit.pk),
                    "modality": modality,
                    "sha256": image.sha256,
                    "format": sanitized.original_format,
                },
            )
            transaction.on_commit(functools.partial(_derive_later, str(image.pk), str(clinic_id)))
    except BaseException:
        for name in written:
            try:
                blob_delete(name)
            except Exception:  # noqa: BLE001 - the original error matters more; the blob is unreadable
                logger.exception("could not remove blob %s after a failed upload", name)
        raise
    return image


def image_blobs_remove(image: Image) -> None:
    """Remove the blobs of an image whose row was rolled back (``analysis.uploads``: the upload's transaction failed
    after ``image_ingest``); a failure is logged, the rest still go (``remove_orphan_blobs`` finds any left)."""
    for name in image.blob_keys.values():
        try:
            blob_delete(name)
        except Exception:  # noqa: BLE001 - unreferenced anyway
            logger.exception("could not remove blob %s of an upload that was rolled back", name)


def _derive_later(image_id: str, clinic_id: str) -> None:
    """Ask a worker for the preview and thumbnail (after commit). A broker that is down must not turn a committed
    upload into an error (the client would retry and store it twice): the first read makes them instead."""
    try:
        task_send_after_response(DERIVE_IMAGE, image_id, clinic_id)
    except Exception:  # noqa: BLE001 - kombu's own errors, sockets; in-process (no broker) the task's own failure
        logger.warning("image %s: preview not queued or not made now; the first read makes it", image_id, exc_info=True)


def image_derive(*, image: Image) -> bool:
    """Make and store the image's preview and thumbnail (``patients.intake.display_variants``) from its
    sanitised original, unless they exist, and audit it (``image.derive``, with the swap). Safe to run twice or at
    once with a read that makes them: the keys are set by compare-and-swap on empty keys, and the loser's blobs are
    removed. False when there was nothing to do or the image changed or went away meanwhile (erased: nothing of it
    is kept). An original that fails its check is audited (``image.integrity_failed``) and raises ``ServiceError``
    ``integrity_check_failed``, as a read of it would."""
    if image.preview_key and image.thumbnail_key:
        return False
    key = patient_key(image.patient)
    try:
        original = _decrypt_variant(image, "original", key)
    except (crypto.IntegrityFailure, FileNotFoundError, OSError, KeyError) as exc:
        _integrity_failed(image, "original", exc)
    window = (image.window_low, image.window_high) if image.window_low is not None else None
    preview, thumbnail = display_variants(original, window)
    blobs = [
        crypto.encrypt(key, preview, _aad(image.pk, "preview")),
        crypto.encrypt(key, thumbnail, _aad(image.pk, "thumbnail")),
    ]
    added = sum(len(blob) for blob in blobs)
    written: list[str] = []
    swapped: int | None = 0
    try:
        for blob in blobs:
            written.append(blob_put(blob))
        swapped = None  # unknown until the commit answers
        with transaction.atomic():
            swapped = Image.objects.filter(pk=image.pk, preview_key="", thumbnail_key="").update(
                preview_key=written[0], thumbnail_key=written[1], stored_bytes=F("stored_bytes") + added
            )
            if swapped:
                audit.record(
                    action="image.derive",
                    clinic_id=require_clinic_id(),
                    object_type="image",
                    object_id=image.pk,
                    details={"variants": ["preview", "thumbnail"]},
                )
    finally:
        if swapped == 0 or (swapped is None and not _names(image.pk, written)):
            for name in written:
                blob_delete(name)
    if swapped:
        image.preview_key, image.thumbnail_key = written
        image.stored_bytes += added
        return True
    try:  # made by another meanwhile: read theirs
        image.refresh_from_db(fields=["preview_key", "thumbnail_key", "stored_bytes"])
    except Image.DoesNotExist:
        image.preview_key = image.thumbnail_key = ""  # erased meanwhile
    return False


def _names(image_id: object, written: list[str]) -> bool:
    """Whether the image row names these blobs (after a swap whose commit did not answer). When even that cannot
    be read, say yes: a blob left behind is unreadable once its image is erased, one deleted under a row that
    names it would break the image's preview."""
    try:
        return Image.objects.filter(pk=image_id, preview_key=written[0]).exists()
    except Exception:  # noqa: BLE001 - the database is what failed
        return True


# What apps above this one store for the clinic in scope beside its images (the DICOM inbox's held files), in
# bytes: each registered from an ``AppConfig.ready`` and counted in the quota.
_quota_usage: list[Callable[[], int]] = []


def quota_usage_register(usage: Callable[[], int]) -> None:
    """Count ``usage()`` (bytes, for the clinic in scope) in the storage quota from now on (idempotent)."""
    if usage not in _quota_usage:
        _quota_usage.append(usage)


def quota_check(incoming: int, *, lock: bool = False) -> None:
    """The clinic's images may occupy at most ``IMAGE_QUOTA_BYTES_PER_CLINIC`` in storage, counting every
    stored blob (original, preview, thumbnail, model-input copy; encrypted sizes), not only the originals, and
    what other apps store for the clinic (``quota_usage_register``: the DICOM inbox's held files).

    ``lock`` (inside the upload's transaction) first takes the clinic row's lock, held until commit, so two
    uploads of one clinic cannot both pass on the same total: the second waits, then counts the first. The lock is
    ``FOR NO KEY UPDATE``: it excludes the other uploads' quota locks but not the key-share locks that every insert
    of a row pointing at the clinic takes (audit events, images...). ``FOR UPDATE`` blocked those until the upload
    committed, and deadlocked against the audit chain's lock (an upload holding the clinic waited for the chain
    head, held by an audit insert waiting for the clinic): 500s under the mixed load test."""
    quota = settings.IMAGE_QUOTA_BYTES_PER_CLINIC
    if not quota:
        return
    if lock:
        clinic = Clinic.objects.select_for_update(no_key=True).filter(pk=require_clinic_id())
        list(clinic.values_list("pk", flat=True))
    used = (Image.objects.aggregate(total=Sum("stored_bytes"))["total"] or 0) + sum(usage() for usage in _quota_usage)
    if used + incoming > quota:
        raise IntakeError(
            "quota_exceeded",
            "This clinic has used its image storage quota; ask your clinic admin to free space or raise it.",
            413,
        )


def image_model_input_replace(*, image: Image, spec: str, data: bytes) -> bool:
    """Store a new model-input copy (``spec`` says which model's reduction) in place of the image's current
    one: encrypted like the other variants, swapped in by compare-and-swap on the old key, the old blob
    removed after commit. False (and nothing kept) when the row changed meanwhile or is gone (erased)."""
    old_key = image.model_input_key
    old_size = blob_size(old_key) if old_key else 0
    blob = crypto.encrypt(patient_key(image.patient), data, _aad(image.pk, "model_input"))
    new_key = blob_put(blob)
    try:
        with transaction.atomic():
            swapped = Image.objects.filter(pk=image.pk, model_input_key=old_key).update(
                model_input_key=new_key,
                model_input_spec=spec,
                stored_bytes=Greatest(F("stored_bytes") - old_size + len(blob), 0),
            )
            if swapped and old_key:
                transaction.on_commit(lambda: blob_delete(old_key))
    except BaseException:
        blob_delete(new_key)
        raise
    if not swapped:
        blob_delete(new_key)
        return False
    image.model_input_key, image.model_input_spec = new_key, spec
    image.stored_bytes = max(image.stored_bytes - old_size + len(blob), 0)
    return True


def image_read(*, image: Image, variant: str = "original") -> bytes:
    """Decrypt one stored variant, checking its integrity. A failed check is audited and raised;
    no unauthenticated bytes are ever returned."""
    if variant not in IMAGE_VARIANTS:
        raise ServiceError("invalid_variant", f"Unknown image variant {variant!r}.")
    if variant != "original" and not image.blob_keys.get(variant):
        # read before the worker made it (or after its message was lost): made here
        image_derive(image=image)
        if not image.blob_keys.get(variant):
            raise ServiceError("not_found", "This image no longer exists.", 404)  # erased meanwhile
    return _read_variant(image, variant)


def image_read_pixels16(*, image: Image) -> bytes:
    """The exact 16-bit values of a 16-bit X-ray (little-endian unsigned, row by row, ``width`` x ``height``), for
    the viewer's window/level: decoded from the sanitised original (authenticated, integrity-checked and audited
    like every read). A 16-bit DICOM was stored at 16 bits, so it keeps its depth through the viewer."""
    if image.bit_depth != 16:
        raise ServiceError("not_sixteen_bit", "This image has no 16-bit pixel data.", 404)
    with PILImage.open(io.BytesIO(_read_variant(image, "original"))) as decoded:
        pixels = np.asarray(decoded).astype("<u2", copy=False)
    return np.ascontiguousarray(pixels).tobytes()


def image_read_model_input(*, image: Image, spec: str) -> bytes | None:
    """The model-input copy (for the analysis worker) when it was made for ``spec``, else None.
    Authenticated like every variant (AES-GCM with the image id and variant as associated data)."""
    if not spec or not image.model_input_key or image.model_input_spec != spec:
        return None
    return _read_variant(image, "model_input")


def _decrypt_variant(image: Image, variant: str, key: bytes | None = None) -> bytes:
    """The decrypted bytes of one stored variant, checked (AES-GCM, and the SHA-256 of the original); raises
    ``crypto.IntegrityFailure`` or an ``OSError`` for a damaged or missing blob. Not audited: see ``_read_variant``."""
    key = key if key is not None else patient_key(image.patient)
    data = crypto.decrypt(key, blob_get(image.blob_keys[variant]), _aad(image.pk, variant))
    if variant == "original" and hashlib.sha256(data).hexdigest() != image.sha256:
        raise crypto.IntegrityFailure("SHA-256 of the decrypted image does not match the recorded one")
    return data


def _integrity_failed(image: Image, variant: str, exc: BaseException) -> NoReturn:
    with transaction.atomic():
        audit.record(
            action="image.integrity_failed",
            clinic_id=require_clinic_id(),
            object_type="image",
            object_id=image.pk,
            outcome=AuditOutcome.FAILURE,
            details={"variant": variant, "reason": type(exc).__name__},
        )
    raise ServiceError(
        "integrity_check_failed", "The stored image failed its integrity check and was not served.", 500
    ) from exc


def _read_variant(image: Image, variant: str) -> bytes:
    try:
        data = _decrypt_variant(image, variant)
    except (crypto.IntegrityFailure, FileNotFoundError, OSError, KeyError) as exc:
        _integrity_failed(image, variant, exc)
    audit.record(
        action="image.view",
        clinic_id=require_clinic_id(),
        object_type="image",
        object_id=image.pk,
        details={"variant": variant},
    )
    return data


def patient_export(*, patient: Patient, clinical: Callable[[Patient], dict[str, Any]] = clinical_record) -> bytes:
    """A zip of everything held about one patient: ``patient.json`` and every sanitised image.

    ``clinical`` gives what the apps above this one hold: by default what their providers registered in
    ``exports`` give (the analysis app's: per image id its analyses and findings with every review decision,
    per visit id its signed reports and amendments); this app does not import them."""
    identity = patient_identity(patient)
    held = clinical(patient)
    per_image, per_visit = held.get("images", {}), held.get("visits", {})
    buffer = io.BytesIO()
    visits = []
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for visit in Visit.objects.filter(patient=patient).order_by("visit_date", "created_at"):
            images = []
            for image in Image.objects.filter(visit=visit).order_by("uploaded_at"):
                image.patient = patient
                archive.writestr(f"images/{image.pk}.png", image_read(image=image, variant="original"))
                images.append(
                    {
                        "id": str(image.pk),
                        "file": f"images/{image.pk}.png",
                        "modality": image.modality,
                        "width": image.width,
                        "height": image.height,
                        "bit_depth": image.bit_depth,
                        "original_format": image.original_format,
                        "sha256": image.sha256,
                        "uploaded_at": image.uploaded_at.isoformat(),
                        "original_name": image_display_name(image),
                        "analyses": [],
                        "findings": [],
                        **per_image.get(str(image.pk), {}),  # every section a provider gives (analyses, dicom...)
                    }
                )
            visits.append(
                {
                    "id": str(visit.pk),
                    "date": visit.visit_date.isoformat(),
                    "images": images,
                    "reports": [],
                    "amendments": [],
                    **per_visit.get(str(visit.pk), {}),  # reports, amendments, dicom_sends...
                }
            )
        record = {
            "patient": {
                "id": str(patient.pk),
                "external_id": identity.external_id,
                "given_name": identity.given_name,
                "family_name": identity.family_name,
                "date_of_birth": identity.date_of_birth.isoformat(),
                "sex": patient.sex,
                "created_at": patient.created_at.isoformat(),
                "updated_at": patient.updated_at.isoformat(),
            },
            "visits": visits,
            "exported_at": timezone.now().isoformat(),
        }
        archive.writestr("patient.json", json.dumps(record, indent=2))
    audit.record(
        action="patient.export",
        clinic_id=require_clinic_id(),
        object_type="patient",
        object_id=patient.pk,
        details={"images": sum(len(v["images"]) for v in visits)},
    )
    return buffer.getvalue()


# Apps above this one that hold a patient's data outside the rows that cascade from the patient (the DICOM inbox:
# files received before the patient was registered): each hook, called inside the erasure's transaction with the
# patient (identity still readable), deletes its rows and returns the blob names to remove after commit.
_erase_hooks: list[Callable[[Patient], list[str]]] = []


def patient_erase_register(hook: Callable[[Patient], list[str]]) -> None:
    """Call ``hook`` in every erasure from now on (idempotent: ``ready`` may run more than once in tests)."""
    if hook not in _erase_hooks:
        _erase_hooks.append(hook)


def patient_erase(*, patient: Patient) -> None:
    """Erase one patient (GDPR Art. 17): rows deleted, the data key destroyed (so any copy of the
    ciphertext left in backups or storage is unreadable), blobs removed after commit. The audit
    event keeps only the patient's random id, which no longer leads to any data."""
    patient_id = patient.pk
    with transaction.atomic():
        # the hold as it is now, the row held until the erasure commits: a hold set meanwhile is not run over
        held = Patient.objects.select_for_update().filter(pk=patient_id).values_list("legal_hold", flat=True)
        if any(held):
            raise ServiceError("legal_hold", "This patient's records are under legal hold and cannot be erased.", 409)
        # Locked: a preview made at this moment (``image_derive``) either lands before, and is listed here, or
        # finds the image gone after this commits and removes its own blobs.
        images = Image.objects.select_for_update().filter(patient=patient)
        blob_names = [name for image in images for name in image.blob_keys.values()]
        for hook in _erase_hooks:  # before the key goes: a hook may need the patient's identity
            blob_names += hook(patient)
        Image.objects.filter(patient=patient).delete()
        Visit.objects.filter(patient=patient).delete()
        patient.data_keys.all().delete()
        keys_forget()
        Patient.objects.filter(pk=patient_id).delete()
        audit.record(
            action="patient.erase",
            clinic_id=require_clinic_id(),
            object_type="patient",
            object_id=patient_id,
            details={"blobs": len(blob_names)},
        )

        def remove_blobs() -> None:
            for name in blob_names:
                try:
                    blob_delete(name)
                except Exception:  # noqa: BLE001 - unreadable anyway: its key is gone
                    logger.exception("could not remove blob %s of an erased patient", name)

        transaction.on_commit(remove_blobs)
