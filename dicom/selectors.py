"""Reads of the DICOM app, in the clinic scope of the caller."""

from __future__ import annotations

from django.db.models import QuerySet

from .models import DicomInstance, DicomNode, DicomSend, InstanceStatus


def dicom_node() -> DicomNode | None:
    return DicomNode.objects.first()


def inbox_list() -> QuerySet[DicomInstance]:
    """Instances waiting for staff to say whose they are, oldest first."""
    return DicomInstance.objects.filter(status=InstanceStatus.UNMATCHED).order_by("received_at", "id")


def inbox_get(pk: object) -> DicomInstance:
    return DicomInstance.objects.get(pk=pk, status=InstanceStatus.UNMATCHED)


def send_list() -> QuerySet[DicomSend]:
    """Every object sent (or being sent) to the clinic's PACS, newest first: failures first in the admin's view."""
    return DicomSend.objects.select_related("report").order_by("-created_at", "id")


def send_get(pk: object) -> DicomSend:
    return DicomSend.objects.get(pk=pk)


def send_last_detail(send: DicomSend) -> str:
    return (send.attempt_log[-1].get("detail", "") if send.attempt_log else "") or ""
