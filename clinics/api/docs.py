"""The OpenAPI document and its browsable documentation.

Every error the API can answer with has the shape ``{"error": {"code", "message", "details"}}``
(``clinics.api.errors``). Views declare the errors particular to them with ``error_response()``
(409 conflicts, 413 and 415 for uploads); ``document_errors`` adds the ones every view can give
(400, 401, 403, 404, 415, 429; 400 ``unknown_parameter`` on every list and every GET that takes query
parameters) to each operation, so the document lists every status code the API really answers with. The query
parameters an operation lists here are also the only ones it accepts (``clinics.api.parameters``).
"""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.urls import Resolver404, resolve
from django.utils import translation
from drf_spectacular.extensions import OpenApiViewExtension
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import (
    OpenApiJsonRenderer,
    OpenApiJsonRenderer2,
    OpenApiYamlRenderer,
    OpenApiYamlRenderer2,
)
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework import exceptions
from rest_framework.response import Response

from .. import ratelimit
from ..middleware import client_ip
from ..permissions import PUBLIC, route_permission
from .base import ClinicScopedAPIMixin
from .parameters import SCHEMA_LOCK
from .permissions import RoutePermission
from .serializers import AuditExportInput, AuditExportRowOutput, ErrorSerializer

ERROR_COMPONENT = "Error"
ERROR_REF = {"$ref": f"#/components/schemas/{ERROR_COMPONENT}"}
# ErrorSerializer as a schema, for when no view referenced it.
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string", "description": "Stable, machine-readable error code."},
                "message": {"type": "string", "description": "For people; may change."},
                "details": {"nullable": True, "description": "Per-field messages, retry delay or null."},
            },
            "required": ["code", "details", "message"],
        }
    },
    "required": ["error"],
}
_BODY_METHODS = frozenset({"post", "put", "patch"})
_ANY_ID = str(uuid.UUID(int=0))


def error_response(description: str) -> OpenApiResponse:
    """A documented error answer of a view (the API's error shape)."""
    return OpenApiResponse(ErrorSerializer, description=description)


def _route_is_public(path: str, method: str) -> bool:
    concrete = path
    while "{" in concrete:
        start = concrete.index("{")
        concrete = concrete[:start] + _ANY_ID + concrete[concrete.index("}", start) + 1 :]
    try:
        match = resolve(concrete)
    except Resolver404:
        return False
    try:
        return route_permission(match.view_name, method) == PUBLIC
    except KeyError:
        return False


def _errors_for(path: str, method: str, operation: dict[str, Any]) -> dict[str, str]:
    """Status -> description of the errors any view of this kind can answer with."""
    parameters = operation.get("parameters", [])
    query = [p for p in parameters if p.get("in") == "query"]
    errors: dict[str, str] = {}
    if "requestBody" in operation or method in _BODY_METHODS:
        errors["400"] = (
            "The request is not valid: `validation_error` (``details``: messages per field), `parse_error` "
            "(malformed body) or a rule of the operation (`code` says which)."
        )
    elif method == "get" and (query or "{" not in path):  # clinics.api.parameters: lists and GETs with parameters
        errors["400"] = (
            "`unknown_parameter`: a query parameter this operation does not list (``details.unknown`` names it, "
            "``details.allowed`` lists the accepted ones), or `validation_error`: a query parameter's value is not "
            "valid (``details``: messages per field)."
        )
    if not _route_is_public(path, method):
        errors["401"] = "No credentials, or an invalid, expired or revoked token (`authentication_failed`)."
        errors["403"] = (
            "The role or API key scope does not allow this (`permission_denied`), or a second factor or a "
            "fresh re-authentication is required first."
        )
    if any(p.get("in") == "path" for p in parameters) or any(p.get("name") == "page" for p in query):
        errors["404"] = "No such object in your clinic (an object of another clinic answers the same), or no such page."
    if "requestBody" in operation or method in _BODY_METHODS:
        errors["415"] = "The request body's Content-Type is not one this operation accepts."
    errors["429"] = "Too many requests (`rate_limited`): retry after ``details.retry_after_seconds``."
    return errors


def document_errors(result: dict[str, Any], generator: Any = None, request: Any = None, public: bool = False) -> Any:
    """drf-spectacular post-processing hook: the error shape and the common error statuses on every
    operation, and each operation's security requirements without duplicates (none when public)."""
    result.setdefault("components", {}).setdefault("schemas", {}).setdefault(ERROR_COMPONENT, ERROR_SCHEMA)
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            for status, description in _errors_for(path, method, operation).items():
                responses.setdefault(status, {"description": description})
            for status, response in responses.items():
                if status.startswith(("4", "5")) and not response.get("content"):
                    response["content"] = {"application/json": {"schema": ERROR_REF}}
                    response.setdefault("description", "")
            if "429" in responses:
                responses["429"].setdefault(
                    "headers",
                    {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait."}},
                )
            if _route_is_public(path, method):
                operation["security"] = [{}]
            elif "security" in operation:
                unique: list[dict[str, Any]] = []
                for requirement in operation["security"]:
                    if requirement not in unique:
                        unique.append(requirement)
                operation["security"] = unique
    return result


class AuditExportDocs(OpenApiViewExtension):
    """The JSON export is a list of events, not an object. (Remove once ``AuditEventExportView.get``
    in clinics/api/views.py declares ``(200, "application/json"): AuditExportRowOutput(many=True)``.)"""

    target_class = "clinics.api.views.AuditEventExportView"

    def view_replacement(self) -> type:
        @extend_schema_view(
            get=extend_schema(
                parameters=[AuditExportInput],
                responses={
                    (200, "text/csv"): OpenApiTypes.STR,
                    (200, "application/json"): AuditExportRowOutput(many=True),
                },
            )
        )
        class AuditEventExportView(self.target):
            pass

        return AuditEventExportView


class ApiSchemaGenerator(SchemaGenerator):
    def get_schema(self, request: Any = None, public: bool = False) -> Any:
        result = super().get_schema(request=request, public=public)
        return document_errors(result, generator=self, request=request, public=public)


_schemas: dict[Any, Any] = {}


def _schemas_forget(**kwargs: Any) -> None:
    _schemas.clear()


setting_changed.connect(_schemas_forget)


class SchemaView(ClinicScopedAPIMixin, SpectacularAPIView):
    """OpenAPI 3 document of the whole API (public: it holds no clinic data).

    The plain document (no ``?version=``, the site's language) is made once per process and served to every caller:
    it is the same for all of them and only changes with the code, and building it costs about 0.1 s of CPU
    (seconds in a cold process). Any variant (``?lang=``, ``?version=``) is built for its request and not kept, so
    callers cannot fill the memory with variants or change what others get; since each costs a build, variants are
    limited per caller (``RATE_LIMITS["schema_variant"]``, per client IP when anonymous: 429 with Retry-After over
    it), so nobody can keep a web process busy building them. Every build holds ``SCHEMA_LOCK``:
    drf-spectacular's extension registry, which loads its targets lazily on first use, is not safe to build from
    two threads at once (two first requests in one gunicorn process answered one 500 in a benchmark)."""

    permission_classes = [RoutePermission]
    generator_class = ApiSchemaGenerator
    # JSON unless YAML is asked for (Accept: application/yaml or application/vnd.oai.openapi), like the rest
    renderer_classes = [OpenApiJsonRenderer, OpenApiJsonRenderer2, OpenApiYamlRenderer, OpenApiYamlRenderer2]

    def _get_schema_response(self, request: Any) -> Response:
        version = self.api_version or request.version or self._get_version_parameter(request)
        plain = version is None and translation.get_language() == settings.LANGUAGE_CODE
        if not plain:
            wait = ratelimit.hit("schema_variant", getattr(request, "access", None), client_ip(request._request))
            if wait is not None:
                raise exceptions.Throttled(wait)
        with SCHEMA_LOCK:
            schema = _schemas.get("plain") if plain else None
            if schema is None:
                generator = self.generator_class(urlconf=self.urlconf, api_version=version, patterns=self.patterns)
                schema = generator.get_schema(request=request, public=self.serve_public)
                if plain:
                    _schemas["plain"] = schema
        return Response(
            data=schema,
            headers={"Content-Disposition": f'inline; filename="{self._get_filename(request, version)}"'},
        )


class ApiDocsView(ClinicScopedAPIMixin, SpectacularSwaggerSplitView):
    """Browsable API documentation for logged-in members, under the site's Content-Security-Policy
    (``script-src 'self'``, ``style-src 'self'``): the split view serves Swagger UI's start-up script
    from ``?script`` on this URL instead of inline, our template has no inline style, and Swagger UI
    itself comes from our static files (``SPECTACULAR_SETTINGS["SWAGGER_UI_DIST"]``), never a CDN.
    The script carries the CSRF token for "Try it out": like the page, it needs the member's session,
    which the browser does not send with another site's ``<script src>`` (SameSite=Lax)."""

    permission_classes = [RoutePermission]
    template_name = "api/docs.html"
