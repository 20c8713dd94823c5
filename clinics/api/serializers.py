from rest_framework import serializers

from ..models import AuditEvent


class TokenInput(serializers.Serializer):
    email = serializers.EmailField()
    password = serializers.CharField(max_length=1024, trim_whitespace=False)
    otp = serializers.CharField(max_length=16, required=False, allow_blank=True)
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


class AuditEventOutput(serializers.ModelSerializer):
    actor = serializers.CharField(source="actor_label")

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
        ]
        read_only_fields = fields
