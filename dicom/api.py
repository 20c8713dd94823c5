"""DICOM API: the clinic's node settings and the results sent back (clinic admins), and the inbox of received
images that matched no patient (every member: staff assign them)."""

from __future__ import annotations

from typing import Any

from django.http import Http404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from clinics.api.base import ClinicGenericAPIView
from clinics.api.docs import error_response
from patients.models import Patient
from patients.selectors import patient_get

from .models import DicomInstance, DicomNode, DicomSend
from .selectors import dicom_node, inbox_get, inbox_list, send_get, send_last_detail, send_list
from .services import dicom_node_configure, inbox_assign, inbox_preview, send_resend


class NodeInput(serializers.Serializer):
    called_ae = serializers.CharField(max_length=16, help_text="The AE title the practice's systems call.")
    calling_aes = serializers.ListField(child=serializers.CharField(max_length=16), min_length=1)
    calling_ips = serializers.ListField(child=serializers.CharField(max_length=50), required=False, default=list)
    dest_ae = serializers.CharField(max_length=16, required=False, allow_blank=True, default="")
    dest_host = serializers.CharField(max_length=255, required=False, allow_blank=True, default="")
    dest_port = serializers.IntegerField(required=False, allow_null=True, default=None, min_value=1, max_value=65535)
    dest_tls = serializers.BooleanField(required=False, default=False)
    send_preliminary = serializers.BooleanField(required=False, default=False)
    send_secondary_capture = serializers.BooleanField(required=False, default=True)


class NodeOutput(serializers.Serializer):
    called_ae = serializers.CharField(help_text="Empty until the settings are saved.")
    calling_aes = serializers.ListField(child=serializers.CharField())
    calling_ips = serializers.ListField(child=serializers.CharField(), help_text="Empty: any address.")
    dest_ae = serializers.CharField(allow_blank=True)
    dest_host = serializers.CharField(allow_blank=True)
    dest_port = serializers.IntegerField(allow_null=True)
    dest_tls = serializers.BooleanField()
    send_preliminary = serializers.BooleanField()
    send_secondary_capture = serializers.BooleanField()
    updated_at = serializers.DateTimeField()


class InboxOutput(serializers.Serializer):
    id = serializers.UUIDField()
    modality = serializers.CharField()
    calling_ae = serializers.CharField()
    received_at = serializers.DateTimeField()
    dicom = serializers.SerializerMethodField(
        help_text="Patient ID, name, birth date and study date as received; `suggested`: the practice id of the one "
        "patient with the same name and birth date (a hint to check, never assigned by itself), else empty."
    )

    def get_dicom(self, instance: DicomInstance) -> dict[str, str]:
        return inbox_preview(instance)


class NewPatientInput(serializers.Serializer):
    external_id = serializers.CharField(max_length=100)
    given_name = serializers.CharField(max_length=100)
    family_name = serializers.CharField(max_length=100)
    date_of_birth = serializers.DateField()


class AssignInput(serializers.Serializer):
    patient = serializers.UUIDField(required=False, help_text="An existing patient of the clinic.")
    new_patient = NewPatientInput(required=False, help_text="Or create this patient.")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if ("patient" in attrs) == ("new_patient" in attrs):
            raise serializers.ValidationError("Give either patient or new_patient.")
        return attrs


class AssignOutput(serializers.Serializer):
    id = serializers.UUIDField()
    status = serializers.CharField()
    patient = serializers.UUIDField(source="patient_id")
    image = serializers.UUIDField(source="image_id")


class SendOutput(serializers.Serializer):
    id = serializers.UUIDField()
    kind = serializers.ChoiceField(choices=["sr", "sc"], help_text="sr: structured report; sc: secondary capture.")
    report = serializers.UUIDField(source="report_id", allow_null=True)
    visit = serializers.UUIDField(source="visit_id")
    preliminary = serializers.BooleanField()
    status = serializers.ChoiceField(choices=["pending", "sent", "failed"])
    attempts = serializers.IntegerField()
    last_error = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    sent_at = serializers.DateTimeField(allow_null=True)

    def get_last_error(self, send: DicomSend) -> str:
        return "" if send.status == "sent" else send_last_detail(send)


class DicomNodeView(ClinicGenericAPIView):
    serializer_class = NodeOutput
    pagination_class = None

    @extend_schema(
        summary="Show the clinic's DICOM settings",
        description="Before they are set: empty titles, no destination.",
        responses={200: NodeOutput},
    )
    def get(self, request: Request) -> Response:
        return Response(NodeOutput(dicom_node() or DicomNode()).data)

    @extend_schema(
        summary="Set the clinic's DICOM settings",
        request=NodeInput,
        responses={200: NodeOutput, 409: error_response("`called_ae_taken`")},
    )
    def put(self, request: Request) -> Response:
        data = NodeInput(data=request.data)
        data.is_valid(raise_exception=True)
        node: DicomNode = dicom_node_configure(**data.validated_data)
        return Response(NodeOutput(node).data)


class InboxListView(ClinicGenericAPIView):
    serializer_class = InboxOutput

    @extend_schema(summary="List received DICOM images that matched no patient", responses=InboxOutput(many=True))
    def get(self, request: Request) -> Response:
        page = self.paginate_queryset(inbox_list())
        return self.get_paginated_response(InboxOutput(page, many=True).data)


class InboxAssignView(ClinicGenericAPIView):
    serializer_class = AssignOutput

    def get_object(self) -> DicomInstance:
        try:
            return inbox_get(self.kwargs["pk"])
        except DicomInstance.DoesNotExist as exc:
            raise Http404 from exc

    @extend_schema(
        summary="Assign an inbox image to a patient (or a new one); it is then stored and analysed",
        request=AssignInput,
        responses={200: AssignOutput, 409: error_response("`not_in_inbox` or `duplicate_external_id`")},
    )
    def post(self, request: Request, pk: str) -> Response:
        instance = self.get_object()
        data = AssignInput(data=request.data)
        data.is_valid(raise_exception=True)
        patient = None
        if "patient" in data.validated_data:
            try:
                patient = patient_get(data.validated_data["patient"])
            except Patient.DoesNotExist as exc:
                raise Http404 from exc
        assigned = inbox_assign(
            instance=instance, actor=request.user, patient=patient, create=data.validated_data.get("new_patient")
        )
        return Response(AssignOutput(assigned).data)


class SendListView(ClinicGenericAPIView):
    serializer_class = SendOutput

    @extend_schema(summary="List the results sent to the clinic's PACS", responses=SendOutput(many=True))
    def get(self, request: Request) -> Response:
        page = self.paginate_queryset(send_list())
        return self.get_paginated_response(SendOutput(page, many=True).data)


class SendResendView(ClinicGenericAPIView):
    serializer_class = SendOutput

    def get_object(self) -> DicomSend:
        try:
            return send_get(self.kwargs["pk"])
        except DicomSend.DoesNotExist as exc:
            raise Http404 from exc

    @extend_schema(
        summary="Send a result to the PACS again (same object, same UIDs)", request=None, responses={202: SendOutput}
    )
    def post(self, request: Request, pk: str) -> Response:
        return Response(SendOutput(send_resend(send=self.get_object())).data, status=202)
