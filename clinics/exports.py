"""Audit trail export as CSV or JSON, shared by the HTML download and the API."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from typing import Any

from django.db.models import F, QuerySet
from django.http import StreamingHttpResponse
from django.utils import timezone

from . import audit
from .models import AuditEvent
from .tenancy import clinic_scope

EXPORT_FORMATS = ("csv", "json")
FIELDS = (
    "chain",
    "seq",
    "created_at",
    "action",
    "outcome",
    "actor",
    "actor_user_id",
    "actor_api_key_id",
    "object_type",
    "object_id",
    "ip",
    "request_id",
    "details",
    "prev_hash",
    "hash",
    "sealed",
)


def event_row(event: AuditEvent) -> dict[str, Any]:
    return {
        "chain": event.chain,
        "seq": event.seq,
        "created_at": event.created_at.isoformat(),
        "action": event.action,
        "outcome": event.outcome,
        "actor": event.actor_label,
        "actor_user_id": str(event.actor_user_id) if event.actor_user_id else None,
        "actor_api_key_id": str(event.actor_api_key_id) if event.actor_api_key_id else None,
        "object_type": event.object_type,
        "object_id": event.object_id,
        "ip": event.ip,
        "request_id": event.request_id,
        "details": event.details,
        "prev_hash": event.prev_hash,
        "hash": event.hash,
        "sealed": event.sealed,  # False: recorded, not yet in the hash chain (seq, prev_hash and hash empty)
    }


class _Echo:
    def write(self, value: str) -> str:
        return value


def _csv_cell(value: Any) -> Any:
    # Defuse spreadsheet formula injection in values that came from users (names, reasons).
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _csv_stream(rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    writer = csv.DictWriter(_Echo(), fieldnames=FIELDS)
    yield writer.writeheader()
    for row in rows:
        row = {**row, "details": json.dumps(row["details"], sort_keys=True)}
        yield writer.writerow({k: _csv_cell(v) for k, v in row.items()})


def _json_stream(rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    yield "["
    for i, row in enumerate(rows):
        yield ("," if i else "") + json.dumps(row, sort_keys=True)
    yield "]\n"


def _rows_in_scope(clinic_id: object, events: QuerySet[AuditEvent]) -> Iterator[dict[str, Any]]:
    """The rows are read while the response streams, after the request's scope has ended: re-enter the
    clinic's scope (PostgreSQL row-level security shows nothing without it)."""
    with clinic_scope(clinic_id):
        for event in events.iterator(chunk_size=1000):
            yield event_row(event)


def record_audit_trail_read(*, clinic_id: object, filters: dict, page: int, shown: int) -> None:
    """Reading the trail is itself a read of audited data: who looked, filtered by what (the filter names, not
    the words typed into them: the trail is append-only and keeps ids, never free text), at how many events."""
    audit.record(
        action="audit.view",
        clinic_id=clinic_id,
        object_type="audit_trail",
        details={"filtered_by": sorted(filters), "page": page, "events": shown},
    )


def audit_export_response(
    *, events: QuerySet[AuditEvent], fmt: str, clinic_id: object, filters: dict
) -> StreamingHttpResponse:
    """Record the export in the trail, then stream the (already filtered) events oldest first, in chain order,
    the unsealed ones last."""
    count = events.count()
    audit.record(
        action="audit.export",
        clinic_id=clinic_id,
        object_type="audit_trail",
        details={"format": fmt, "filtered_by": sorted(filters), "events": count},
    )
    rows = _rows_in_scope(clinic_id, events.order_by(F("seq").asc(nulls_last=True), "id"))
    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    if fmt == "csv":
        response = StreamingHttpResponse(_csv_stream(rows), content_type="text/csv; charset=utf-8")
    else:
        response = StreamingHttpResponse(_json_stream(rows), content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="audit-{stamp}.{fmt}"'
    response["Cache-Control"] = "no-store"
    return response
