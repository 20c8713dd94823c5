"""What the apps above this one hold about a patient, for the patient's export (GDPR Art. 15/20).

``patients`` builds the export (``services.patient_export``: identity, visits, images) but imports nothing of
the apps that hold clinical data about its patients (``analysis``: analyses, findings, reviews, signed
reports). Such an app registers a provider here from its ``AppConfig.ready``; the export asks every registered
provider and merges what they give into ``patient.json``, per image and per visit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # importable from an AppConfig module, before the models are loaded
    from .models import Patient

# ``{"images": {image id: {section: [...]}}, "visits": {visit id: {section: [...]}}}``
ClinicalRecord = dict[str, dict[str, dict[str, Any]]]
ClinicalRecordProvider = Callable[["Patient"], ClinicalRecord]

_providers: list[ClinicalRecordProvider] = []


def clinical_record_register(provider: ClinicalRecordProvider) -> None:
    """Add ``provider`` to every export from now on (idempotent: ``ready`` may run more than once in tests)."""
    if provider not in _providers:
        _providers.append(provider)


def clinical_record(patient: Patient) -> ClinicalRecord:
    """What the registered providers hold about ``patient``, merged per image id and per visit id."""
    merged: ClinicalRecord = {"images": {}, "visits": {}}
    for provider in _providers:
        for part, by_id in provider(patient).items():
            for object_id, sections in by_id.items():
                merged.setdefault(part, {}).setdefault(object_id, {}).update(sections)
    return merged
