"""Model registry (and, with the review issue, analysis jobs, findings and reviews)."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from clinics.tenancy import ClinicScopedModel
from core import teeth


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


class AnalysisStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"
    NOT_ASSESSABLE = "not_assessable", "Not assessed by the AI"


class Analysis(ClinicScopedModel):
    """One run of one model version on one image. Claimed by a worker with a compare-and-swap
    (``queued -> running`` with a fresh ``claim_token``) and finished only by the holder of that
    token, so duplicated or redelivered messages never produce a second result."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    image = models.ForeignKey("patients.Image", on_delete=models.CASCADE, related_name="analyses")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="analyses")
    status = models.CharField(max_length=20, choices=AnalysisStatus.choices, default=AnalysisStatus.QUEUED)
    input_sha256 = models.CharField(max_length=64)
    scores = models.JSONField(default=dict, blank=True)
    # The image gate (analysis.ml.gate): why the AI did not assess the image (status not_assessable), and whether
    # an assessed image was unlike the model's training images (its findings are marked, and hidden when the
    # clinic chooses so).
    not_assessable_code = models.CharField(max_length=30, blank=True)
    not_assessable_message = models.CharField(max_length=200, blank=True)
    unfamiliar = models.BooleanField(default=False)
    ood_score = models.FloatField(null=True, blank=True)
    gate_measures = models.JSONField(default=dict, blank=True)
    # The clinic's own model that produced the scores (None: the base model alone), and in shadow mode the scores
    # of the candidate run beside it (never shown) and whether its findings would have differed.
    clinic_model = models.ForeignKey(
        "ClinicModel", on_delete=models.PROTECT, null=True, blank=True, related_name="analyses"
    )
    shadow_model = models.ForeignKey(
        "ClinicModel", on_delete=models.SET_NULL, null=True, blank=True, related_name="shadow_analyses"
    )
    shadow_scores = models.JSONField(default=dict, blank=True)
    shadow_disagrees = models.BooleanField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    claim_token = models.UUIDField(null=True, blank=True, editable=False)
    claimed_at = models.DateTimeField(null=True, blank=True)
    failure_reason = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta(ClinicScopedModel.Meta):
        constraints = [
            models.UniqueConstraint(fields=["image", "model_version"], name="analysis_one_per_image_and_model")
        ]
        # the list's filter by status, and its order (newest first) without one
        indexes = [
            models.Index(fields=["clinic", "status", "created_at"]),
            models.Index(fields=["clinic", "-created_at", "id"]),
        ]

    def __str__(self) -> str:
        return f"Analysis {self.id} ({self.status})"


class FindingStatus(models.TextChoices):
    PENDING = "pending", "Pending review"
    CONFIRMED = "confirmed", "Confirmed"
    REJECTED = "rejected", "Rejected"


class FindingSource(models.TextChoices):
    MODEL = "model", "AI suggestion"
    CLINICIAN = "clinician", "Added by a clinician"


class RejectReason(models.TextChoices):
    NOT_PRESENT = "not_present", "Not present"
    WRONG_LOCATION = "wrong_location", "Wrong location"
    WRONG_CONDITION = "wrong_condition", "Wrong condition"
    CLINICALLY_IRRELEVANT = "clinically_irrelevant", "Clinically irrelevant"
    IMAGE_QUALITY = "image_quality", "Image quality"


class ToothOrNone:
    """The API's null for a tooth not assigned (stored as ""): for ``Finding`` and the list's finding rows."""

    __slots__ = ()

    @property
    def tooth_or_none(self) -> str | None:
        return self.tooth or None  # type: ignore[attr-defined]

    @property
    def suggested_tooth_or_none(self) -> str | None:
        return self.suggested_tooth or None  # type: ignore[attr-defined]


class Finding(ToothOrNone, ClinicScopedModel):
    """A model's suggestion or a clinician's finding on one image. Model findings stay ``pending``
    until a dentist decides; every decision is also a ``FindingDecision`` row.

    ``tooth`` is the FDI code (``core.teeth``; ``""`` while none is assigned), whatever notation the clinic reads;
    ``surfaces`` the letters of ``core.teeth.SURFACES`` in canonical order. ``suggested_tooth`` and its probability
    are for automatic tooth numbering (nothing writes them yet); a dentist's ``tooth`` always wins.

    ``version`` counts the changes: every write through ``analysis.reviews`` adds one, and a write made on an older
    version is refused (412), so two reviewers never silently overwrite each other."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    analysis = models.ForeignKey(Analysis, on_delete=models.CASCADE, null=True, blank=True, related_name="findings")
    image = models.ForeignKey("patients.Image", on_delete=models.CASCADE, related_name="findings")
    source = models.CharField(max_length=10, choices=FindingSource.choices, default=FindingSource.MODEL)
    condition = models.CharField(max_length=40)
    probability = models.FloatField(null=True, blank=True)
    box = models.JSONField(null=True, blank=True)  # [x, y, w, h], normalised to the image
    heatmap = models.BinaryField(null=True, blank=True, editable=False)  # encrypted 8-bit map (photos)
    status = models.CharField(max_length=10, choices=FindingStatus.choices, default=FindingStatus.PENDING)
    reason = models.CharField(max_length=30, choices=RejectReason.choices, blank=True)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    tooth = models.CharField(max_length=2, blank=True)
    surfaces = models.CharField(max_length=8, blank=True)
    suggested_tooth = models.CharField(max_length=2, blank=True)
    suggested_tooth_probability = models.FloatField(null=True, blank=True)
    note = models.TextField(max_length=2000, blank=True)
    version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta(ClinicScopedModel.Meta):
        ordering = ["-probability", "created_at"]
        indexes = [models.Index(fields=["clinic", "image"]), models.Index(fields=["clinic", "status"])]

    def __str__(self) -> str:
        return f"Finding {self.id} {self.condition} ({self.status})"


class FindingDecision(ClinicScopedModel):
    """Append-only record of one clinician decision on a finding (who, when, what, before/after)."""

    id = models.BigAutoField(primary_key=True)
    finding = models.ForeignKey(Finding, on_delete=models.CASCADE, related_name="decisions")
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    decision = models.CharField(max_length=10)  # confirm | reject | adjust | add | undo | edit
    reason = models.CharField(max_length=30, blank=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta(ClinicScopedModel.Meta):
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.decision} on {self.finding_id}"


class ConditionThreshold(ClinicScopedModel):
    """A clinic's operating point for one condition: suggestions below it are not shown."""

    id = models.BigAutoField(primary_key=True)
    modality = models.CharField(max_length=10, choices=ModelModality.choices)
    condition = models.CharField(max_length=40)
    threshold = models.FloatField()

    class Meta(ClinicScopedModel.Meta):
        constraints = [
            models.UniqueConstraint(fields=["clinic", "modality", "condition"], name="threshold_unique_per_clinic")
        ]

    def __str__(self) -> str:
        return f"{self.modality}/{self.condition} >= {self.threshold}"


class WebhookEndpoint(ClinicScopedModel):
    """A clinic's receiver for events (``analysis.webhooks.WEBHOOK_EVENTS``), registered and revoked by a
    clinic admin (``webhook_register``/``webhook_revoke``).

    Invariant: the signing secret is never stored in clear by the application. ``secret_encrypted`` holds it
    encrypted with the clinic's data key (AES-256-GCM, associated data binding it to this endpoint and
    clinic), so a database dump alone cannot forge signatures and a master-key rotation (which re-wraps data
    keys) keeps it readable. ``secret`` is the plaintext column of rows written before that (migration 0007
    moved them); ``webhook_register`` leaves it empty and nothing reads it (``webhook_secret`` refuses a row
    without ``secret_encrypted``). It is kept, not dropped, so that no migration destroys data. Revoking keeps
    the row and its delivery history."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    url = models.URLField(max_length=500)
    secret = models.CharField(max_length=100, blank=True)  # legacy plaintext, never read; empty
    secret_encrypted = models.BinaryField(default=b"", editable=False)
    events = models.JSONField(default=list, blank=True)  # empty: every event
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"Webhook {self.id}"


class WebhookDelivery(ClinicScopedModel):
    """One event for one endpoint, with the log of every attempt."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=40)
    payload = models.JSONField()
    # pending | delivered | failed (gave up after the last retry) | cancelled (the endpoint was revoked first)
    status = models.CharField(max_length=10, default="pending")
    attempts = models.PositiveSmallIntegerField(default=0)
    attempt_log = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta(ClinicScopedModel.Meta):
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.event} -> {self.endpoint_id} ({self.status})"


class Report(ClinicScopedModel):
    """A signed, read-only report of one visit. A correction opens an ``Amendment``; signing again
    creates the next version, which ``amends`` the previous one: every version is kept.

    ``content`` is the snapshot of everything the report says (patient, findings, decisions),
    encrypted with the patient's data key (it holds identifying data)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    visit = models.ForeignKey("patients.Visit", on_delete=models.CASCADE, related_name="reports")
    version = models.PositiveIntegerField()
    content = models.BinaryField(editable=False)
    signed_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    signed_at = models.DateTimeField(default=timezone.now)
    # RESTRICT, not PROTECT: a version cannot be deleted while a later one amends it, but erasing the patient
    # deletes every version with the visit in one operation
    amends = models.ForeignKey("self", on_delete=models.RESTRICT, null=True, blank=True, related_name="+")
    amendment_reason = models.CharField(max_length=500, blank=True)

    class Meta(ClinicScopedModel.Meta):
        constraints = [models.UniqueConstraint(fields=["visit", "version"], name="report_visit_version_unique")]
        ordering = ["visit", "-version"]

    def __str__(self) -> str:
        return f"Report {self.id} v{self.version}"


class Amendment(ClinicScopedModel):
    """An open correction of a signed visit report; closed by the report version that signs it."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    visit = models.ForeignKey("patients.Visit", on_delete=models.CASCADE, related_name="amendments")
    reason = models.CharField(max_length=500)
    opened_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    opened_at = models.DateTimeField(default=timezone.now)
    report = models.OneToOneField(Report, on_delete=models.CASCADE, null=True, blank=True, related_name="amendment")

    class Meta(ClinicScopedModel.Meta):
        constraints = [
            models.UniqueConstraint(
                fields=["visit"], condition=models.Q(report__isnull=True), name="amendment_one_open_per_visit"
            )
        ]

    def __str__(self) -> str:
        return f"Amendment {self.id}"


class ClinicModelStatus(models.TextChoices):
    CANDIDATE = "candidate", "Candidate (evaluated, not in use)"
    ACTIVE = "active", "Active"
    RETIRED = "retired", "Retired"


class ClinicModel(ClinicScopedModel):
    """A clinic's own model: the base model's frozen features with a head adapted to that clinic's reviewed
    images (its dentists' confirmations, rejections and additions; no other clinic's data). Versioned per
    clinic and modality, with its parent, the counts it was trained on and its evaluation against the parent
    on the clinic's held-back reviewed images. At most one is active per clinic and modality; at most one runs
    in shadow mode (scored beside the active model, never shown)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    parent = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="clinic_models")
    modality = models.CharField(max_length=10, choices=ModelModality.choices)
    version = models.PositiveIntegerField()
    status = models.CharField(max_length=10, choices=ClinicModelStatus.choices, default=ClinicModelStatus.CANDIDATE)
    shadow = models.BooleanField(default=False)
    head = models.BinaryField(editable=False)  # encrypted (clinic data key): npz of the adapted head
    head_sha256 = models.CharField(max_length=64)
    labels = models.JSONField(default=list)
    data_counts = models.JSONField(default=dict, blank=True)
    evaluation = models.JSONField(default=dict, blank=True)
    training_seconds = models.FloatField(default=0.0)
    trained_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    activated_at = models.DateTimeField(null=True, blank=True)

    class Meta(ClinicScopedModel.Meta):
        constraints = [
            models.UniqueConstraint(fields=["clinic", "modality", "version"], name="clinicmodel_version_unique"),
            models.UniqueConstraint(
                fields=["clinic", "modality"],
                condition=models.Q(status="active"),
                name="clinicmodel_one_active_per_clinic_modality",
            ),
            models.UniqueConstraint(
                fields=["clinic", "modality"],
                condition=models.Q(shadow=True),
                name="clinicmodel_one_shadow_per_clinic_modality",
            ),
        ]
        ordering = ["modality", "-version"]

    def __str__(self) -> str:
        return self.model_id

    @property
    def model_id(self) -> str:
        return f"{self.parent.model_id}+clinic.{self.version}"


class UnfamiliarFindings(models.TextChoices):
    SHOW = "show", "Show them, marked as from an unfamiliar image"
    HIDE = "hide", "Hide them (the image is still shown, marked unfamiliar)"


class AnalysisSettings(ClinicScopedModel):
    """A clinic's choices about how the AI's output is shown (one row per clinic; defaults without one)."""

    id = models.BigAutoField(primary_key=True)
    unfamiliar_findings = models.CharField(
        max_length=10, choices=UnfamiliarFindings.choices, default=UnfamiliarFindings.SHOW
    )
    # How people read and type tooth numbers in this clinic; stored as FDI whatever this says.
    tooth_notation = models.CharField(max_length=10, choices=teeth.NOTATIONS, default=teeth.FDI)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta(ClinicScopedModel.Meta):
        constraints = [models.UniqueConstraint(fields=["clinic"], name="analysissettings_one_per_clinic")]


class VisitNote(ClinicScopedModel):
    """The dentist's note on a visit's review (one per visit), versioned like a finding: a write made on an older
    ``version`` is refused (412)."""

    id = models.BigAutoField(primary_key=True)
    visit = models.OneToOneField("patients.Visit", on_delete=models.CASCADE, related_name="review_note")
    text = models.TextField(max_length=4000, blank=True)
    version = models.PositiveIntegerField(default=0)  # 0: never written
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"VisitNote {self.visit_id} v{self.version}"

    @property
    def updated_at_or_none(self) -> object:
        return self.updated_at if self.version else None


class UploadIdempotencyKey(ClinicScopedModel):
    """A client-chosen ``Idempotency-Key`` of an image upload (``analysis.uploads.image_upload_once``), so that a
    retried upload whose first answer was lost stores the image once.

    Invariants: a key is unique per clinic (the constraint is what makes two concurrent requests with one key
    store one image: the second insert waits for the first transaction and then fails); it belongs to one
    patient; it points at the image its first request stored (set in the same transaction). Keys older than
    ``IDEMPOTENCY_KEY_TTL`` are ignored and removed. Deleting the patient or the image deletes the key."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    key = models.CharField(max_length=64)
    patient = models.ForeignKey("patients.Patient", on_delete=models.CASCADE, related_name="+")
    image = models.ForeignKey("patients.Image", on_delete=models.CASCADE, null=True, blank=True, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta(ClinicScopedModel.Meta):
        constraints = [models.UniqueConstraint(fields=["clinic", "key"], name="upload_idempotency_key_per_clinic")]
        indexes = [models.Index(fields=["clinic", "created_at"])]

    def __str__(self) -> str:
        return f"UploadIdempotencyKey {self.id}"
