from rest_framework import serializers

from ..models import AuditEvent


class ErrorBodySerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Stable, machine-readable error code.")
    message = serializers.CharField(help_text="For people; may change.")
    details = serializers.JSONField(allow_null=True, help_text="Per-field messages, retry delay or null.")


class ErrorSerializer(serializers.Serializer):
    """Every error answer of the API: ``{"error": {"code", "message", "details"}}``."""

    error = ErrorBodySerializer()


class TokenInput(serializers.Serializer):
    email = serializers.EmailField()
    password = serializers.CharField(max_length=1024, trim_whitespace=False)
    otp = serializers.CharField(
        max_length=64, required=False, allow_blank=True, help_text="Authenticator code, or a recovery code."
    )
    clinic = serializers.UUIDField(required=False, help_text="Only for people in several clinics.")


class TokenOutput(serializers.Serializer):
    token = serializers.CharField()
    expires_at = serializers.DateTimeField()
    clinic = serializers.UUIDField()


class AuditFilterInput(serializers.Serializer):
    since = serializers.DateTimeField(required=False)
    until = serializers.DateTimeField(required=False)
    action = serializers.CharField(required=False, max_length=64)
    actor = serializers.CharField(required=False, max_length=254)


class AuditExportInput(AuditFilterInput):
    format = serializers.ChoiceField(choices=["csv", "json"], default="json")


class AuditExportRowOutput(serializers.Serializer):
    """One event of ``GET /api/v1/audit-events/export?format=json`` (``clinics.exports.event_row``)."""

    chain = serializers.CharField()
    seq = serializers.IntegerField(allow_null=True, help_text="Null until the event is sealed into its chain.")
    created_at = serializers.DateTimeField()
    action = serializers.CharField()
    outcome = serializers.CharField()
    actor = serializers.CharField(allow_blank=True)
    actor_user_id = serializers.UUIDField(allow_null=True)
    actor_api_key_id = serializers.UUIDField(allow_null=True)
    object_type = serializers.CharField(allow_blank=True)
    object_id = serializers.CharField(allow_blank=True)
    ip = serializers.IPAddressField(allow_null=True)
    request_id = serializers.CharField(allow_blank=True)
    details = serializers.JSONField()
    prev_hash = serializers.CharField(allow_null=True)
    hash = serializers.CharField(allow_null=True)
    sealed = serializers.BooleanField(help_text="False: recorded, not yet sealed into the hash chain (seconds).")


class AuditEventOutput(serializers.ModelSerializer):
    actor = serializers.CharField(source="actor_label")
    sealed = serializers.BooleanField(
        read_only=True, help_text="False: recorded, not yet sealed into the hash chain (seq, prev_hash, hash null)."
    )

    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "chain",
            "seq",
            "created_at",
            "action",
            "outcome",
            "actor",
            "actor_user",
            "actor_api_key",
            "object_type",
            "object_id",
            "ip",
            "request_id",
            "details",
            "prev_hash",
            "hash",
            "sealed",
        ]
        read_only_fields = fields
