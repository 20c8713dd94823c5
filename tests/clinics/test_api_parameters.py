"""A GET naming a query parameter its operation does not document answers 400 ``unknown_parameter``
(``clinics.api.parameters``); the documented parameters still work."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from django.test import Client
from django.urls import Resolver404, resolve, reverse

from clinics.api.parameters import documented_query_parameters

from ..conftest import World, key_client, token_client

# Every GET list of the API (lists, the audit export and the agreement table), with the role that may read it.
LISTS: dict[str, tuple[str, bool]] = {
    "api:patient-list": ("staff", False),
    "api:patient-image-list": ("staff", True),
    "api:analysis-list": ("staff", False),
    "api:visit-list": ("staff", False),
    "api:audit-event-list": ("clinic_admin", False),
    "api:audit-event-export": ("clinic_admin", False),
    "api:monitoring-agreement": ("clinic_admin", False),
}


def _url(world: World, name: str, needs_patient: bool) -> str:
    return reverse(name, kwargs={"pk": world.patient.pk}) if needs_patient else reverse(name)


@pytest.mark.parametrize("name", sorted(LISTS))
def test_unknown_query_parameter_is_a_400_naming_it(alice: World, name: str) -> None:
    role, needs_patient = LISTS[name]
    response = token_client(alice, role).get(_url(alice, name, needs_patient), {"foo": "1"})
    assert response.status_code == 400, response.content[:300]
    error = response.json()["error"]
    assert error["code"] == "unknown_parameter" and "foo" in error["message"]
    assert error["details"]["unknown"] == ["foo"]
    assert set(error["details"]["allowed"]) == documented_query_parameters(name, "GET")


def test_every_unknown_parameter_is_named_and_known_ones_are_listed(alice: World) -> None:
    response = key_client(alice).get(reverse("api:analysis-list"), {"stat": "done", "visits": "x", "page_size": 5})
    error = response.json()["error"]
    assert response.status_code == 400 and error["details"]["unknown"] == ["stat", "visits"]
    assert "stat, visits" in error["message"]
    assert {"status", "visit", "page", "page_size", "cursor"} == set(error["details"]["allowed"])


def test_known_parameters_still_work(alice: World) -> None:
    client = token_client(alice, "clinic_admin")
    assert client.get(reverse("api:patient-list"), {"page": 1, "page_size": 5}).status_code == 200
    response = client.get(reverse("api:analysis-list"), {"status": "done", "visit": str(alice.image.visit_id)})
    assert response.status_code == 200 and [a["id"] for a in response.json()["results"]] == [str(alice.analysis.pk)]
    assert client.get(reverse("api:audit-event-list"), {"action": "patient", "page_size": 10}).status_code == 200
    export = client.get(reverse("api:audit-event-export"), {"format": "csv", "action": "patient"})
    assert export.status_code == 200 and export["Content-Type"].startswith("text/csv")
    visits = client.get(reverse("api:visit-list"), {"signed": "false", "patient": str(alice.patient.pk)})
    assert visits.status_code == 200 and visits.json()["count"] == 1
    # a known parameter with a bad value is still a validation error, not an unknown one
    bad = client.get(reverse("api:analysis-list"), {"status": "sideways"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "validation_error"


def test_detail_operations_with_parameters_refuse_unknown_ones_too(alice: World) -> None:
    client = key_client(alice)
    url = reverse("api:image-file", kwargs={"pk": alice.image.pk})
    assert client.get(url, {"variant": "thumbnail"}).status_code == 200
    response = client.get(url, {"varient": "thumbnail"})  # misspelt: would have served the original
    assert response.status_code == 400 and response.json()["error"]["details"]["unknown"] == ["varient"]
    # one object that takes no parameter has nothing to misspell: the query string is ignored, as before
    patient = client.get(reverse("api:patient-detail", kwargs={"pk": alice.patient.pk}), {"fields": "id"})
    assert patient.status_code == 200


def test_outsiders_get_no_hint_about_parameters(alice: World, bob: World) -> None:
    assert Client().get(reverse("api:patient-list"), {"foo": 1}).status_code == 401
    staff = token_client(alice, "staff")
    assert staff.get(reverse("api:audit-event-list"), {"foo": 1}).status_code == 403
    # another clinic's patient answers exactly like one that does not exist
    bobs = key_client(bob)
    other = bobs.get(reverse("api:patient-image-list", kwargs={"pk": alice.patient.pk}), {"foo": 1})
    missing = bobs.get(reverse("api:patient-image-list", kwargs={"pk": uuid.uuid4()}), {"foo": 1})
    assert (other.status_code, other.json()) == (missing.status_code, missing.json())
    assert bobs.get(reverse("api:patient-image-list", kwargs={"pk": alice.patient.pk})).status_code == 404


def test_the_docs_and_schema_views_keep_their_own_parameters(alice: World) -> None:
    assert Client().get(reverse("api:schema"), {"lang": "en"}).status_code == 200


def test_every_documented_get_is_checked_and_documents_the_400(db: Any) -> None:
    schema = json.loads(Client().get(reverse("api:schema")).content)
    gets = 0
    for path, operations in schema["paths"].items():
        if "get" not in operations:
            continue
        concrete = path.replace("{id}", "00000000-0000-0000-0000-000000000000")
        try:
            view_name = resolve(concrete).view_name
        except Resolver404:  # pragma: no cover
            pytest.fail(f"documented path {path} resolves to no route")
        documented = {p["name"] for p in operations["get"].get("parameters", []) if p["in"] == "query"}
        assert documented_query_parameters(view_name, "GET") == documented, path
        if documented or "{" not in path:
            assert "unknown_parameter" in operations["get"]["responses"]["400"]["description"], path
            gets += 1
    assert gets >= len(LISTS)
