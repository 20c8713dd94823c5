"""REST API version 1: every route in the ``api`` namespace, each with a ROUTE_PERMISSIONS entry."""

from django.urls import path

from analysis import api as analysis_api
from analysis import api_images as image_api
from analysis import api_visits as visit_api
from analysis import api_webhooks as webhook_api
from clinics.api import views as clinic_api
from clinics.api.docs import ApiDocsView, SchemaView
from dicom import api as dicom_api
from patients import api as patient_api
from patients.api_breakglass import PatientBreakGlassView

app_name = "api"

urlpatterns = [
    path("schema/", SchemaView.as_view(), name="schema"),
    path("docs/", ApiDocsView.as_view(url_name="api:schema"), name="docs"),
    path("auth/token/", clinic_api.TokenView.as_view(), name="token"),
    path("patients/", patient_api.PatientListView.as_view(), name="patient-list"),
    path("patients/search/", patient_api.PatientSearchView.as_view(), name="patient-search"),
    path("patients/<uuid:pk>/", patient_api.PatientDetailView.as_view(), name="patient-detail"),
    path("patients/<uuid:pk>/export", patient_api.PatientExportView.as_view(), name="patient-export"),
    path("patients/<uuid:pk>/images/", image_api.PatientImageListView.as_view(), name="patient-image-list"),
    path("patients/<uuid:pk>/images/batch/", image_api.PatientImageBatchView.as_view(), name="patient-image-batch"),
    path("patients/<uuid:pk>/break-glass/", PatientBreakGlassView.as_view(), name="patient-break-glass"),
    path("images/<uuid:pk>/", patient_api.ImageDetailView.as_view(), name="image-detail"),
    path("images/<uuid:pk>/file", patient_api.ImageFileView.as_view(), name="image-file"),
    path("analyses/", analysis_api.AnalysisListView.as_view(), name="analysis-list"),
    path("analyses/<uuid:pk>/", analysis_api.AnalysisDetailView.as_view(), name="analysis-detail"),
    path("analyses/<uuid:pk>/retry/", analysis_api.AnalysisRetryView.as_view(), name="analysis-retry"),
    path("findings/<uuid:pk>/", analysis_api.FindingDetailView.as_view(), name="finding-detail"),
    path("findings/<uuid:pk>/review/", analysis_api.FindingReviewView.as_view(), name="finding-review"),
    path("images/<uuid:pk>/findings/", analysis_api.ImageFindingAddView.as_view(), name="image-finding-add"),
    path("visits/", visit_api.VisitListView.as_view(), name="visit-list"),
    path("visits/<uuid:pk>/report/", analysis_api.VisitReportView.as_view(), name="visit-report"),
    path("visits/<uuid:pk>/note/", analysis_api.VisitNoteView.as_view(), name="visit-note"),
    path("visits/<uuid:pk>/amendments/", analysis_api.VisitAmendmentView.as_view(), name="visit-amendment"),
    path("visits/<uuid:pk>/report/fhir", analysis_api.VisitReportFhirView.as_view(), name="visit-report-fhir"),
    path("monitoring/agreement/", analysis_api.AgreementView.as_view(), name="monitoring-agreement"),
    path("webhooks/", webhook_api.WebhookListView.as_view(), name="webhook-list"),
    path("webhooks/<uuid:pk>/", webhook_api.WebhookDetailView.as_view(), name="webhook-detail"),
    path("webhooks/<uuid:pk>/test/", webhook_api.WebhookTestView.as_view(), name="webhook-test"),
    path("webhooks/<uuid:pk>/deliveries/", webhook_api.WebhookDeliveryListView.as_view(), name="webhook-deliveries"),
    path("dicom/node/", dicom_api.DicomNodeView.as_view(), name="dicom-node"),
    path("dicom/inbox/", dicom_api.InboxListView.as_view(), name="dicom-inbox"),
    path("dicom/inbox/<uuid:pk>/assign/", dicom_api.InboxAssignView.as_view(), name="dicom-inbox-assign"),
    path("dicom/sends/", dicom_api.SendListView.as_view(), name="dicom-send-list"),
    path("dicom/sends/<uuid:pk>/resend/", dicom_api.SendResendView.as_view(), name="dicom-send-resend"),
    path("audit-events/", clinic_api.AuditEventListView.as_view(), name="audit-event-list"),
    path("audit-events/export", clinic_api.AuditEventExportView.as_view(), name="audit-event-export"),
]
