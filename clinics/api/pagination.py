"""Pagination of every API list: pages by number (``page``, ``page_size``; ``count``, ``next``, ``previous``,
``results``), or, on the lists whose view names a ``keyset``, by cursor.

A cursor page (``?cursor=`` to start, then the ``next`` links) reads the rows after the last one it returned
(``WHERE (created_at, id) after ...`` on an index) instead of counting and skipping the rows before it, so page
1,000 costs what page 1 costs; ``count`` is null there and ``previous`` is not offered. A cursor only positions the
caller inside what its own clinic scope already lets it read.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import uuid
from typing import Any

from django.db.models import Q, QuerySet
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param

from core.errors import ApplicationError


def invalid_cursor() -> ApplicationError:
    return ApplicationError(
        "invalid_cursor", "The cursor is not one this list gave out: start again with ?cursor= (empty)."
    )


def _encode(created_at: dt.datetime, pk: uuid.UUID) -> str:
    raw = json.dumps([created_at.isoformat(), str(pk)], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str) -> tuple[dt.datetime, uuid.UUID]:
    try:
        created_at, pk = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        when = dt.datetime.fromisoformat(created_at)
        if when.tzinfo is None:
            raise ValueError("naive")
        return when, uuid.UUID(pk)
    except (ValueError, TypeError, binascii.Error, json.JSONDecodeError) as exc:
        raise invalid_cursor() from exc


class Pagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200
    cursor_query_param = "cursor"

    def paginate_queryset(self, queryset: QuerySet, request: Request, view: Any = None) -> list[Any] | None:
        self.keyset = None
        if getattr(view, "keyset", None) and self.cursor_query_param in request.query_params:
            return self._keyset_page(queryset, request, view)
        return super().paginate_queryset(queryset, request, view)

    def _keyset_page(self, queryset: QuerySet, request: Request, view: Any) -> list[Any]:
        """Newest first by ``(created_at desc, id asc)``: the order of the lists that offer it."""
        if view.keyset != ("-created_at", "id"):  # pragma: no cover - the one order implemented
            raise NotImplementedError(view.keyset)
        self.request, self.keyset = request, True
        cursor = request.query_params.get(self.cursor_query_param, "")
        queryset = queryset.order_by("-created_at", "id")
        if cursor:
            created_at, pk = _decode(cursor)
            queryset = queryset.filter(Q(created_at__lt=created_at) | Q(created_at=created_at, id__gt=pk))
        size = self.get_page_size(request)
        rows = list(queryset[: size + 1])
        page, more = rows[:size], len(rows) > size
        self.next_cursor = _encode(page[-1].created_at, page[-1].pk) if more else None
        return page

    def get_paginated_response(self, data: Any) -> Response:
        if not getattr(self, "keyset", None):
            return super().get_paginated_response(data)
        url = self.request.build_absolute_uri()
        next_url = replace_query_param(url, self.cursor_query_param, self.next_cursor) if self.next_cursor else None
        return Response({"count": None, "next": next_url, "previous": None, "results": data})

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        response = super().get_paginated_response_schema(schema)
        response["properties"]["count"]["nullable"] = True  # null on a cursor page
        return response

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        if getattr(view, "keyset", None):
            parameters.append(
                {
                    "name": self.cursor_query_param,
                    "required": False,
                    "in": "query",
                    "description": "Cursor pagination: empty for the first page, then follow `next`. Pages by "
                    "position, not number, so deep pages cost what the first does; `count` is null.",
                    "schema": {"type": "string"},
                }
            )
        return parameters
