"""Data keys in reads: one query for a page of patients' keys, each key unwrapped once per request, nothing kept
outside a request or after the key is destroyed."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from clinics import context
from clinics.tenancy import clinic_scope
from core import crypto
from core.key_providers import key_provider
from patients.models import DataKey, Patient
from patients.selectors import patient_identity, patient_list
from patients.services import patient_erase

from ..conftest import World


@pytest.fixture
def unwraps(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ids of the data keys unwrapped with the master key."""
    provider_class, calls = type(key_provider()), []
    real = provider_class.unwrap

    def counting(self: object, key_id: str, wrapped: bytes, aad: bytes) -> bytes:
        calls.append(aad.decode().split(":")[1])
        return real(self, key_id, wrapped, aad)

    monkeypatch.setattr(provider_class, "unwrap", counting)
    return calls


@pytest.fixture
def in_request(alice: World) -> object:
    """What RequestContextMiddleware does around a request (after alice's clinic was built)."""
    context.request_cache_var.set({})
    yield
    context.reset()


def test_a_page_of_patients_loads_their_keys_with_one_query(alice: World, bob: World) -> None:
    with clinic_scope(alice.clinic.id):
        with CaptureQueriesContext(connection) as ctx:
            patients = list(patient_list()[:10])
            names = [patient_identity(p).family_name for p in patients]
        assert names == [alice.patient_name]
        assert len(ctx.captured_queries) == 2  # the patients, their keys
        DataKey.objects.filter(patient=alice.patient).delete()
        with pytest.raises(crypto.IntegrityFailure, match="no longer exists"):
            patient_identity(list(patient_list())[0])


@pytest.mark.usefixtures("in_request")
def test_inside_a_request_each_key_is_unwrapped_once(alice: World, unwraps: list[str]) -> None:
    with clinic_scope(alice.clinic.id):
        for _ in range(3):
            patient_identity(Patient.objects.with_data_keys().get(pk=alice.patient.pk))
    assert len(unwraps) == 1


def test_outside_a_request_nothing_is_kept(alice: World, unwraps: list[str]) -> None:
    assert context.request_cache() is None
    with clinic_scope(alice.clinic.id):
        for _ in range(3):
            patient_identity(Patient.objects.with_data_keys().get(pk=alice.patient.pk))
    assert len(unwraps) == 3


@pytest.mark.usefixtures("in_request")
def test_an_erased_patients_key_does_not_stay_in_the_request(alice: World) -> None:
    with clinic_scope(alice.clinic.id):
        patient_identity(Patient.objects.with_data_keys().get(pk=alice.patient.pk))
        assert any(slot[0] == "datakey" for slot in context.request_cache())
        patient_erase(patient=Patient.objects.get(pk=alice.patient.pk))
    assert not any(isinstance(slot, tuple) and slot[0] == "datakey" for slot in context.request_cache())


def test_the_middleware_gives_each_request_a_fresh_cache(alice: World, unwraps: list[str]) -> None:
    from ..conftest import key_client

    client = key_client(alice)
    for _ in range(2):
        assert client.get(f"/api/v1/patients/{alice.patient.pk}/").status_code == 200
    key_id = str(DataKey.unscoped.get(patient=alice.patient).pk)
    assert unwraps.count(key_id) == 2
    assert context.request_cache() is None
