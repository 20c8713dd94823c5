"""Reads for patients, visits and images. All queries run in the clinic scope of the caller."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from django.db.models import Q, QuerySet

from core import crypto

from .keys import clinic_key, patient_key
from .models import Image, Patient, Visit


@dataclass(frozen=True)
class PatientIdentity:
    external_id: str
    given_name: str
    family_name: str
    date_of_birth: dt.date


def identity_aad(patient_id: object) -> bytes:
    return f"patient:{patient_id}".encode()


def decode_identity(data: bytes) -> PatientIdentity:
    raw = json.loads(data)
    return PatientIdentity(
        external_id=raw["external_id"],
        given_name=raw["given_name"],
        family_name=raw["family_name"],
        date_of_birth=dt.date.fromisoformat(raw["date_of_birth"]),
    )


def patient_identity(patient: Patient) -> PatientIdentity:
    """Decrypt (once per instance) the identifying fields of a patient."""
    cached = getattr(patient, "_identity", None)
    if cached is None:
        plaintext = crypto.decrypt(patient_key(patient), bytes(patient.identity), identity_aad(patient.pk))
        cached = decode_identity(plaintext)
        patient._identity = cached
    return cached


def patient_list(*, search: str = "", restricted_names: bool = True) -> QuerySet[Patient]:
    """The current clinic's patients, newest first; ``search`` matches a practice id or a given or
    family name exactly (case-insensitive): names are stored encrypted, searched by blind index.

    ``restricted_names=False`` (a principal that may not open restricted records) matches restricted patients
    by practice id only, so a search cannot confirm a restricted patient's name."""
    patients = Patient.objects.with_data_keys().order_by("-created_at", "id")
    search = search.strip()
    if search:
        key = clinic_key()
        whole = crypto.blind_index(key, search)
        condition = Q(external_id_index=whole) | Q(family_name_index=whole) | Q(given_name_index=whole)
        tokens = search.split()
        if len(tokens) > 1:
            all_tokens = Q()
            for token in tokens:
                index = crypto.blind_index(key, token)
                all_tokens &= Q(family_name_index=index) | Q(given_name_index=index)
            condition |= all_tokens
        if not restricted_names:
            condition = Q(external_id_index=whole) | (condition & Q(restricted=False))
        patients = patients.filter(condition)
    return patients


def patient_get(pk: object, *, with_key: bool = True) -> Patient:
    """One patient, with its data key loaded unless ``with_key=False`` (nothing of it will be decrypted)."""
    return (Patient.objects.with_data_keys() if with_key else Patient.objects.all()).get(pk=pk)


def visit_list(patient: Patient) -> QuerySet[Visit]:
    return Visit.objects.filter(patient=patient).prefetch_related("images").order_by("-visit_date", "-created_at")


def image_list(patient: Patient) -> QuerySet[Image]:
    """A patient's images, oldest first, each with its analyses prefetched newest first in
    ``newest_analyses`` (the image list shows each image's newest analysis: one query per page, not per row).
    """
    from django.db.models import Prefetch

    analyses = Image.analyses.rel.related_model.objects.order_by("-created_at")
    return (
        Image.objects.filter(patient=patient)
        .order_by("uploaded_at")
        .prefetch_related(Prefetch("analyses", queryset=analyses, to_attr="newest_analyses"))
    )


def image_get(pk: object, *, with_key: bool = True) -> Image:
    """One image with its patient and visit; ``with_key=False`` when nothing of it will be decrypted (metadata)."""
    images = Image.objects.select_related("patient", "visit")
    return (images.prefetch_related("patient__data_keys") if with_key else images).get(pk=pk)


def image_display_name(image: Image) -> str:
    key = patient_key(image.patient)
    return crypto.decrypt(key, bytes(image.display_name), f"image:{image.pk}:name".encode()).decode()
