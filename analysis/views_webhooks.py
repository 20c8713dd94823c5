"""The clinic admins' webhooks page: register endpoints (the secret shown once, on the page the registration
redirects to), send a test event, revoke, and the recent deliveries with their outcomes."""

from __future__ import annotations

import base64
import uuid

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from clinics.services import ServiceError
from clinics.views_base import ClinicView
from core import crypto
from patients.keys import clinic_key

from .models import WebhookEndpoint
from .webhooks import (
    TEST_EVENT,
    WEBHOOK_EVENTS,
    delivery_last_attempt,
    webhook_deliveries,
    webhook_get,
    webhook_list,
    webhook_register,
    webhook_revoke,
    webhook_send_test,
)

RECENT_DELIVERIES = 25
# The session entry that holds a new endpoint's secret between the registering POST and the GET that shows it,
# encrypted with the clinic's key (sessions are rows of the database: a dump alone must not yield a signing secret,
# even of a redirect never followed).
NEW_SECRET_SESSION_KEY = "webhook_new_secret"


def _secret_aad(endpoint_id: str) -> bytes:
    return f"webhook:{endpoint_id}:new-secret".encode()


def _sealed_secret(endpoint_id: str, secret: str) -> str:
    return base64.b64encode(crypto.encrypt(clinic_key(), secret.encode(), _secret_aad(endpoint_id))).decode()


def _opened_secret(endpoint_id: str, sealed: str) -> str:
    return crypto.decrypt(clinic_key(), base64.b64decode(sealed), _secret_aad(endpoint_id)).decode()


class WebhooksView(ClinicView):
    """POST ``action``: ``register`` (``url``, ``events``), ``test`` or ``revoke`` (``webhook``: its id)."""

    template_name = "analysis/webhooks.html"

    def _render(self, request: HttpRequest, *, status: int = 200, **extra: object) -> HttpResponse:
        deliveries = list(webhook_deliveries()[:RECENT_DELIVERIES])
        for delivery in deliveries:
            delivery.last = delivery_last_attempt(delivery)  # type: ignore[attr-defined]
        context = {
            "endpoints": webhook_list(),
            "deliveries": deliveries,
            "events": WEBHOOK_EVENTS,
            "test_event": TEST_EVENT,
            "url": "",
            "chosen": [],
            **extra,
        }
        return render(request, self.template_name, context, status=status)

    def get(self, request: HttpRequest) -> HttpResponse:
        """Shows a just-registered endpoint's secret once (Post/Redirect/Get): it is taken out of the session here,
        so a reload or a later visit does not show it again."""
        once = request.session.pop(NEW_SECRET_SESSION_KEY, None)
        if not once:
            return self._render(request)
        try:
            endpoint = webhook_get(uuid.UUID(once["webhook"]))  # the clinic in scope's only
            secret = _opened_secret(str(endpoint.pk), once["sealed"])
        except (KeyError, TypeError, ValueError, WebhookEndpoint.DoesNotExist, crypto.IntegrityFailure):
            return self._render(request)
        response = self._render(request, new_endpoint=endpoint, new_secret=secret)
        response["Cache-Control"] = "no-store"
        return response

    def post(self, request: HttpRequest) -> HttpResponse:
        action = request.POST.get("action", "register")
        if action == "register":
            url, events = request.POST.get("url", ""), request.POST.getlist("events")
            try:
                endpoint, secret = webhook_register(url=url, events=events)
            except ServiceError as exc:
                return self._render(request, error=exc.message, url=url, chosen=events, status=400)
            # Post/Redirect/Get: a reload of the page after this must not register a second endpoint. The secret
            # waits, sealed, in the session for the next GET only, which removes it and shows it once.
            request.session[NEW_SECRET_SESSION_KEY] = {
                "webhook": str(endpoint.pk),
                "sealed": _sealed_secret(str(endpoint.pk), secret),
            }
            response = redirect("analysis:webhooks")
            response["Cache-Control"] = "no-store"
            return response
        if action not in ("test", "revoke"):
            return self._render(request, error="Unknown action.", status=400)
        endpoint = self._endpoint(request.POST.get("webhook", ""))
        if action == "revoke":
            webhook_revoke(endpoint=endpoint)
            messages.success(request, f"Webhook to {endpoint.url} revoked: nothing more is sent to it.")
            return redirect("analysis:webhooks")
        try:
            webhook_send_test(endpoint=endpoint)
        except ServiceError as exc:
            return self._render(request, error=exc.message, status=exc.status)
        messages.success(
            request, f"Test event queued for {endpoint.url}: its outcome appears under Recent deliveries (reload)."
        )
        return redirect("analysis:webhooks")

    @staticmethod
    def _endpoint(raw: str) -> WebhookEndpoint:
        """The clinic's endpoint with this id; another clinic's, a missing one or a malformed id: 404."""
        try:
            return webhook_get(uuid.UUID(raw))
        except (ValueError, WebhookEndpoint.DoesNotExist) as exc:
            raise Http404 from exc
