"""What the patients app adds to clinics' pages, registered with ``clinics.views_base.page_context_register``
in ``PatientsConfig.ready()``. Each runs inside the page's clinic scope."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from .models import Patient
from .restricted import break_glass_grants_recent


def home_context(request: HttpRequest) -> dict[str, Any]:
    """``clinics:home``: the number of patients of the clinic."""
    return {"patient_count": Patient.objects.count()}


def audit_context(request: HttpRequest) -> dict[str, Any]:
    """``clinics:audit``: the newest emergency-access grants and how often each was used."""
    return {"grants": break_glass_grants_recent()}
