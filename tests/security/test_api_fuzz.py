"""API fuzzing (security issue #7): Schemathesis drives every operation of the OpenAPI document the
app serves at ``/api/v1/schema/``, in-process through the Django WSGI app, as members of alice's clinic.

Every response must be free of 5xx, conform to the schema (documented status code, content type,
headers and body) and carry nothing of bob's clinic. A second test sends bob's key at each of
alice's objects: all 404. Example counts are bounded and derandomised, so CI runs the same cases.

(Schemathesis's pytest plugin ``from_fixture`` loader does not run under pytest 9, so each
operation runs as a Hypothesis test of its own, reported as a subtest.)
"""

from __future__ import annotations

import os
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import got_request_exception, request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, Phase, given, seed, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from werkzeug.test import Client as WerkzeugClient

from analysis.models import WebhookEndpoint
from analysis.webhooks import webhook_register
from clinics import services
from clinics.tenancy import clinic_scope
from tests.conftest import World, png_bytes
from tests.dicom.objects import dicom_object

SCHEMA_PATH = "/api/v1/schema/"
# Examples per operation and generation mode: bounded so the whole file stays within minutes in CI.
# API_FUZZ_EXAMPLES=<n> runs a deeper pass (n positive and 2n/3 negative cases per operation), and
# API_FUZZ_SEED=<int> other cases than CI's fixed ones (e.g. a nightly run with the date as seed).
_POSITIVE = int(os.environ.get("API_FUZZ_EXAMPLES", "20"))
_SEED = os.environ.get("API_FUZZ_SEED")
EXAMPLES = {GenerationMode.POSITIVE: _POSITIVE, GenerationMode.NEGATIVE: max(1, _POSITIVE * 2 // 3)}
MAX_UPLOAD_BYTES = 64 * 1024  # fuzzed multipart files are cut to this (the app's own cap is 40 MiB)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
HYPOTHESIS_SETTINGS = settings(
    derandomize=_SEED is None,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure reports the case as generated
    suppress_health_check=list(HealthCheck),
    print_blob=False,
)
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)
# First path segment after /api/v1/ -> the World attribute whose id fills ``{id}``.
RESOURCES = {"patients": "patient", "images": "image", "analyses": "analysis", "findings": "finding"}


@pytest.fixture
def wsgi_app() -> Iterator[WSGIHandler]:
    """The Django WSGI app, called in-process. As with Django's test client, the request signals do
    not close the database connection: it holds the test's transaction (PostgreSQL in CI)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield WSGIHandler()
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.fixture
def server_errors() -> Iterator[list[BaseException]]:
    """Exceptions the app turned into a 500, so a failure shows the cause and not only the status."""
    caught: list[BaseException] = []

    def record(sender: Any, **kwargs: Any) -> None:
        exc = sys.exc_info()[1]
        if exc is not None:
            caught.append(exc)

    got_request_exception.connect(record, weak=False)
    yield caught
    got_request_exception.disconnect(record)


@pytest.fixture
def api_schema(alice: World, bob: World, wsgi_app: WSGIHandler) -> Any:
    """The document the app itself serves, loaded through the WSGI app."""
    return schemathesis.openapi.from_wsgi(SCHEMA_PATH, wsgi_app)


def object_id(world: World, path: str) -> str:
    """The id of ``world``'s object behind a ``/api/v1/<resource>/{id}/...`` path."""
    resource = path.strip("/").split("/")[2]
    if resource == "visits":
        assert world.image is not None
        return str(world.image.visit_id)
    if resource == "webhooks":
        return str(webhook_of(world).pk)
    if resource == "dicom":  # /api/v1/dicom/inbox/{id}/... or /api/v1/dicom/sends/{id}/...
        kind = {"inbox": "dicom_instance", "sends": "dicom_send"}[path.strip("/").split("/")[3]]
        return str(dicom_object(world, kind).pk)
    return str(getattr(world, RESOURCES[resource]).pk)


def webhook_of(world: World) -> WebhookEndpoint:
    """The clinic's first webhook, registered on first use (the worlds of conftest have none)."""
    with clinic_scope(world.clinic.id):
        return (
            WebhookEndpoint.objects.order_by("created_at").first()
            or webhook_register(url=f"https://{world.clinic.slug}.example/hook")[0]
        )


def foreign_markers(world: World) -> list[str]:
    """Strings that must never appear in an answer to another clinic: ids and the patient's name."""
    assert world.patient and world.image and world.analysis and world.finding
    ids = [world.patient.pk, world.image.pk, world.analysis.pk, world.finding.pk, world.image.visit_id]
    ids.append(webhook_of(world).pk)
    return [str(i) for i in ids] + [i.hex for i in ids] + [world.patient_name]


def bearer(world: World, identity: str) -> str:
    """The clinic API key, or a user token of the member with that role (created directly: the
    token endpoint needs a second factor for dentists and clinic admins)."""
    if identity == "api_key":
        return world.api_secret
    with clinic_scope(world.clinic.id):
        _, raw = services.user_token_create(user=world.users[identity], clinic=world.clinic, mfa_verified=True)
    return raw


class Fuzzer:
    def __init__(self, owner: World, other: World, app: WSGIHandler, server_errors: list[BaseException]) -> None:
        self.owner = owner
        self.markers = foreign_markers(other)
        self.app = app
        self.server_errors = server_errors
        self.uploads = 0
        self.statuses: dict[str, Counter[int]] = defaultdict(Counter)

    def prepare(self, case: Any, mode: GenerationMode) -> None:
        """Point well-formed ids at the owner's real objects (so the handlers run and not only the 404
        path), keep fuzzed uploads small, and send a real image every other time (so ingest runs)."""
        if UUID_RE.match(str(case.path_parameters.get("id", ""))):
            case.path_parameters["id"] = object_id(self.owner, case.path)
        if isinstance(case.body, dict) and "file" in case.body:
            upload = case.body["file"]
            if isinstance(upload, str):
                upload = upload.encode()
            if isinstance(upload, bytes):
                self.uploads += 1
                if mode.is_positive and self.uploads % 2:
                    upload = png_bytes()
                    case.body.pop("visit", None)  # a random visit id would only test the 404
                case.body["file"] = upload[:MAX_UPLOAD_BYTES]

    def check(self, case: Any, token: str, mode: GenerationMode) -> None:
        self.prepare(case, mode)
        self.server_errors.clear()
        response = case.call(app=self.app, headers={"Authorization": f"Bearer {token}"})
        where = f"{case.method} {case.formatted_path}"
        assert not self.server_errors, f"{where} raised {self.server_errors[0]!r}"
        assert len(response.request.body or b"") <= MAX_UPLOAD_BYTES + 16 * 1024, f"{where}: request too large"
        self.statuses[case.operation.label][response.status_code] += 1
        text = response.content.decode("utf-8", "replace")
        leaked = [m for m in self.markers if m in text]
        assert not leaked, f"{where} answered with another clinic's data: {leaked}"
        case.validate_response(response, checks=CHECKS)

    def run(self, operation: Any, token: str, mode: GenerationMode) -> None:
        test: Callable[[], None] = given(case=operation.as_strategy(generation_mode=mode))(
            lambda case: self.check(case, token, mode)
        )
        test = settings(HYPOTHESIS_SETTINGS, max_examples=EXAMPLES[mode])(test)
        if _SEED is not None:
            test = seed(int(_SEED))(test)
        test()


@pytest.mark.parametrize("identity", ["api_key", "dentist", "clinic_admin"])
def test_fuzz_every_operation(
    identity: str,
    alice: World,
    bob: World,
    api_schema: Any,
    wsgi_app: WSGIHandler,
    server_errors: list[BaseException],
    subtests: Any,
) -> None:
    """Every operation, positive and negative data, as alice's API key or a dentist or clinic admin."""
    token = bearer(alice, identity)
    fuzzer = Fuzzer(alice, bob, wsgi_app, server_errors)
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 20
    # Erasure last: once alice's patient is gone, every other operation would only see 404.
    operations.sort(key=lambda operation: operation.method.upper() == "DELETE")
    for operation in operations:
        for mode in EXAMPLES:
            with subtests.test(msg=f"{operation.label} [{mode.value}]"):
                fuzzer.run(operation, token, mode)
    # The run must reach the handlers, not only authentication: most operations answer 2xx sometimes.
    succeeded = [label for label, counts in fuzzer.statuses.items() if any(200 <= c < 300 for c in counts)]
    assert len(succeeded) >= len(operations) // 3, dict(fuzzer.statuses)


@pytest.mark.parametrize("identity", ["api_key", "dentist", "clinic_admin"])
def test_other_clinic_gets_404_for_every_object(
    identity: str, alice: World, bob: World, api_schema: Any, wsgi_app: WSGIHandler
) -> None:
    """bob's key or a bob member's token at every operation with a path id, filled with alice's ids:
    404 in the error shape, and nothing of alice's in the answer, whatever the method and role."""
    client = WerkzeugClient(wsgi_app)
    headers = {"Authorization": f"Bearer {bearer(bob, identity)}"}
    markers = foreign_markers(alice)
    checked = []
    for result in api_schema.get_all_operations():
        operation = result.ok()
        if "{id}" not in operation.path:
            continue
        path = operation.path.replace("{id}", object_id(alice, operation.path))
        url = api_schema.get_full_path(path)
        response = client.open(url, method=operation.method.upper(), headers=headers, json={})
        assert response.status_code == 404, f"{operation.label}: {response.status_code} {response.get_data()!r}"
        assert response.json["error"]["code"] == "not_found", operation.label
        assert not [m for m in markers if m in response.get_data(as_text=True)], operation.label
        checked.append(operation.label)
    assert len(checked) >= 12


@pytest.mark.parametrize("authorization", [None, "Bearer dsk_not-a-key", "Bearer dut_not-a-token", "Basic eDp5"])
def test_every_operation_needs_credentials(
    authorization: str | None, alice: World, api_schema: Any, wsgi_app: WSGIHandler
) -> None:
    """Without credentials, or with made-up ones, every operation that is not public answers 401 in the
    error shape, and says nothing about alice's objects."""
    client = WerkzeugClient(wsgi_app)
    headers = {"Authorization": authorization} if authorization else {}
    markers = foreign_markers(alice)
    checked = []
    for result in api_schema.get_all_operations():
        operation = result.ok()
        if {} in (operation.definition.raw.get("security") or [{}]):
            continue  # public (the token endpoint)
        path = operation.path
        if "{id}" in path:
            path = path.replace("{id}", object_id(alice, path))
        response = client.open(
            api_schema.get_full_path(path), method=operation.method.upper(), headers=headers, json={}
        )
        assert response.status_code == 401, f"{operation.label}: {response.status_code} {response.get_data()!r}"
        assert set(response.json["error"]) == {"code", "message", "details"}, operation.label
        assert not [m for m in markers if m in response.get_data(as_text=True)], operation.label
        checked.append(operation.label)
    assert len(checked) >= 20
