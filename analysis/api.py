from __future__ import annotations

import json
import re
from typing import Any

from django.http import Http404, HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from clinics import audit
from clinics.api.base import ClinicGenericAPIView
from clinics.api.docs import error_response
from clinics.api.output import DirectOutput
from clinics.services import ServiceError
from core import teeth
from patients.models import Image as PatientImage
from patients.models import Visit
from patients.restricted import restricted_image_ids, restricted_visible

from .fhir import report_bundle
from .models import Analysis, AnalysisStatus, Finding, RejectReason, Report
from .monitoring import agreement
from .reports import amendment_open, report_content, report_sign
from .reviews import finding_add, finding_review, finding_update, visit_note_get, visit_note_set
from .selectors import (
    FindingRow,
    analysis_get,
    analysis_list,
    analysis_settings,
    finding_get,
    finding_rows_attach,
    is_shown,
    thresholds_for,
    unfamiliar_hidden,
)
from .services import analysis_retry

TOOTH_HELP = (
    "The tooth as its FDI (ISO 3950) number: `11`-`48` permanent, `51`-`85` primary; null when none is assigned. "
    "Always FDI in the API, whatever notation the clinic reads on screen (see `tooth_display`)."
)


class FindingOutput(serializers.Serializer):
    id = serializers.UUIDField()
    condition = serializers.CharField()
    probability = serializers.FloatField(allow_null=True)
    box = serializers.ListField(child=serializers.FloatField(), allow_null=True, min_length=4, max_length=4)
    status = serializers.CharField()
    source = serializers.CharField()
    reviewed_by = serializers.SerializerMethodField()
    reason = serializers.CharField()
    tooth = serializers.CharField(allow_null=True, help_text=TOOTH_HELP, source="tooth_or_none")
    tooth_display = serializers.SerializerMethodField(
        help_text="The tooth in the clinic's notation (FDI, Universal or Palmer); null when none is assigned."
    )
    surfaces = serializers.CharField(
        help_text="Surface letters in canonical order (M, O, I, D, B, F, L, P), e.g. `MOD`; empty when none."
    )
    suggested_tooth = serializers.CharField(
        allow_null=True,
        source="suggested_tooth_or_none",
        help_text="A tooth proposed by automatic numbering (FDI), not yet confirmed; null when none.",
    )
    suggested_tooth_probability = serializers.FloatField(allow_null=True)
    note = serializers.CharField(help_text="The dentist's note on this finding.")
    version = serializers.IntegerField(
        help_text="Changes with every edit; also the response's `ETag`. Send it back as `If-Match` to edit."
    )

    def to_representation(self, finding: Finding) -> dict[str, Any]:
        """What DRF's field-by-field ``to_representation`` gives (tests compare the two), built directly: a page of
        analyses shows hundreds of findings, and the generic path was most of its CPU."""
        probability, suggested_probability = finding.probability, finding.suggested_tooth_probability
        return {
            "id": str(finding.id),
            "condition": str(finding.condition),
            "probability": None if probability is None else float(probability),
            "box": None if finding.box is None else [float(x) for x in finding.box],
            "status": str(finding.status),
            "source": str(finding.source),
            "reviewed_by": self.get_reviewed_by(finding),
            "reason": str(finding.reason),
            "tooth": finding.tooth_or_none,
            "tooth_display": self.get_tooth_display(finding),
            "surfaces": str(finding.surfaces),
            "suggested_tooth": finding.suggested_tooth_or_none,
            "suggested_tooth_probability": None if suggested_probability is None else float(suggested_probability),
            "note": str(finding.note),
            "version": int(finding.version),
        }

    def get_reviewed_by(self, finding: Finding | FindingRow) -> str | None:
        if not finding.reviewed_by_id:
            return None
        return finding.reviewed_by_email if isinstance(finding, FindingRow) else finding.reviewed_by.email

    def get_tooth_display(self, finding: Finding) -> str | None:
        if not finding.tooth:
            return None
        if "tooth_notation" not in self.context:
            self.context["tooth_notation"] = analysis_settings().tooth_notation
        return teeth.to_notation(finding.tooth, self.context["tooth_notation"])


class NotAssessableOutput(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()


class AnalysisOutput(DirectOutput):
    id = serializers.UUIDField()
    image = serializers.UUIDField(source="image_id")
    status = serializers.CharField()
    model = serializers.CharField(source="model_version.model_id")
    input_sha256 = serializers.CharField()
    scores = serializers.DictField(child=serializers.FloatField())
    failure_reason = serializers.CharField()
    not_assessable = serializers.SerializerMethodField(
        help_text="Set when the image gate refused the image (status `not_assessable`): the reason code "
        "(`wrong_modality`, `not_intraoral`, `blurred`, `too_dark`, `too_bright`, `too_small`, "
        "`out_of_distribution`) and a message for staff. The AI did not assess the image; it is not a "
        '"no findings" result.'
    )
    unfamiliar = serializers.BooleanField(
        help_text="The image passed the gate but is unlike the model's training images: its findings are less "
        "reliable (hidden when the clinic chooses so)."
    )
    clinic_model = serializers.CharField(
        source="clinic_model.model_id",
        allow_null=True,
        default=None,
        help_text="The clinic's own model that produced the scores, or null for the base model alone.",
    )
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)
    findings = serializers.SerializerMethodField()

    def to_representation(self, analysis: Analysis) -> dict[str, Any]:
        return self.represent(
            {
                "id": analysis.pk,
                "image": analysis.image_id,
                "status": analysis.status,
                "model": analysis.model_version.model_id,
                "input_sha256": analysis.input_sha256,
                "scores": analysis.scores,
                "failure_reason": analysis.failure_reason,
                "not_assessable": self.get_not_assessable(analysis),
                "unfamiliar": analysis.unfamiliar,
                "clinic_model": analysis.clinic_model.model_id if analysis.clinic_model_id else None,
                "created_at": analysis.created_at,
                "finished_at": analysis.finished_at,
                "findings": self.get_findings(analysis),
            }
        )

    @extend_schema_field(NotAssessableOutput(allow_null=True))
    def get_not_assessable(self, analysis: Analysis) -> dict[str, str] | None:
        if analysis.status != AnalysisStatus.NOT_ASSESSABLE:
            return None
        return {"code": analysis.not_assessable_code, "message": analysis.not_assessable_message}

    @extend_schema_field(FindingOutput(many=True))
    def get_findings(self, analysis: Analysis) -> list[dict[str, Any]]:
        thresholds = thresholds_for(analysis.model_version)
        show_all = self.context.get("all_findings", False)
        if "hide_unfamiliar" not in self.context:
            self.context["hide_unfamiliar"] = unfamiliar_hidden()
        hide = self.context["hide_unfamiliar"]
        rows = getattr(analysis, "finding_rows", None)  # a page of the list: attached by finding_rows_attach
        every = rows if rows is not None else analysis.findings.all()
        findings = [f for f in every if show_all or is_shown(f, thresholds, hide)]
        # One FindingOutput for every analysis of the page: building a serializer copies its fields, which cost
        # more than the findings themselves when done once per analysis.
        if "finding_output" not in self.context:
            self.context["finding_output"] = FindingOutput(context=self.context)
        child = self.context["finding_output"]
        return [child.to_representation(f) for f in findings]


class AnalysisFilterInput(serializers.Serializer):
    status = serializers.ChoiceField(choices=AnalysisStatus.choices, required=False)
    visit = serializers.UUIDField(required=False)


class FindingEditFields(serializers.Serializer):
    tooth = serializers.CharField(
        max_length=2,
        required=False,
        allow_blank=True,
        allow_null=True,
        help_text="FDI tooth number (`11`-`48`, `51`-`85`); empty or null clears it.",
    )
    surfaces = serializers.CharField(
        max_length=16, required=False, allow_blank=True, help_text="Surface letters, e.g. `MOD`; empty clears."
    )
    note = serializers.CharField(max_length=2000, required=False, allow_blank=True, trim_whitespace=True)


class FindingReviewInput(FindingEditFields):
    decision = serializers.ChoiceField(
        choices=["confirm", "reject", "adjust", "undo"],
        help_text="`undo` puts an AI suggestion's decision back to pending (before signing).",
    )
    reason = serializers.ChoiceField(choices=RejectReason.choices, required=False, allow_blank=True, default="")
    box = serializers.ListField(child=serializers.FloatField(), min_length=4, max_length=4, required=False)
    condition = serializers.CharField(max_length=40, required=False, allow_blank=True, default="")


IF_MATCH = OpenApiParameter(
    "If-Match",
    str,
    location=OpenApiParameter.HEADER,
    required=False,
    description="The `ETag` (version) the edit was made on; a stale one answers 412 `version_conflict`.",
)
_ETAG = re.compile(r'^\s*(?:W/)?"?(\d{1,9})"?\s*$')


def expected_version(request: Request) -> int | None:
    """The version named by ``If-Match`` (``"3"``, ``W/"3"`` or ``3``); None without one or for ``*``."""
    header = request.headers.get("If-Match", "").strip()
    if not header or header == "*":
        return None
    match = _ETAG.match(header)
    if match is None:
        raise ServiceError("invalid_if_match", 'If-Match must be the ETag of the finding, e.g. "3".')
    return int(match.group(1))


def with_etag(response: Response, version: int) -> Response:
    response["ETag"] = f'"{version}"'
    return response


def _edits(data: dict[str, Any]) -> dict[str, Any]:
    return {key: data[key] for key in ("tooth", "surfaces", "note") if key in data}


def _or_404(getter: Any, pk: object) -> Any:
    try:
        return getter(pk)
    except (Analysis.DoesNotExist, Finding.DoesNotExist) as exc:
        raise Http404 from exc


class AnalysisListView(ClinicGenericAPIView):
    serializer_class = AnalysisOutput
    keyset = ("-created_at", "id")  # ?cursor= pages (clinics.api.pagination)

    @extend_schema(
        summary="List analyses",
        parameters=[
            OpenApiParameter("status", str, enum=AnalysisStatus.values),
            OpenApiParameter("visit", OpenApiTypes.UUID, description="Only the analyses of this visit"),
        ],
        responses=AnalysisOutput(many=True),
    )
    def get(self, request: Request) -> Response:
        filters = AnalysisFilterInput(data=request.query_params)
        filters.is_valid(raise_exception=True)
        analyses = analysis_list(**filters.validated_data, findings=False)
        if not restricted_visible(request.access):
            analyses = analyses.exclude(image_id__in=restricted_image_ids())
        page = self.paginate_queryset(analyses)
        finding_rows_attach(page)
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
        summary="Get an analysis and its findings",
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


class AnalysisRetryView(ClinicGenericAPIView):
    serializer_class = AnalysisOutput

    def get_object(self) -> Analysis:
        return _or_404(analysis_get, self.kwargs["pk"])

    @extend_schema(
        summary="Run a failed analysis again",
        request=None,
        responses={
            200: AnalysisOutput,
            409: error_response("`analysis_not_failed`: only a failed analysis runs again; `report_signed`"),
        },
    )
    def post(self, request: Request, pk: str) -> Response:
        """Run a failed analysis again (queued; follow it at ``analyses/{id}/``)."""
        return Response(AnalysisOutput(analysis_retry(analysis=self.get_object())).data)


class FindingReviewView(ClinicGenericAPIView):
    serializer_class = FindingOutput

    def get_object(self) -> Finding:
        return _or_404(finding_get, self.kwargs["pk"])

    @extend_schema(
        summary="Review a finding",
        request=FindingReviewInput,
        parameters=[IF_MATCH],
        responses={
            200: FindingOutput,
            409: error_response("`report_signed`, `not_a_suggestion` or `already_pending`"),
            412: error_response("`version_conflict`: changed by someone else since that version (who and what)"),
        },
    )
    def post(self, request: Request, pk: str) -> Response:
        finding = self.get_object()
        data = FindingReviewInput(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        edits = _edits(fields)
        for key in edits:
            fields.pop(key)
        finding = finding_review(
            finding=finding, actor=request.user, expected_version=expected_version(request), **fields, **edits
        )
        return with_etag(Response(FindingOutput(finding).data), finding.version)


class FindingDetailView(ClinicGenericAPIView):
    """One finding (with its ``ETag``), and edits that do not decide it: tooth, surfaces, note."""

    serializer_class = FindingOutput

    def get_object(self) -> Finding:
        return _or_404(finding_get, self.kwargs["pk"])

    @extend_schema(summary="Get a finding", responses=FindingOutput)
    def get(self, request: Request, pk: str) -> Response:
        finding = self.get_object()
        audit.record(
            action="finding.view", clinic_id=request.access.clinic.id, object_type="finding", object_id=finding.pk
        )
        return with_etag(Response(FindingOutput(finding).data), finding.version)

    @extend_schema(
        summary="Assign a tooth, surfaces or a note to a finding",
        request=FindingEditFields,
        parameters=[IF_MATCH],
        responses={
            200: FindingOutput,
            409: error_response("`report_signed`"),
            412: error_response("`version_conflict`: changed by someone else since that version (who and what)"),
        },
    )
    def patch(self, request: Request, pk: str) -> Response:
        finding = self.get_object()
        data = FindingEditFields(data=request.data)
        data.is_valid(raise_exception=True)
        finding = finding_update(
            finding=finding,
            actor=request.user,
            expected_version=expected_version(request),
            **_edits(dict(data.validated_data)),
        )
        return with_etag(Response(FindingOutput(finding).data), finding.version)


class FindingAddInput(FindingEditFields):
    condition = serializers.CharField(max_length=40)
    box = serializers.ListField(child=serializers.FloatField(), min_length=4, max_length=4)


class ReportOutput(serializers.Serializer):
    id = serializers.UUIDField()
    visit = serializers.UUIDField(source="visit_id")
    version = serializers.IntegerField()
    signed_by = serializers.EmailField(source="signed_by.email")
    signed_at = serializers.DateTimeField()
    amends = serializers.UUIDField(source="amends_id", allow_null=True)
    amendment_reason = serializers.CharField()


class AmendmentInput(serializers.Serializer):
    reason = serializers.CharField(max_length=500)


class AmendmentOutput(serializers.Serializer):
    id = serializers.UUIDField()
    reason = serializers.CharField()


class AgreementRow(serializers.Serializer):
    model = serializers.CharField()
    condition = serializers.CharField()
    confirmed = serializers.IntegerField()
    rejected = serializers.IntegerField()
    pending = serializers.IntegerField()
    decided = serializers.IntegerField()
    ppv = serializers.FloatField(allow_null=True)
    added_by_clinicians = serializers.IntegerField()
    rejected_by_reason = serializers.DictField(child=serializers.IntegerField())


def _visit_or_404(pk: object) -> Visit:
    try:
        return Visit.objects.select_related("patient", "clinic").get(pk=pk)
    except Visit.DoesNotExist as exc:
        raise Http404 from exc


class ImageFindingAddView(ClinicGenericAPIView):
    serializer_class = FindingOutput

    def get_object(self) -> PatientImage:
        try:
            return PatientImage.objects.select_related("visit").get(pk=self.kwargs["pk"])
        except PatientImage.DoesNotExist as exc:
            raise Http404 from exc

    @extend_schema(summary="Add a finding the model missed", request=FindingAddInput, responses={201: FindingOutput})
    def post(self, request: Request, pk: str) -> Response:
        image = self.get_object()
        data = FindingAddInput(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        edits = _edits(fields)
        finding = finding_add(
            image=image, actor=request.user, condition=fields["condition"], box=fields["box"], **edits
        )
        return with_etag(Response(FindingOutput(finding).data, status=201), finding.version)


class VisitReportView(ClinicGenericAPIView):
    serializer_class = ReportOutput
    pagination_class = None  # every signed version, newest first (a visit has a handful)

    def get_object(self) -> Visit:
        return _visit_or_404(self.kwargs["pk"])

    @extend_schema(summary="List a visit's signed report versions", responses=ReportOutput(many=True))
    def get(self, request: Request, pk: str) -> Response:
        visit = self.get_object()
        reports = Report.objects.filter(visit=visit).select_related("signed_by").order_by("-version")
        audit.record(action="report.view", clinic_id=request.access.clinic.id, object_type="visit", object_id=visit.pk)
        return Response(ReportOutput(reports, many=True).data)

    @extend_schema(
        summary="Sign a visit's report",
        request=None,
        responses={
            201: ReportOutput,
            409: error_response(
                "`report_signed`, `analysis_pending` or `findings_pending`: the report cannot be signed now"
            ),
        },
    )
    def post(self, request: Request, pk: str) -> Response:
        report = report_sign(visit=self.get_object(), signer=request.user)
        return Response(ReportOutput(report).data, status=201)


class VisitAmendmentView(ClinicGenericAPIView):
    def get_object(self) -> Visit:
        return _visit_or_404(self.kwargs["pk"])

    @extend_schema(
        summary="Open an amendment of a signed report",
        request=AmendmentInput,
        responses={
            201: AmendmentOutput,
            409: error_response("`not_signed` (nothing to amend) or `amendment_open` (one is open already)"),
        },
    )
    def post(self, request: Request, pk: str) -> Response:
        visit = self.get_object()  # another clinic's visit is a 404 before any validation error
        data = AmendmentInput(data=request.data)
        data.is_valid(raise_exception=True)
        amendment = amendment_open(visit=visit, actor=request.user, reason=data.validated_data["reason"])
        return Response(AmendmentOutput(amendment).data, status=201)


class VisitNoteInput(serializers.Serializer):
    text = serializers.CharField(max_length=4000, allow_blank=True, trim_whitespace=True)


class VisitNoteOutput(serializers.Serializer):
    visit = serializers.UUIDField(source="visit_id")
    text = serializers.CharField()
    version = serializers.IntegerField(help_text="0 while nobody wrote one; also the response's `ETag`.")
    updated_by = serializers.EmailField(source="updated_by.email", allow_null=True, default=None)
    updated_at = serializers.DateTimeField(allow_null=True, source="updated_at_or_none")


class VisitNoteView(ClinicGenericAPIView):
    """The dentist's note on a visit's review (one per visit), with its ``ETag``."""

    serializer_class = VisitNoteOutput

    def get_object(self) -> Visit:
        return _visit_or_404(self.kwargs["pk"])

    @extend_schema(summary="Get a visit's review note", responses=VisitNoteOutput)
    def get(self, request: Request, pk: str) -> Response:
        visit = self.get_object()
        note = visit_note_get(visit)
        audit.record(
            action="visit.note.view", clinic_id=request.access.clinic.id, object_type="visit", object_id=visit.pk
        )
        return with_etag(Response(VisitNoteOutput(note).data), note.version)

    @extend_schema(
        summary="Write a visit's review note",
        request=VisitNoteInput,
        parameters=[IF_MATCH],
        responses={
            200: VisitNoteOutput,
            409: error_response("`report_signed`"),
            412: error_response("`version_conflict`: changed by someone else since that version (who and when)"),
        },
    )
    def put(self, request: Request, pk: str) -> Response:
        visit = self.get_object()
        data = VisitNoteInput(data=request.data)
        data.is_valid(raise_exception=True)
        note = visit_note_set(
            visit=visit,
            text=data.validated_data["text"],
            actor=request.user,
            expected_version=expected_version(request),
        )
        return with_etag(Response(VisitNoteOutput(note).data), note.version)


class AgreementView(ClinicGenericAPIView):
    serializer_class = AgreementRow
    pagination_class = None

    @extend_schema(summary="Agreement of dentists with the model", responses=AgreementRow(many=True))
    def get(self, request: Request) -> Response:
        audit.record(action="monitoring.view", clinic_id=request.access.clinic.id, object_type="agreement")
        return Response(AgreementRow(agreement(), many=True).data)


class VisitReportFhirView(ClinicGenericAPIView):
    """The latest signed report (or ``?version=n``) as a FHIR R4 Bundle: Patient, DiagnosticReport and
    one Observation per confirmed finding."""

    def get_object(self) -> Visit:
        return _visit_or_404(self.kwargs["pk"])

    @extend_schema(
        summary="Export a signed report as FHIR R4",
        parameters=[OpenApiParameter("version", int, description="A signed version (default: the latest)")],
        responses={
            (200, "application/fhir+json"): OpenApiTypes.OBJECT,
            409: error_response("`not_signed`: no signed report (of that version) to export"),
        },
    )
    def get(self, request: Request, pk: str) -> Response:
        visit = self.get_object()
        reports = Report.objects.filter(visit=visit).select_related("visit__patient").order_by("-version")
        version = request.query_params.get("version")
        if version:
            if not version.isdigit():
                raise ServiceError("invalid_version", "version must be a positive integer.")
            reports = reports.filter(version=int(version))
        report = reports.first()
        if report is None:
            raise ServiceError("not_signed", "This visit has no signed report (version) to export.", 409)
        audit.record(
            action="report.export",
            clinic_id=request.access.clinic.id,
            object_type="report",
            object_id=report.pk,
            details={"format": "fhir-r4"},
        )
        body = json.dumps(report_bundle(report_content(report)))
        response = HttpResponse(body, content_type="application/fhir+json")
        response["Cache-Control"] = "no-store"
        return response
