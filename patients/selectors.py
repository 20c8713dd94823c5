from __future__ import annotations

from django.db.models import Q, QuerySet

from .models import Patient


def patient_list(*, search: str = "") -> QuerySet[Patient]:
    """The current clinic's patients (scoped by the clinic in scope), optionally searched."""
    patients = Patient.objects.order_by("family_name", "given_name", "id")
    search = search.strip()
    if search:
        patients = patients.filter(
            Q(external_id__iexact=search) | Q(family_name__icontains=search) | Q(given_name__icontains=search)
        )
    return patients
