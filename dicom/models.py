"""DICOM: each clinic's node (who may send to it, where results go back), the instances it received, the inbox of
instances that matched no patient, and the structured reports (and secondary captures) sent back."""

from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone

from clinics.tenancy import ClinicScopedModel


class DicomNode(ClinicScopedModel):
    """A clinic's DICOM settings (one row per clinic).

    Invariants: ``called_ae`` is unique across the installation (it is how the receiver, ``dicom_scp``, finds the
    clinic of an association before any clinic is in scope); an association is accepted only from a calling AE
    title in ``calling_aes`` and, when ``calling_ips`` is not empty, from one of those addresses. Results go to
    ``dest_ae`` at ``dest_host``:``dest_port`` (TLS when ``dest_tls``) when a destination is set."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    called_ae = models.CharField(max_length=16, unique=True)
    calling_aes = models.JSONField(default=list, blank=True)
    calling_ips = models.JSONField(default=list, blank=True)
    dest_ae = models.CharField(max_length=16, blank=True)
    dest_host = models.CharField(max_length=255, blank=True)
    dest_port = models.PositiveIntegerField(null=True, blank=True)
    dest_tls = models.BooleanField(default=False)
    send_preliminary = models.BooleanField(default=False)  # an SR once analysed, before signing
    send_secondary_capture = models.BooleanField(default=True)  # an image with the findings burned in
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta(ClinicScopedModel.Meta):
        constraints = [models.UniqueConstraint(fields=["clinic"], name="dicomnode_one_per_clinic")]

    def __str__(self) -> str:
        return f"DICOM node {self.called_ae}"

    @property
    def has_destination(self) -> bool:
        return bool(self.dest_ae and self.dest_host and self.dest_port)


class InstanceStatus(models.TextChoices):
    MATCHED = "matched", "Matched to a patient"
    UNMATCHED = "unmatched", "Waiting in the inbox"
    ASSIGNED = "assigned", "Assigned from the inbox"


class DicomInstance(ClinicScopedModel):
    """One received SOP instance.

    ``header`` holds, encrypted, what the results need to refer back to it: its study, series and SOP instance
    UIDs, SOP class, size, and the patient and study attributes a structured report in the same study repeats
    (with the patient's data key once matched; with the clinic's data key while it waits in the inbox, where the
    received file is kept, encrypted, under ``held_key`` until it is assigned). ``sop_index`` is a keyed blind
    index of the SOP instance UID: a resent instance is recognised and stored once. The image served to users is
    the sanitised one (``patients.Image``): no DICOM tag of the original is ever served."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    status = models.CharField(max_length=10, choices=InstanceStatus.choices)
    patient = models.ForeignKey("patients.Patient", on_delete=models.CASCADE, null=True, blank=True, related_name="+")
    image = models.OneToOneField(
        "patients.Image", on_delete=models.CASCADE, null=True, blank=True, related_name="dicom_instance"
    )
    modality = models.CharField(max_length=10)  # photo | xray
    sop_index = models.CharField(max_length=64)
    header = models.BinaryField(editable=False)
    held_key = models.CharField(max_length=64, blank=True, editable=False)
    held_bytes = models.PositiveBigIntegerField(default=0, editable=False)  # the held blob's size, for the quota
    calling_ae = models.CharField(max_length=16)
    received_at = models.DateTimeField(default=timezone.now)
    assigned_by = models.ForeignKey("clinics.User", on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    assigned_at = models.DateTimeField(null=True, blank=True)

    class Meta(ClinicScopedModel.Meta):
        ordering = ["-received_at"]
        constraints = [models.UniqueConstraint(fields=["clinic", "sop_index"], name="dicominstance_sop_once")]
        indexes = [models.Index(fields=["clinic", "status", "received_at"])]

    def __str__(self) -> str:
        return f"DICOM instance {self.id} ({self.status})"


class SendKind(models.TextChoices):
    SR = "sr", "Structured report"
    SC = "sc", "Secondary capture"


class SendStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed"


class DicomSend(ClinicScopedModel):
    """One object sent back to the clinic's PACS for one report version (or, preliminary, one visit's analysis).

    Invariants: one row per (report, kind) and per (visit, kind) while preliminary, so a version is sent once
    whatever happens to the messages; the generated SOP instance UID is fixed (encrypted in ``uids``) before the
    first attempt, so a retry sends the same object again, which the PACS stores once. ``attempt_log`` keeps every
    attempt (time, DICOM status or error category)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    visit = models.ForeignKey("patients.Visit", on_delete=models.CASCADE, related_name="+")
    report = models.ForeignKey("analysis.Report", on_delete=models.CASCADE, null=True, blank=True, related_name="+")
    kind = models.CharField(max_length=2, choices=SendKind.choices)
    preliminary = models.BooleanField(default=False)
    status = models.CharField(max_length=10, choices=SendStatus.choices, default=SendStatus.PENDING)
    uids = models.BinaryField(editable=False)
    attempts = models.PositiveSmallIntegerField(default=0)
    attempt_log = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta(ClinicScopedModel.Meta):
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["report", "kind"], condition=models.Q(report__isnull=False), name="dicomsend_once_per_report"
            ),
            models.UniqueConstraint(
                fields=["visit", "kind"], condition=models.Q(preliminary=True), name="dicomsend_one_preliminary"
            ),
        ]

    def __str__(self) -> str:
        return f"DICOM send {self.id} {self.kind} ({self.status})"
