"""Reads for clinics, memberships and the audit trail."""

from __future__ import annotations

import uuid
from datetime import datetime

from django.db.models import F, Q, QuerySet

from .models import AuditEvent, Membership, User


def memberships_of(user: User) -> QuerySet[Membership]:
    # Deliberately unscoped: this is how a person's own clinics are found before any scope exists.
    return (
        Membership.unscoped.filter(user=user, is_active=True, clinic__is_active=True)
        .select_related("clinic")
        .order_by("clinic__name")
    )


def membership_for(user: User, clinic_id: uuid.UUID | str | None) -> Membership | None:
    """The user's active membership in ``clinic_id``, or their first one when none is chosen.

    The clinic id may come from the session or a token, but it only ever selects among the user's
    own memberships."""
    memberships = memberships_of(user)
    if clinic_id:
        try:
            return memberships.filter(clinic_id=uuid.UUID(str(clinic_id))).first()
        except ValueError:
            return None
    return memberships.first()


def audit_events(
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    action: str | None = None,
    actor: str | None = None,
) -> QuerySet[AuditEvent]:
    """The current clinic's audit events, newest first (the unsealed ones, which are the newest, before the
    sealed), filtered. Scoped by the clinic in scope."""
    events = AuditEvent.objects.select_related("actor_user", "actor_api_key").order_by(
        F("seq").desc(nulls_first=True), "-id"
    )
    if since is not None:
        events = events.filter(created_at__gte=since)
    if until is not None:
        events = events.filter(created_at__lt=until)
    if action:
        events = events.filter(Q(action=action) | Q(action__startswith=f"{action}."))
    if actor:
        condition = Q(actor_label__iexact=actor)
        try:
            actor_id = uuid.UUID(actor)
            condition |= Q(actor_user_id=actor_id) | Q(actor_api_key_id=actor_id)
        except ValueError:
            pass
        events = events.filter(condition)
    return events
