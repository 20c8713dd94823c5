"""Webhooks API for clinic admins (user tokens only; ``webhook.manage`` is never granted to an API key):
register, list, inspect, send a test event, list deliveries, revoke."""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from clinics.api.base import ClinicGenericAPIView
from clinics.api.docs import error_response

from .models import WebhookDelivery, WebhookEndpoint
from .webhooks import (
    WEBHOOK_EVENTS,
    delivery_last_attempt,
    webhook_deliveries,
    webhook_get,
    webhook_list,
    webhook_register,
    webhook_revoke,
    webhook_send_test,
)

DELIVERY_OUTCOMES = ["pending", "delivered", "failed", "cancelled"]


class WebhookInput(serializers.Serializer):
    url = serializers.CharField(
        max_length=500,
        help_text="https URL of the receiver (http only to localhost or 127.0.0.1 in development).",
    )
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=list(WEBHOOK_EVENTS)),
        required=False,
        allow_empty=True,
        help_text="Events to receive; none or empty: every event.",
    )


class WebhookOutput(serializers.Serializer):
    id = serializers.UUIDField()
    url = serializers.CharField()
    events = serializers.ListField(child=serializers.CharField(), help_text="Empty: every event.")
    is_active = serializers.BooleanField(help_text="False once revoked.")
    created_at = serializers.DateTimeField()
    revoked_at = serializers.DateTimeField(allow_null=True)


class WebhookCreatedOutput(WebhookOutput):
    secret = serializers.CharField(
        help_text="Signing secret, shown in this answer only: store it now. X-DentalScan-Signature is "
        "t=<unix seconds>,v1=<hex HMAC-SHA256(secret, '<t>.<raw body>')>."
    )


class WebhookDeliveryOutput(serializers.Serializer):
    id = serializers.UUIDField()
    webhook = serializers.UUIDField(source="endpoint_id")
    event = serializers.CharField()
    created_at = serializers.DateTimeField()
    attempts = serializers.IntegerField()
    last_status_code = serializers.SerializerMethodField(help_text="HTTP status of the last attempt, if answered.")
    last_error = serializers.SerializerMethodField(
        help_text="What went wrong with the last attempt, as a short category (never the error's text): e.g. "
        "timeout, connection_refused, connection_closed, tls_error, dns_error, address_not_allowed (the host "
        "resolved to a non-public address), redirect_refused (a 3xx: redirects are never followed), "
        "http_status_<code>, bad_response, secret_unavailable; empty after a success."
    )
    outcome = serializers.ChoiceField(
        choices=DELIVERY_OUTCOMES,
        source="status",
        help_text="pending (being sent or retried), delivered (2xx), failed (gave up after retries), "
        "cancelled (revoked first).",
    )
    delivered_at = serializers.DateTimeField(allow_null=True)

    @extend_schema_field(serializers.IntegerField(allow_null=True))
    def get_last_status_code(self, delivery: WebhookDelivery) -> int | None:
        return delivery_last_attempt(delivery).get("status")

    @extend_schema_field(serializers.CharField(allow_blank=True))
    def get_last_error(self, delivery: WebhookDelivery) -> str:
        return delivery_last_attempt(delivery).get("error") or ""


def _endpoint_or_404(pk: object) -> WebhookEndpoint:
    try:
        return webhook_get(pk)
    except WebhookEndpoint.DoesNotExist as exc:
        raise Http404 from exc


class WebhookListView(ClinicGenericAPIView):
    serializer_class = WebhookOutput

    @extend_schema(
        summary="List the clinic's webhooks",
        description="Active ones first. The signing secrets are never included.",
        responses=WebhookOutput(many=True),
    )
    def get(self, request: Request) -> Response:
        page = self.paginate_queryset(webhook_list())
        return self.get_paginated_response(WebhookOutput(page, many=True).data)

    @extend_schema(
        summary="Register a webhook",
        description="Creates an endpoint and returns its signing secret, once: it cannot be shown again.",
        request=WebhookInput,
        responses={
            201: WebhookCreatedOutput,
            400: error_response(
                "`validation_error` (per field), `invalid_url` (not https, credentials in it, an internal "
                "address, or http to anything but localhost outside development) or `invalid_event`"
            ),
        },
    )
    def post(self, request: Request) -> Response:
        data = WebhookInput(data=request.data)
        data.is_valid(raise_exception=True)
        endpoint, secret = webhook_register(url=data.validated_data["url"], events=data.validated_data.get("events"))
        response = Response({**WebhookOutput(endpoint).data, "secret": secret}, status=201)
        response["Cache-Control"] = "no-store"
        return response


class WebhookDetailView(ClinicGenericAPIView):
    serializer_class = WebhookOutput

    def get_object(self) -> WebhookEndpoint:
        return _endpoint_or_404(self.kwargs["pk"])

    @extend_schema(summary="Show a webhook", responses=WebhookOutput)
    def get(self, request: Request, pk: str) -> Response:
        return Response(WebhookOutput(self.get_object()).data)

    @extend_schema(
        summary="Revoke a webhook",
        description="Nothing more is sent to it and deliveries waiting for a retry are cancelled; the webhook "
        "and its delivery history stay listed. Revoking a revoked webhook changes nothing.",
        responses={204: None},
    )
    def delete(self, request: Request, pk: str) -> Response:
        webhook_revoke(endpoint=self.get_object())
        return Response(status=204)


class WebhookTestView(ClinicGenericAPIView):
    serializer_class = WebhookDeliveryOutput

    def get_object(self) -> WebhookEndpoint:
        return _endpoint_or_404(self.kwargs["pk"])

    @extend_schema(
        summary="Send a test event to a webhook",
        description="Queues a signed `webhook.test` event (data: `webhook_id`) to this webhook only, delivered "
        "and retried like every event; follow it at `webhooks/{id}/deliveries/`.",
        request=None,
        responses={202: WebhookDeliveryOutput, 409: error_response("`webhook_revoked`: the webhook is revoked")},
    )
    def post(self, request: Request, pk: str) -> Response:
        delivery = webhook_send_test(endpoint=self.get_object())
        return Response(WebhookDeliveryOutput(delivery).data, status=202)


class WebhookDeliveryListView(ClinicGenericAPIView):
    serializer_class = WebhookDeliveryOutput

    def get_object(self) -> WebhookEndpoint:
        return _endpoint_or_404(self.kwargs["pk"])

    @extend_schema(
        summary="List a webhook's deliveries",
        description="Newest first, with the outcome and the last attempt's answer.",
        responses=WebhookDeliveryOutput(many=True),
    )
    def get(self, request: Request, pk: str) -> Response:
        page = self.paginate_queryset(webhook_deliveries(self.get_object()))
        return self.get_paginated_response(WebhookDeliveryOutput(page, many=True).data)
