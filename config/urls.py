from django.urls import include, path

urlpatterns = [
    path("", include("clinics.urls")),
    path("patients/", include("patients.urls")),
    path("", include("analysis.urls")),
    path("dicom/", include("dicom.urls")),
    path("api/v1/", include("config.api_urls")),
]

handler400 = "config.errors.bad_request"
handler404 = "config.errors.not_found"
handler500 = "config.errors.server_error"
