from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone

from clinics.tenancy import ClinicScopedModel


class Sex(models.TextChoices):
    FEMALE = "female", "Female"
    MALE = "male", "Male"
    OTHER = "other", "Other"
    UNKNOWN = "unknown", "Unknown"


class Patient(ClinicScopedModel):
    """A patient of one clinic. ``external_id`` is the practice system's id, unique per clinic."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    external_id = models.CharField(max_length=64)
    given_name = models.CharField(max_length=100)
    family_name = models.CharField(max_length=100)
    date_of_birth = models.DateField()
    sex = models.CharField(max_length=10, choices=Sex.choices, default=Sex.UNKNOWN)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta(ClinicScopedModel.Meta):
        constraints = [
            models.UniqueConstraint(fields=["clinic", "external_id"], name="patient_clinic_external_id_unique")
        ]
        indexes = [models.Index(fields=["clinic", "family_name"])]

    def __str__(self) -> str:
        # Never the name: objects are printed in logs and error reports.
        return f"Patient {self.id}"
