from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from clinics.tenancy import ClinicScopedManager, ClinicScopedModel, ClinicScopedQuerySet


class Sex(models.TextChoices):
    FEMALE = "female", "Female"
    MALE = "male", "Male"
    OTHER = "other", "Other"
    UNKNOWN = "unknown", "Unknown"


class Modality(models.TextChoices):
    PHOTO = "photo", "Intraoral photo"
    XRAY = "xray", "X-ray"


class PatientQuerySet(ClinicScopedQuerySet):
    """``with_data_keys()``: each fetched patient carries its data key (``patient._data_key``, None when it no longer
    exists), loaded with one query for all of them. What ``prefetch_related("data_keys")`` did, without the
    per-row queryset Django builds for a prefetch (a third of a patient page's CPU)."""

    _with_data_keys = False

    def with_data_keys(self) -> PatientQuerySet:
        clone = self._chain()
        clone._with_data_keys = True
        return clone

    def _clone(self) -> PatientQuerySet:
        clone = super()._clone()
        clone._with_data_keys = self._with_data_keys
        return clone

    def _fetch_all(self) -> None:
        fetching = self._result_cache is None
        super()._fetch_all()
        if fetching and self._with_data_keys and self._iterable_class is models.query.ModelIterable:
            data_keys_attach([p for p in self._result_cache if isinstance(p, Patient)])


def data_keys_attach(patients: list[Patient]) -> None:
    """Load the data keys of these patients with one query (``patient._data_key``: see ``patients.keys``)."""
    found = {k.patient_id: k for k in DataKey.objects.filter(patient_id__in=[p.pk for p in patients])}
    for patient in patients:
        patient._data_key = found.get(patient.pk)


class PatientManager(ClinicScopedManager.from_queryset(PatientQuerySet)):  # type: ignore[misc]
    pass


class Patient(ClinicScopedModel):
    """A patient of one clinic.

    The identifying fields (practice id, names, date of birth) exist only inside ``identity``,
    encrypted with the patient's own data key (see ``patients.keys``); exact-match search and the
    per-clinic uniqueness of the practice id use keyed blind indexes. Read them through
    ``patients.selectors.patient_identity``.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    identity = models.BinaryField(editable=False, default=bytes)
    external_id_index = models.CharField(max_length=64, editable=False, default="")
    family_name_index = models.CharField(max_length=64, editable=False, default="")
    given_name_index = models.CharField(max_length=64, editable=False, default="")
    sex = models.CharField(max_length=10, choices=Sex.choices, default=Sex.UNKNOWN)
    legal_hold = models.BooleanField(default=False)
    # A restricted record (a colleague, a public figure...): its clinical data is open to dentists and
    # clinic admins only; other members need emergency access (``patients.restricted``).
    restricted = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now)

    objects = PatientManager()

    class Meta(ClinicScopedModel.Meta):
        constraints = [
            models.UniqueConstraint(fields=["clinic", "external_id_index"], name="patient_clinic_external_id_unique")
        ]
        indexes = [
            models.Index(fields=["clinic", "family_name_index"]),
            models.Index(fields=["clinic", "given_name_index"]),
            models.Index(fields=["clinic", "-created_at"]),
            # finds the few restricted records, which lists leave out by NOT IN their ids (restricted_patient_ids)
            models.Index(fields=["clinic"], condition=models.Q(restricted=True), name="patient_restricted_idx"),
        ]

    def __str__(self) -> str:
        # Never the name: objects are printed in logs and error reports.
        return f"Patient {self.id}"


class DataKey(ClinicScopedModel):
    """A data key wrapped by a master key: the clinic's (``patient`` empty) or one patient's.

    Deleting a patient deletes their key, which crypto-shreds every copy of their ciphertext."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, null=True, blank=True, related_name="data_keys")
    wrapped = models.BinaryField()
    master_key_id = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now)
    rotated_at = models.DateTimeField(null=True, blank=True)

    class Meta(ClinicScopedModel.Meta):
        constraints = [
            models.UniqueConstraint(fields=["patient"], name="datakey_one_per_patient"),
            models.UniqueConstraint(
                fields=["clinic"], condition=models.Q(patient__isnull=True), name="datakey_one_per_clinic"
            ),
        ]

    def __str__(self) -> str:
        return f"DataKey {self.id} ({'patient' if self.patient_id else 'clinic'})"


class Visit(ClinicScopedModel):
    """The images of one appointment."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="visits")
    visit_date = models.DateField(default=timezone.localdate)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    # Read-only: the visit's report is signed and no amendment is open. Written by the app that signs reports
    # (``analysis.reports``: signing sets it, opening an amendment clears it), read here: a locked visit takes
    # no more scans (``services.visit_for_upload``), and this app imports nothing of the layer above it.
    locked = models.BooleanField(default=False, editable=False)

    class Meta(ClinicScopedModel.Meta):
        ordering = ["-visit_date", "-created_at"]
        # the visits list: newest first, filtered by date or a date range
        indexes = [models.Index(fields=["clinic", "-visit_date", "-created_at"])]

    def __str__(self) -> str:
        return f"Visit {self.id} on {self.visit_date}"


class Image(ClinicScopedModel):
    """A sanitised scan. Its pixels (a PNG rebuilt from pixels only), preview, thumbnail and model-input
    copy are stored as separate encrypted blobs; ``sha256`` is the digest of the sanitised PNG and is
    checked on every read. The upload stores the PNG and the model-input copy: a worker adds the preview and
    thumbnail after the upload was answered (``patients.services.image_derive``; a read that comes first makes
    them)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="images")
    visit = models.ForeignKey(Visit, on_delete=models.CASCADE, related_name="images")
    modality = models.CharField(max_length=10, choices=Modality.choices)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    mode = models.CharField(max_length=8)
    bit_depth = models.PositiveSmallIntegerField()
    original_format = models.CharField(max_length=10)
    window_low = models.IntegerField(null=True, blank=True)
    window_high = models.IntegerField(null=True, blank=True)
    sha256 = models.CharField(max_length=64)
    size_bytes = models.PositiveIntegerField()
    # bytes the image's encrypted blobs (original, preview, thumbnail, model-input copy) occupy in storage:
    # what the clinic's storage quota counts
    stored_bytes = models.PositiveBigIntegerField(default=0, editable=False)
    display_name = models.BinaryField(editable=False)  # the uploaded file's (sanitised) name, encrypted
    original_key = models.CharField(max_length=64, editable=False)
    preview_key = models.CharField(max_length=64, blank=True, default="", editable=False)  # "": not made yet
    thumbnail_key = models.CharField(max_length=64, blank=True, default="", editable=False)
    # The image already reduced to the input of the model that was active at upload (``model_input_spec``
    # says which reduction), so the worker need not decode the full-size original; "" when none was made.
    model_input_key = models.CharField(max_length=64, blank=True, default="", editable=False)
    model_input_spec = models.CharField(max_length=80, blank=True, default="", editable=False)
    uploaded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, related_name="+")
    uploaded_by_api_key = models.ForeignKey(
        "clinics.ApiKey", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    uploaded_at = models.DateTimeField(default=timezone.now)

    class Meta(ClinicScopedModel.Meta):
        ordering = ["uploaded_at"]
        indexes = [models.Index(fields=["clinic", "patient", "uploaded_at"])]

    def __str__(self) -> str:
        return f"Image {self.id} ({self.modality})"

    # Every column that names a stored blob, by variant (``patients.orphans`` reads them all: a blob named by a
    # column missing here would look unnamed).
    BLOB_FIELDS = {
        "original": "original_key",
        "preview": "preview_key",
        "thumbnail": "thumbnail_key",
        "model_input": "model_input_key",
    }

    @property
    def blob_keys(self) -> dict[str, str]:
        """The stored blobs by variant (only those made so far)."""
        keys = {variant: getattr(self, field) for variant, field in self.BLOB_FIELDS.items()}
        return {variant: key for variant, key in keys.items() if key}


class BreakGlassGrant(ClinicScopedModel):
    """Emergency access of one member to one restricted patient: a mandatory reason, a fixed end.

    Opening it notifies the clinic admins; every request made under it is audited
    (``breakglass.use``); it expires by itself at ``expires_at``. Never extended: a new one is opened.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey("clinics.User", on_delete=models.PROTECT, related_name="+")
    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="break_glass_grants")
    reason = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()

    class Meta(ClinicScopedModel.Meta):
        indexes = [models.Index(fields=["clinic", "user", "patient", "expires_at"])]

    def __str__(self) -> str:
        return f"break-glass {self.pk} until {self.expires_at:%Y-%m-%d %H:%M}"

    @property
    def is_active(self) -> bool:
        return self.expires_at > timezone.now()
