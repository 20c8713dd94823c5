from django.urls import path

from . import views, views_models, views_review, views_webhooks

app_name = "analysis"

urlpatterns = [
    path("visits/", views.WorklistView.as_view(), name="worklist"),
    path("visits/<uuid:pk>/report/", views.VisitReportPageView.as_view(), name="report"),
    path("visits/<uuid:pk>/report.pdf", views.VisitReportPdfView.as_view(), name="report-pdf"),
    path("visits/<uuid:pk>/review/", views_review.VisitReviewView.as_view(), name="review"),
    path("visits/<uuid:pk>/chart/", views_review.VisitChartView.as_view(), name="chart"),
    path("clinic/agreement/", views_review.AgreementPageView.as_view(), name="agreement"),
    path("clinic/review-settings/", views_review.ReviewSettingsView.as_view(), name="review-settings"),
    path("clinic/thresholds/", views_review.ThresholdsView.as_view(), name="thresholds"),
    path("clinic/model/", views_models.ClinicModelView.as_view(), name="clinic-model"),
    path("clinic/webhooks/", views_webhooks.WebhooksView.as_view(), name="webhooks"),
]
