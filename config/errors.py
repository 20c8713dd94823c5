"""Error pages: JSON in the API's error shape under /api/, HTML elsewhere."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from clinics.access import record_object_not_found
from clinics.api.errors import error_body


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


def server_error(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    if request.path.startswith("/api/"):
        return JsonResponse(error_body("server_error", "An unexpected error occurred; it has been logged."), status=500)
    return HttpResponse("<h1>Server error</h1><p>The error has been logged.</p>", status=500)
