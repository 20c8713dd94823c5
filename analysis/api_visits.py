"""``GET /api/v1/visits/``: the clinic's visits with their report state, for practice systems.

Visits live in ``patients``; whether a visit's report is signed lives here in ``analysis``, so the list
does too (``patients`` never imports ``analysis``).
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from clinics import audit
from clinics.api.base import ClinicGenericAPIView
from patients.restricted import restricted_visible

from .selectors import visit_list


class VisitFilterInput(serializers.Serializer):
    patient = serializers.UUIDField(required=False, help_text="Only this patient's visits.")
    date = serializers.DateField(required=False, help_text="Visits on this day.")
    since = serializers.DateField(required=False, help_text="Visits on or after this day.")
    until = serializers.DateField(
        required=False, help_text="Visits before this day (not included), as the audit trail's `until`."
    )
    # default=None: an absent boolean in a query string would otherwise read as false
    signed = serializers.BooleanField(
        required=False,
        allow_null=True,
        default=None,
        help_text="true: visits with a signed report (also while an amendment is open); false: not signed yet.",
    )


class VisitOutput(serializers.Serializer):
    id = serializers.UUIDField()
    patient = serializers.UUIDField(source="patient_id")
    date = serializers.DateField(source="visit_date")
    created_at = serializers.DateTimeField()
    image_count = serializers.IntegerField()
    signed = serializers.BooleanField(help_text="A report version of this visit is signed.")
    report_version = serializers.IntegerField(allow_null=True, help_text="The latest signed version, or null.")
    signed_at = serializers.DateTimeField(allow_null=True, help_text="When the latest version was signed, or null.")
    amending = serializers.BooleanField(help_text="An amendment is open: the next signature makes a new version.")


class VisitListView(ClinicGenericAPIView):
    serializer_class = VisitOutput

    @extend_schema(
        summary="List the clinic's visits",
        description=(
            "The clinic's visits, newest first, with their image count and report state. Visits of restricted "
            "patients are listed only for dentists and clinic admins (never for API keys)."
        ),
        parameters=[VisitFilterInput],
        responses=VisitOutput(many=True),
    )
    def get(self, request: Request) -> Response:
        filters = VisitFilterInput(data=request.query_params)
        filters.is_valid(raise_exception=True)
        chosen = {name: value for name, value in filters.validated_data.items() if value is not None}
        page = self.paginate_queryset(visit_list(include_restricted=restricted_visible(request.access), **chosen))
        audit.record(
            action="visit.list",
            clinic_id=request.access.clinic.id,
            object_type="visit",
            details={
                "ids": [str(v.pk) for v in page],
                "filtered_by": sorted(chosen),
                # which patient was looked up is recorded even when they have no visit (an id, never a name)
                **({"patient_id": str(chosen["patient"])} if "patient" in chosen else {}),
            },
        )
        return self.get_paginated_response(VisitOutput(page, many=True).data)
