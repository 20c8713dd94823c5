from django.urls import path

from . import views

app_name = "clinics"

urlpatterns = [
    path("", views.HomeView.as_view(), name="home"),
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", views.LogoutView.as_view(), name="logout"),
    path("login/verify/", views.MfaView.as_view(), name="mfa"),
    path("reauth/", views.ReauthView.as_view(), name="reauth"),
    path("password-reset/", views.PasswordResetView.as_view(), name="password-reset"),
    path(
        "password-reset/<str:uidb64>/<str:token>/",
        views.PasswordResetConfirmView.as_view(),
        name="password-reset-confirm",
    ),
    path("clinic/switch/", views.SwitchClinicView.as_view(), name="switch-clinic"),
    path("clinic/members/", views.MembersView.as_view(), name="members"),
    path("clinic/members/<uuid:pk>/", views.MemberUpdateView.as_view(), name="member-update"),
    path("clinic/members/<uuid:pk>/reset-mfa/", views.MemberMfaResetView.as_view(), name="member-mfa-reset"),
    path("account/", views.AccountView.as_view(), name="account"),
    path("account/password/", views.PasswordChangeView.as_view(), name="account-password"),
    path("account/recovery-codes/", views.RecoveryCodesView.as_view(), name="account-recovery-codes"),
    path("clinic/api-keys/", views.ApiKeysView.as_view(), name="api-keys"),
    path("clinic/api-keys/<uuid:pk>/revoke/", views.ApiKeyRevokeView.as_view(), name="api-key-revoke"),
    path("clinic/audit/", views.AuditView.as_view(), name="audit"),
    path("clinic/audit/export/", views.AuditExportView.as_view(), name="audit-export"),
]
