"""Error pages: JSON in the API's error shape under /api/, HTML elsewhere."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from clinics.access import record_object_not_found
from clinics.api.errors import error_body


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    record_object_not_found(request)
    if request.path.startswith("/api/"):
        return JsonResponse(error_body("not_found", "Not found."), status=404)
    return render(request, "404.html", status=404)


def server_error(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    if request.path.startswith("/api/"):
        return JsonResponse(error_body("server_error", "An unexpected error occurred; it has been logged."), status=500)
    return HttpResponse("<h1>Server error</h1><p>The error has been logged.</p>", status=500)
