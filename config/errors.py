"""Error pages: JSON in the API's error shape under /api/, HTML elsewhere."""

from __future__ import annotations

from html import escape
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from clinics import context
from clinics.access import record_object_not_found
from core.errors import error_body


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """Requests Django refuses before any view runs (a body over DATA_UPLOAD_MAX_MEMORY_SIZE, too many
    fields, a malformed Host...): the API's error shape under /api/, with 413 for a body that is too large."""
    too_large = isinstance(exception, RequestDataTooBig)
    if request.path.startswith("/api/"):
        if too_large:
            return JsonResponse(error_body("request_too_large", "The request body is larger than allowed."), status=413)
        return JsonResponse(error_body("bad_request", "The request could not be read."), status=400)
    return HttpResponse(
        "<h1>Request too large</h1>" if too_large else "<h1>Bad request</h1>",
        status=413 if too_large else 400,
    )


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    record_object_not_found(request)
    if request.path.startswith("/api/"):
        return JsonResponse(error_body("not_found", "Not found."), status=404)
    return render(request, "404.html", status=404)


SERVER_ERROR_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Server problem · DentalScan</title></head>
<body><main><h1>Server problem</h1>
<p>Something went wrong on our side, not with what you did or sent. It has been logged. Please try again.</p>
<p>If it keeps happening, tell your administrator and quote this reference: <code>{reference}</code>.</p>
<p><a href="">Try again</a> · <a href="/">Home</a></p></main></body></html>
"""


def server_error(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    """An unexpected fault: a short page (or the API's error shape) with the request's reference, never a trace.
    Rendered without templates or the database, which may be what failed."""
    reference = context.request_id_var.get() or "-"
    if request.path.startswith("/api/"):
        message = "An unexpected error occurred on the server; it has been logged. Try again."
        return JsonResponse(error_body("server_error", message, {"reference": reference}), status=500)
    return HttpResponse(SERVER_ERROR_PAGE.format(reference=escape(reference)), status=500)
