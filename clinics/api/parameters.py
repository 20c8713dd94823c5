"""The query parameters each GET operation accepts: exactly the ones its OpenAPI operation documents.

The document is generated from what each view declares (its filter serializer or ``OpenApiParameter``
list in ``extend_schema``, and its paginator's ``page``/``page_size`` on lists), so what the API
reference lists and what the API accepts cannot drift apart. ``ClinicScopedAPIMixin`` answers a GET that
takes query parameters (lists, exports, an image's ``variant``) and names any other with 400
``unknown_parameter`` instead of silently ignoring it (a misspelt filter would otherwise return the unfiltered
list). A GET of one object that takes no parameter ignores a query string, as before: nothing to misspell.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

from django.urls import Resolver404, resolve
from drf_spectacular.generators import SchemaGenerator
from rest_framework import exceptions

_ANY_ID = str(uuid.UUID(int=0))
# Held by every build of the OpenAPI document in this process (this module's and ``docs.SchemaView``'s):
# drf-spectacular loads its extensions lazily on first use, and two builds at once can break that load.
SCHEMA_LOCK = threading.RLock()
_documented: dict[tuple[str, str], frozenset[str]] | None = None


class UnknownQueryParameter(exceptions.APIException):
    """A GET named a query parameter its operation does not document (``details``: unknown, allowed)."""

    status_code = 400
    default_code = "unknown_parameter"

    def __init__(self, unknown: list[str], allowed: frozenset[str]) -> None:
        names = ", ".join(unknown)
        accepted = ", ".join(sorted(allowed)) or "none"
        plural = "s" if len(unknown) > 1 else ""
        super().__init__(f"Unknown query parameter{plural}: {names}. This operation accepts: {accepted}.")
        self.details = {"unknown": unknown, "allowed": sorted(allowed)}


def _concrete(path: str) -> str:
    """A path template of the document with every ``{parameter}`` filled with an id (all of ours are uuids)."""
    while "{" in path:
        start = path.index("{")
        path = path[:start] + _ANY_ID + path[path.index("}", start) + 1 :]
    return path


def _build() -> dict[tuple[str, str], frozenset[str]]:
    schema: dict[str, Any] = SchemaGenerator().get_schema(request=None, public=True)
    found: dict[tuple[str, str], frozenset[str]] = {}
    for path, operations in schema.get("paths", {}).items():
        try:
            view_name = resolve(_concrete(path)).view_name
        except Resolver404:  # pragma: no cover - every documented path is one of our routes
            continue
        for method, operation in operations.items():
            if isinstance(operation, dict):
                names = {p["name"] for p in operation.get("parameters", []) if p.get("in") == "query"}
                found[(view_name, method.upper())] = frozenset(names)
    return found


def documented_query_parameters(view_name: str, method: str) -> frozenset[str] | None:
    """The query parameters the document lists for a route and method; None for an operation it does not
    document (the schema and docs views themselves). Built once per process (a quarter of a second)."""
    global _documented
    if _documented is None:
        with SCHEMA_LOCK:
            if _documented is None:
                _documented = _build()
    return _documented.get((view_name, "GET" if method.upper() == "HEAD" else method.upper()))


def reject_unknown_query_parameters(
    view_name: str, method: str, query_names: list[str], *, one_object: bool = False
) -> None:
    """``one_object``: the GET reads one object (its id is in the path); one that takes no query parameter
    has nothing to misspell and ignores a query string, as before. Lists always check."""
    if method.upper() not in ("GET", "HEAD") or not query_names:
        return
    allowed = documented_query_parameters(view_name, method)
    if allowed is None or (one_object and not allowed):  # schema and docs views; a plain object read
        return
    unknown = sorted(set(query_names) - allowed)
    if unknown:
        raise UnknownQueryParameter(unknown, allowed)
