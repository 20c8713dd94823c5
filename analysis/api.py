from __future__ import annotations

from typing import Any

from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from clinics import audit
from clinics.api.base import ClinicGenericAPIView

from .models import Analysis, AnalysisStatus, Finding, RejectReason
from .reviews import finding_review
from .selectors import analysis_get, analysis_list, finding_get, is_shown, thresholds_for


class FindingOutput(serializers.Serializer):
    id = serializers.UUIDField()
    condition = serializers.CharField()
    probability = serializers.FloatField(allow_null=True)
    box = serializers.ListField(child=serializers.FloatField(), allow_null=True, min_length=4, max_length=4)
    status = serializers.CharField()
    source = serializers.CharField()
    reviewed_by = serializers.SerializerMethodField()
    reason = serializers.CharField()

    def get_reviewed_by(self, finding: Finding) -> str | None:
        return finding.reviewed_by.email if finding.reviewed_by_id else None


class AnalysisOutput(serializers.Serializer):
    id = serializers.UUIDField()
    image = serializers.UUIDField(source="image_id")
    status = serializers.CharField()
    model = serializers.CharField(source="model_version.model_id")
    input_sha256 = serializers.CharField()
    scores = serializers.DictField(child=serializers.FloatField())
    failure_reason = serializers.CharField()
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)
    findings = serializers.SerializerMethodField()

    @extend_schema_field(FindingOutput(many=True))
    def get_findings(self, analysis: Analysis) -> list[dict[str, Any]]:
        thresholds = thresholds_for(analysis.model_version)
        show_all = self.context.get("all_findings", False)
        findings = [f for f in analysis.findings.all() if show_all or is_shown(f, thresholds)]
        return FindingOutput(findings, many=True).data


class FindingReviewInput(serializers.Serializer):
    decision = serializers.ChoiceField(choices=["confirm", "reject"])
    reason = serializers.ChoiceField(choices=RejectReason.choices, required=False, allow_blank=True, default="")


def _or_404(getter: Any, pk: object) -> Any:
    try:
        return getter(pk)
    except (Analysis.DoesNotExist, Finding.DoesNotExist) as exc:
        raise Http404 from exc


class AnalysisListView(ClinicGenericAPIView):
    serializer_class = AnalysisOutput

    @extend_schema(
        parameters=[OpenApiParameter("status", str, enum=AnalysisStatus.values)], responses=AnalysisOutput(many=True)
    )
    def get(self, request: Request) -> Response:
        page = self.paginate_queryset(analysis_list(status=request.query_params.get("status")))
        audit.record(
            action="analysis.list",
            clinic_id=request.access.clinic.id,
            object_type="analysis",
            details={"ids": [str(a.pk) for a in page]},
        )
        return self.get_paginated_response(AnalysisOutput(page, many=True).data)


class AnalysisDetailView(ClinicGenericAPIView):
    serializer_class = AnalysisOutput

    def get_object(self) -> Analysis:
        return _or_404(analysis_get, self.kwargs["pk"])

    @extend_schema(
        parameters=[OpenApiParameter("all", bool, description="Include candidates below the clinic's thresholds")],
        responses=AnalysisOutput,
    )
    def get(self, request: Request, pk: str) -> Response:
        analysis = self.get_object()
        audit.record(
            action="analysis.view", clinic_id=request.access.clinic.id, object_type="analysis", object_id=analysis.pk
        )
        context = {"all_findings": request.query_params.get("all") in ("1", "true")}
        return Response(AnalysisOutput(analysis, context=context).data)


class FindingReviewView(ClinicGenericAPIView):
    serializer_class = FindingOutput

    def get_object(self) -> Finding:
        return _or_404(finding_get, self.kwargs["pk"])

    @extend_schema(request=FindingReviewInput, responses=FindingOutput)
    def post(self, request: Request, pk: str) -> Response:
        finding = self.get_object()
        data = FindingReviewInput(data=request.data)
        data.is_valid(raise_exception=True)
        finding = finding_review(finding=finding, actor=request.user, **data.validated_data)
        return Response(FindingOutput(finding).data)
