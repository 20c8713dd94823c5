"""Restricted patient records and emergency ("break-glass") access (HIPAA 164.312(a)(2)(ii)).

Invariants:
- Every route that shows or changes one patient's clinical data is listed in ``PATIENT_ROUTES`` with
  how to find its patient; ``restricted_route_guard`` (registered with ``clinics.access`` in
  ``PatientsConfig.ready()``) is asked by the HTML base view and the API permission class after the role
  check, so a restricted record is closed on every such route unless the member's role holds
  ``patient.view_restricted`` or the member holds an active grant.
- A grant needs a reason, lasts ``BREAK_GLASS_MINUTES`` and is never extended; opening it writes
  ``breakglass.open`` and e-mails every active clinic admin (no patient name in the message); each
  request made under it writes ``breakglass.use``. Clinic API keys cannot open restricted records.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import Count, QuerySet
from django.utils import timezone

from clinics import audit
from clinics.access import RouteRefusal
from clinics.models import AuditEvent, Membership, Role
from clinics.services import ServiceError

from .models import BreakGlassGrant, Image, Patient

# URL name -> (model label, field holding the patient id) for the object named by ``pk``.
PATIENT_ROUTES: dict[str, tuple[str, str]] = {
    "patients:detail": ("patients.Patient", "pk"),
    "patients:upload": ("patients.Patient", "pk"),
    "patients:export": ("patients.Patient", "pk"),
    "patients:erase": ("patients.Patient", "pk"),
    "patients:image": ("patients.Image", "patient_id"),
    "analysis:report": ("patients.Visit", "patient_id"),
    "analysis:report-pdf": ("patients.Visit", "patient_id"),
    "analysis:review": ("patients.Visit", "patient_id"),
    "analysis:chart": ("patients.Visit", "patient_id"),
    "api:patient-detail": ("patients.Patient", "pk"),
    "api:patient-export": ("patients.Patient", "pk"),
    "api:patient-image-list": ("patients.Patient", "pk"),
    "api:patient-image-batch": ("patients.Patient", "pk"),
    "api:image-detail": ("patients.Image", "patient_id"),
    "api:image-file": ("patients.Image", "patient_id"),
    "api:image-finding-add": ("patients.Image", "patient_id"),
    "api:analysis-detail": ("analysis.Analysis", "image__patient_id"),
    "api:analysis-retry": ("analysis.Analysis", "image__patient_id"),
    "api:finding-detail": ("analysis.Finding", "image__patient_id"),
    "api:finding-review": ("analysis.Finding", "image__patient_id"),
    "api:visit-report": ("patients.Visit", "patient_id"),
    "api:visit-amendment": ("patients.Visit", "patient_id"),
    "api:visit-report-fhir": ("patients.Visit", "patient_id"),
    "api:visit-note": ("patients.Visit", "patient_id"),
    "api:dicom-send-resend": ("dicom.DicomSend", "visit__patient_id"),
}

# Routes with a ``pk`` that are not one patient's clinical data, and why (a test holds every such route to one of the
# two lists, so a new route is a decision, not an omission).
NOT_PATIENT_ROUTES: dict[str, str] = {
    "patients:restrict": "the restriction itself: dentists and clinic admins only, who may see restricted records",
    "patients:break-glass": "emergency access is opened here, for a restricted record",
    "api:patient-break-glass": "emergency access is opened here, for a restricted record",
    "api:dicom-inbox-assign": "an unmatched DICOM image, no patient's yet; assigning it shows nothing of the target",
    "api:webhook-detail": "a clinic webhook",
    "api:webhook-test": "a clinic webhook",
    "api:webhook-deliveries": "a clinic webhook's deliveries (ids and statuses)",
    "clinics:api-key-revoke": "a clinic API key",
    "clinics:invitation-revoke": "a clinic invitation",
    "clinics:member-update": "a clinic member",
    "clinics:member-mfa-reset": "a clinic member",
}

OPEN, RESTRICTED = "open", "restricted"
RESTRICTED_MESSAGE = (
    "This patient's record is restricted to dentists and clinic admins. In an emergency, open "
    "time-limited access with a reason: POST /api/v1/patients/{id}/break-glass/."
)


def _patient_ref(view_name: str, kwargs: dict[str, Any]) -> tuple[uuid.UUID, bool] | None:
    """The patient a route's object belongs to and whether the record is restricted, in one query."""
    from django.apps import apps

    label, field = PATIENT_ROUTES[view_name]
    model = apps.get_model(label)
    try:
        pk = uuid.UUID(str(kwargs.get("pk")))
    except ValueError:
        return None
    restricted = "restricted" if field == "pk" else field.removesuffix("_id") + "__restricted"
    return model.objects.filter(pk=pk).values_list(field, restricted).first()


def restricted_patient_ids() -> QuerySet[Patient]:
    """The clinic's restricted patients' ids, as a subquery for lists that leave their records out
    (``exclude(patient_id__in=restricted_patient_ids())``). A ``NOT IN`` of the few restricted records (a partial
    index finds them) lets PostgreSQL walk a list's own index in its order and count it without joining every
    row to its patient, which the join that ``exclude(patient__restricted=True)`` writes makes it do.

    Build it in the request, beside the query it filters: the clinic-scoped manager takes the clinic in scope when
    the queryset is made, so one kept at module level or across requests would filter another clinic's ids."""
    return Patient.objects.filter(restricted=True).values("pk")


def restricted_image_ids() -> QuerySet[Image]:
    """The ids of the restricted patients' images, as a subquery (``exclude(image_id__in=...)``): see
    ``restricted_patient_ids``."""
    return Image.objects.filter(patient_id__in=restricted_patient_ids()).values("pk")


def restricted_visible(access: Any) -> bool:
    """Whether lists may include restricted patients' clinical data for this principal (a grant opens
    one record's own pages, never the lists)."""
    return access.api_key is None and access.can("patient.view_restricted")


def active_grant(user: Any, patient_id: uuid.UUID) -> BreakGlassGrant | None:
    return (
        BreakGlassGrant.objects.filter(user=user, patient_id=patient_id, expires_at__gt=timezone.now())
        .order_by("-expires_at")
        .first()
    )


def patient_route_decision(access: Any, view_name: str, method: str, kwargs: dict[str, Any]) -> tuple[str, Any]:
    """``(OPEN, None)`` or ``(RESTRICTED, patient_id)`` for a request that passed the role check."""
    if view_name not in PATIENT_ROUTES:
        return OPEN, None
    if access.api_key is None and access.can("patient.view_restricted"):
        return OPEN, None  # open to this principal whether restricted or not: no query
    found = _patient_ref(view_name, kwargs)
    if found is None:  # missing or another clinic's: the view answers 404
        return OPEN, None
    patient_id, restricted = found
    if not restricted:
        return OPEN, None
    grant = active_grant(access.user, patient_id) if access.api_key is None else None
    if grant is None:
        audit.record(
            action="patient.restricted.denied",
            clinic_id=access.clinic.id,
            outcome="denied",
            object_type="patient",
            object_id=patient_id,
            details={"route": view_name, "method": method},
        )
        return RESTRICTED, patient_id
    audit.record(
        action="breakglass.use",
        clinic_id=access.clinic.id,
        object_type="patient",
        object_id=patient_id,
        details={"grant": str(grant.pk), "route": view_name, "method": method},
    )
    return OPEN, None


def restricted_route_guard(access: Any, view_name: str, method: str, kwargs: Mapping[str, Any]) -> RouteRefusal | None:
    """The route guard of ``clinics.access``: refuses a restricted record's routes (HTML page
    ``patients/restricted.html``, API code ``restricted_patient``)."""
    decision, patient_id = patient_route_decision(access, view_name, method, kwargs)
    if decision != RESTRICTED:
        return None
    return RouteRefusal(
        code="restricted_patient",
        message=RESTRICTED_MESSAGE,
        template="patients/restricted.html",
        context={"patient_id": patient_id},
    )


def break_glass_grants_recent(limit: int = 50) -> list[BreakGlassGrant]:
    """The clinic's newest grants, each with ``uses`` (the number of requests made under it) and
    ``reason_altered`` (its reason is not the one whose digest the sealed ``breakglass.open`` event holds)."""
    grants = list(BreakGlassGrant.objects.select_related("user").order_by("-created_at")[:limit])
    uses = dict(
        AuditEvent.objects.filter(action="breakglass.use", details__grant__in=[str(g.pk) for g in grants])
        .values_list("details__grant")
        .annotate(n=Count("id"))
    )
    sealed = dict(
        AuditEvent.objects.filter(action="breakglass.open", details__grant__in=[str(g.pk) for g in grants]).values_list(
            "details__grant", "details__reason_sha256"
        )
    )
    for grant in grants:
        grant.uses = uses.get(str(grant.pk), 0)
        digest = sealed.get(str(grant.pk))  # None for a grant opened before digests were recorded
        grant.reason_altered = digest is not None and digest != reason_digest(grant.reason)
    return grants


def reason_digest(reason: str) -> str:
    return hashlib.sha256(reason.encode()).hexdigest()


@transaction.atomic
def break_glass_open(*, access: Any, patient: Patient, reason: str) -> BreakGlassGrant:
    """Open emergency access to a restricted patient for ``BREAK_GLASS_MINUTES``."""
    reason = (reason or "").strip()
    if len(reason) < 10:
        raise ServiceError("reason_required", "Say why emergency access is needed (at least 10 characters).")
    if access.user is None:
        raise ServiceError("not_allowed", "Only a person can open emergency access.", status=403)
    if not patient.restricted:
        raise ServiceError("not_restricted", "This record is not restricted: no emergency access is needed.", 409)
    grant = BreakGlassGrant.objects.create(
        user=access.user,
        patient=patient,
        reason=reason[:2000],
        expires_at=timezone.now() + timedelta(minutes=settings.BREAK_GLASS_MINUTES),
    )
    admins = list(
        Membership.objects.filter(role=Role.CLINIC_ADMIN, is_active=True, user__is_active=True).values_list(
            "user__email", flat=True
        )
    )
    audit.record(
        action="breakglass.open",
        clinic_id=access.clinic.id,
        object_type="patient",
        object_id=patient.pk,
        details={
            "grant": str(grant.pk),
            "expires_at": grant.expires_at.isoformat(),
            "notified": len(admins),
            # the reason stays in the grant's row (it may name the patient's condition); its digest goes into the
            # sealed trail, so a reason edited afterwards shows (``break_glass_grants_recent``)
            "reason_sha256": reason_digest(grant.reason),
        },
    )
    if admins:
        transaction.on_commit(lambda: _notify_admins(grant, access.user.email, access.clinic.name, admins))
    return grant


def _notify_admins(grant: BreakGlassGrant, who: str, clinic_name: str, admins: list[str]) -> None:
    # Identifiers only: no patient name or reason text travels by e-mail.
    send_mail(
        subject=f"[DentalScan] Emergency access opened in {clinic_name}",
        message=(
            f"{who} opened emergency access to restricted patient record {grant.patient_id}\n"
            f"until {grant.expires_at:%Y-%m-%d %H:%M} UTC (grant {grant.pk}).\n"
            "The reason and every use are on the clinic's audit page."
        ),
        from_email=None,
        recipient_list=admins,
        fail_silently=True,
    )


@transaction.atomic
def patient_restrict(*, access: Any, patient: Patient, restricted: bool) -> Patient:
    patient.restricted = restricted
    patient.save(update_fields=["restricted"])
    audit.record(
        action="patient.restrict" if restricted else "patient.unrestrict",
        clinic_id=access.clinic.id,
        object_type="patient",
        object_id=patient.pk,
    )
    return patient
