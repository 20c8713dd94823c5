from django.urls import path

from . import views

app_name = "patients"

urlpatterns = [
    path("", views.PatientListView.as_view(), name="list"),
    path("<uuid:pk>/", views.PatientDetailView.as_view(), name="detail"),
    path("<uuid:pk>/upload/", views.UploadView.as_view(), name="upload"),
    path("<uuid:pk>/export/", views.PatientExportView.as_view(), name="export"),
    path("<uuid:pk>/erase/", views.PatientEraseView.as_view(), name="erase"),
    path("<uuid:pk>/restrict/", views.PatientRestrictView.as_view(), name="restrict"),
    path("<uuid:pk>/break-glass/", views.BreakGlassView.as_view(), name="break-glass"),
    path("images/<uuid:pk>/", views.ImageView.as_view(), name="image"),
]
