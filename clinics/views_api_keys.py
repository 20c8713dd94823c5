"""The clinic's API keys for practice systems (clinic admins): create (the secret shown once) and revoke."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render

from .forms import ApiKeyForm
from .models import ApiKey
from .services import api_key_create, api_key_revoke
from .views_base import ClinicView


class ApiKeysView(ClinicView):
    def _render(self, request: HttpRequest, form: ApiKeyForm, **extra: Any) -> HttpResponse:
        keys = ApiKey.objects.order_by("revoked_at", "-created_at")
        return render(request, "clinics/api_keys.html", {"form": form, "keys": keys, **extra})

    def get(self, request: HttpRequest) -> HttpResponse:
        return self._render(request, ApiKeyForm())

    def post(self, request: HttpRequest) -> HttpResponse:
        form = ApiKeyForm(request.POST)
        if form.is_valid():
            key, secret = api_key_create(
                name=form.cleaned_data["name"],
                scopes=form.cleaned_data["scopes"],
                created_by=request.user,
                expires_in_days=form.cleaned_data["expires_in_days"],
            )
            # Shown once on this response, never stored in clear or put in the session.
            response = self._render(request, ApiKeyForm(), new_key=key, new_secret=secret)
            response["Cache-Control"] = "no-store"
            return response
        return self._render(request, form)


class ApiKeyRevokeView(ClinicView):
    def post(self, request: HttpRequest, pk: str) -> HttpResponse:
        key = get_object_or_404(ApiKey.objects, pk=pk)
        api_key_revoke(key=key)
        messages.success(request, f"API key {key.name} revoked.")
        return redirect("clinics:api-keys")
