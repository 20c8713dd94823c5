from __future__ import annotations

import uuid
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser, BaseUserManager
from django.contrib.auth.hashers import check_password
from django.contrib.auth.models import PermissionsMixin
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone
from django.utils.crypto import salted_hmac

from .signals import password_replaced
from .tenancy import ClinicScopedManager, ClinicScopedModel, UnscopedManager


class Role(models.TextChoices):
    STAFF = "staff", "Staff"
    DENTIST = "dentist", "Dentist"
    CLINIC_ADMIN = "clinic_admin", "Clinic admin"


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    def create_user(self, email: str, password: str | None = None, **extra: object) -> User:
        if not email:
            raise ValueError("A user needs an email address.")
        user = self.model(email=normalize_email(email), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_superuser(self, email: str, password: str | None = None, **extra: object) -> User:
        extra.setdefault("is_staff", True)
        extra.setdefault("is_superuser", True)
        return self.create_user(email, password, **extra)

    def get_by_natural_key(self, username: str | None) -> User:
        return self.get(email__iexact=normalize_email(username or ""))


def normalize_email(email: str) -> str:
    """Emails are unique case-insensitively; we store them lower-cased and trimmed."""
    return email.strip().lower()


class User(AbstractBaseUser, PermissionsMixin):
    """A person. Users are deactivated, never deleted, while audit events point at them."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    email = models.EmailField(max_length=254, unique=True)
    full_name = models.CharField(max_length=200, blank=True)
    is_active = models.BooleanField(default=True)
    is_staff = models.BooleanField(default=False)
    date_joined = models.DateTimeField(default=timezone.now)
    # Changed to end every session of the user at once (log-out, deactivation, password change):
    # it is part of the session's auth hash, so Django refuses sessions made before the change.
    security_stamp = models.UUIDField(default=uuid.uuid4, editable=False)

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: list[str] = []

    class Meta:
        constraints = [models.UniqueConstraint(Lower("email"), name="user_email_ci_unique")]

    def __str__(self) -> str:
        return self.email

    def clean(self) -> None:
        super().clean()
        self.email = normalize_email(self.email)

    def save(self, *args: Any, **kwargs: Any) -> None:
        # A new password (however it was set: admin, changepassword, a reset) ends every session and API
        # token (``clinics.sessions`` receives ``password_replaced``); the same password hashed again (a hasher
        # upgrade at login) is no change.
        replaced = self._password is not None and not self._state.adding and self._password_replaced(self._password)
        super().save(*args, **kwargs)
        if replaced:
            password_replaced.send(sender=type(self), user=self)

    def _password_replaced(self, raw: str) -> bool:
        stored = User.objects.filter(pk=self.pk).values_list("password", flat=True).first()
        return stored is not None and not check_password(raw, stored)

    def get_session_auth_hash(self) -> str:
        return salted_hmac(
            "clinics.User.get_session_auth_hash", f"{self.password}:{self.security_stamp}", algorithm="sha256"
        ).hexdigest()


class TotpDevice(models.Model):
    """A user's TOTP authenticator. The shared secret is wrapped by the master key provider (never
    stored in clear); ``last_step`` is the last accepted 30-second step, so a code cannot be replayed."""

    user = models.OneToOneField(User, on_delete=models.CASCADE, related_name="totp_device")
    master_key_id = models.CharField(max_length=64)
    wrapped_secret = models.BinaryField()
    confirmed_at = models.DateTimeField(null=True, blank=True)
    last_step = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"TOTP of {self.user_id}"


class RecoveryCode(models.Model):
    """A single-use recovery code (only its hash is stored), shown once at enrolment."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="recovery_codes")
    code_hash = models.CharField(max_length=64)
    used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"recovery code of {self.user_id}"


class Clinic(models.Model):
    """The tenant: every piece of patient data belongs to exactly one clinic."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=80, unique=True)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.name


class Membership(ClinicScopedModel):
    """A person's role in one clinic. Read across clinics only through ``unscoped`` when resolving
    which clinics a logged-in person belongs to."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(User, on_delete=models.PROTECT, related_name="memberships")
    role = models.CharField(max_length=20, choices=Role.choices)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)
    # The name the person chose to show to this clinic (at acceptance); the clinic never sees the account's own.
    display_name = models.CharField(max_length=200, blank=True)
    # True when the account was created for this clinic (operators, or accepting its invitation with a new
    # password): only then does the clinic see whether the account has a second factor.
    created_account = models.BooleanField(default=False)
    # Part of every session working in this clinic (``clinics.access.access_for_session``); a new value ends the
    # person's sessions in this clinic only, never in their other clinics.
    session_stamp = models.UUIDField(default=uuid.uuid4, editable=False)

    class Meta(ClinicScopedModel.Meta):
        constraints = [models.UniqueConstraint(fields=["user", "clinic"], name="membership_user_clinic_unique")]

    def __str__(self) -> str:
        return f"{self.user} @ {self.clinic} ({self.role})"


class Invitation(ClinicScopedModel):
    """A clinic admin's invitation of an e-mail address to a role. Creates nothing else: the person joins only
    by accepting it from the mailed link (``clinics.invitations``). Until then the clinic sees the address it
    typed and "pending", whether or not an account exists for it."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    email = models.EmailField(max_length=254)
    role = models.CharField(max_length=20, choices=Role.choices)
    invited_by = models.ForeignKey(User, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(User, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta(ClinicScopedModel.Meta):
        indexes = [models.Index(fields=["clinic", "email"])]

    @property
    def status(self) -> str:
        if self.accepted_at is not None:
            return "accepted"
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at <= timezone.now():
            return "expired"
        return "pending"

    def __str__(self) -> str:
        return f"invitation {self.pk} ({self.role})"


class ApiKey(ClinicScopedModel):
    """A clinic's key for a third-party system.

    The secret is shown once at creation; only its SHA-256 is stored (keys carry 256 bits of
    randomness, so a fast hash is appropriate). ``scopes`` lists the permissions of
    ``clinics.permissions`` the key may use, always within ``API_KEY_GRANTABLE``.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True)
    secret_hash = models.CharField(max_length=64)
    scopes = models.JSONField(default=list)
    created_by = models.ForeignKey(User, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)  # None: until revoked

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None and not self.is_expired

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix})"


class UserToken(models.Model):
    """A short-lived bearer token for one user acting in one clinic; only its hash is stored."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="api_tokens")
    clinic = models.ForeignKey(Clinic, on_delete=models.PROTECT, related_name="+")
    prefix = models.CharField(max_length=16, unique=True)
    secret_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    # Issued after a second factor. A token issued without one does not act in a role that needs MFA,
    # even when the person is given such a role while the token lives.
    mfa_verified = models.BooleanField(default=False)

    def __str__(self) -> str:
        return f"token {self.prefix} of {self.user_id}"


class AuditOutcome(models.TextChoices):
    SUCCESS = "success", "Success"
    DENIED = "denied", "Denied"
    FAILURE = "failure", "Failure"


class AuditEvent(models.Model):
    """One append-only, hash-chained audit record.

    Invariants: rows are inserted unsealed (``seq``, ``prev_hash`` and ``hash`` empty) in the transaction of the
    action they record; the sealer (``clinics.audit.seal_chain``) then fills those three fields once, in the
    order their transactions first wrote (PostgreSQL; insertion order on SQLite), and nothing else ever changes
    (a PostgreSQL trigger refuses every other UPDATE, and DELETE; the application's role may update only those
    three columns). Within a chain (one per clinic, plus ``global``
    for events with no clinic) the sealed ``seq`` run 1, 2, 3... with no gap, and ``hash`` = SHA-256 over the
    canonical form of the row and the previous event's ``hash``. ``details`` never carries patient names.
    See ``clinics.audit``.
    """

    id = models.BigAutoField(primary_key=True)
    chain = models.CharField(max_length=40, editable=False)
    seq = models.PositiveBigIntegerField(null=True, editable=False)  # None until sealed
    clinic = models.ForeignKey(Clinic, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    actor_user = models.ForeignKey(User, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    actor_api_key = models.ForeignKey(ApiKey, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    actor_label = models.CharField(max_length=254, blank=True)
    action = models.CharField(max_length=64)
    object_type = models.CharField(max_length=64, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    outcome = models.CharField(max_length=10, choices=AuditOutcome.choices, default=AuditOutcome.SUCCESS)
    ip = models.GenericIPAddressField(null=True, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField()
    details = models.JSONField(default=dict, blank=True)
    # None until sealed (NULL, not "": many unsealed rows, and ``hash`` is unique)
    prev_hash = models.CharField(max_length=64, null=True, editable=False)  # noqa: DJ001
    hash = models.CharField(max_length=64, unique=True, null=True, editable=False)  # noqa: DJ001
    # PostgreSQL: the inserting transaction's id, set by the insert trigger (the sealer's commit-order rule).
    xact_id = models.BigIntegerField(null=True, editable=False)

    # Reads by views go through the clinic scope; ``clinics.audit`` writes and verifies unscoped.
    objects = ClinicScopedManager()
    unscoped = UnscopedManager()  # noqa: DJ012 - a manager, not a field

    class Meta:
        ordering = ["chain", models.F("seq").asc(nulls_last=True), "id"]  # unsealed events last
        base_manager_name = "unscoped"
        default_manager_name = "objects"
        constraints = [models.UniqueConstraint(fields=["chain", "seq"], name="audit_chain_seq_unique")]
        indexes = [
            models.Index(fields=["clinic", "created_at"]),
            models.Index(fields=["clinic", "action"]),
            models.Index(fields=["chain", "id"], condition=models.Q(seq__isnull=True), name="audit_unsealed"),
        ]

    def __str__(self) -> str:
        return f"{self.chain}#{self.seq if self.sealed else 'unsealed'} {self.action} {self.outcome}"

    @property
    def sealed(self) -> bool:
        return self.seq is not None


class AuditChainHead(models.Model):
    """The last sealed event of each chain. Written only by the sealer (one per chain at a time), with the
    seals of the events, so verification can detect a removed tail."""

    chain = models.CharField(max_length=40, primary_key=True)
    last_seq = models.PositiveBigIntegerField(default=0)
    last_hash = models.CharField(max_length=64)

    def __str__(self) -> str:
        return f"{self.chain}@{self.last_seq}"
