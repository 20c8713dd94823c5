from django.urls import path

from . import views

app_name = "dicom"

urlpatterns = [
    path("inbox/", views.InboxView.as_view(), name="inbox"),
    path("settings/", views.SettingsView.as_view(), name="settings"),
]
