"""Writes for patients. Every function runs inside the caller's clinic scope and audits itself."""

from __future__ import annotations

import datetime as dt

from django.db import IntegrityError, transaction
from django.utils import timezone

from clinics import audit
from clinics.services import ServiceError
from clinics.tenancy import require_clinic_id

from .models import Patient, Sex

UPDATABLE_FIELDS = ("external_id", "given_name", "family_name", "date_of_birth", "sex")


def _validate(*, external_id: str | None = None, date_of_birth: dt.date | None = None) -> None:
    if external_id is not None and not external_id.strip():
        raise ServiceError("invalid_external_id", "The external id may not be empty.")
    if date_of_birth is not None and date_of_birth > timezone.localdate():
        raise ServiceError("invalid_date_of_birth", "The date of birth is in the future.")


def patient_create(
    *, external_id: str, given_name: str, family_name: str, date_of_birth: dt.date, sex: str = Sex.UNKNOWN
) -> Patient:
    _validate(external_id=external_id, date_of_birth=date_of_birth)
    try:
        with transaction.atomic():
            patient = Patient.objects.create(
                external_id=external_id.strip(), given_name=given_name.strip(), family_name=family_name.strip(),
                date_of_birth=date_of_birth, sex=sex,
            )
            audit.record(action="patient.create", clinic_id=require_clinic_id(), object_type="patient",
                         object_id=patient.id)
    except IntegrityError as exc:
        raise ServiceError("duplicate_external_id", "A patient with this external id already exists.", 409) from exc
    return patient


def patient_update(*, patient: Patient, **changes: object) -> Patient:
    unknown = set(changes) - set(UPDATABLE_FIELDS)
    if unknown:
        raise ServiceError("invalid_field", f"Fields that cannot be changed: {', '.join(sorted(unknown))}.")
    _validate(external_id=changes.get("external_id"), date_of_birth=changes.get("date_of_birth"))  # type: ignore[arg-type]
    changed = sorted(name for name, value in changes.items() if getattr(patient, name) != value)
    for name in changed:
        value = changes[name]
        setattr(patient, name, value.strip() if isinstance(value, str) else value)
    try:
        with transaction.atomic():
            if changed:
                patient.updated_at = timezone.now()
                patient.save(update_fields=[*changed, "updated_at"])
            # Field names only: the values are patient data and stay out of the trail.
            audit.record(action="patient.update", clinic_id=require_clinic_id(), object_type="patient",
                         object_id=patient.id, details={"fields": changed})
    except IntegrityError as exc:
        raise ServiceError("duplicate_external_id", "A patient with this external id already exists.", 409) from exc
    return patient
