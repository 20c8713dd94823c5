"""Model registry (and, with the review issue, analysis jobs, findings and reviews)."""

from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone


class ModelModality(models.TextChoices):
    PHOTO = "photo", "Intraoral photo"
    XRAY = "xray", "X-ray"


class ModelVersion(models.Model):
    """A trained model artefact registered on this installation (not clinic data).

    The artefact folder holds ``weights.pt``, ``model.json`` (labels, thresholds, calibration,
    metrics) and ``MODEL_CARD.md``; ``weights_sha256`` is verified at registration and at load.
    Exactly one version per modality is active; findings record the version that produced them.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=100)
    version = models.CharField(max_length=40)
    modality = models.CharField(max_length=10, choices=ModelModality.choices)
    artifact_dir = models.CharField(max_length=500)
    weights_sha256 = models.CharField(max_length=64)
    labels = models.JSONField(default=list)
    thresholds = models.JSONField(default=dict)
    metrics = models.JSONField(default=dict, blank=True)
    is_active = models.BooleanField(default=False)
    registered_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["name", "version"], name="modelversion_name_version_unique"),
            models.UniqueConstraint(
                fields=["modality"], condition=models.Q(is_active=True), name="modelversion_one_active_per_modality"
            ),
        ]
        ordering = ["modality", "-registered_at"]

    def __str__(self) -> str:
        return self.model_id

    @property
    def model_id(self) -> str:
        return f"{self.name}@{self.version}"
