from django.urls import path

from . import views_account, views_api_keys, views_audit, views_auth, views_clinic, views_invitations, views_members

app_name = "clinics"

urlpatterns = [
    path("", views_clinic.HomeView.as_view(), name="home"),
    path("login/", views_auth.LoginView.as_view(), name="login"),
    path("logout/", views_auth.LogoutView.as_view(), name="logout"),
    path("login/verify/", views_auth.MfaView.as_view(), name="mfa"),
    path("reauth/", views_auth.ReauthView.as_view(), name="reauth"),
    path("password-reset/", views_auth.PasswordResetView.as_view(), name="password-reset"),
    path(
        "password-reset/<str:uidb64>/<str:token>/",
        views_auth.PasswordResetConfirmView.as_view(),
        name="password-reset-confirm",
    ),
    path("clinic/switch/", views_clinic.SwitchClinicView.as_view(), name="switch-clinic"),
    path("clinic/pick/", views_clinic.PickClinicView.as_view(), name="pick-clinic"),
    path("invitations/accept/", views_invitations.InvitationAcceptView.as_view(), name="invitation-accept"),
    path("invitations/<str:token>/", views_invitations.InvitationLinkView.as_view(), name="invitation"),
    path(
        "clinic/invitations/<uuid:pk>/revoke/",
        views_invitations.InvitationRevokeView.as_view(),
        name="invitation-revoke",
    ),
    path("clinic/members/", views_members.MembersView.as_view(), name="members"),
    path("clinic/members/<uuid:pk>/", views_members.MemberUpdateView.as_view(), name="member-update"),
    path("clinic/members/<uuid:pk>/reset-mfa/", views_members.MemberMfaResetView.as_view(), name="member-mfa-reset"),
    path("account/", views_account.AccountView.as_view(), name="account"),
    path("account/password/", views_account.PasswordChangeView.as_view(), name="account-password"),
    path("account/recovery-codes/", views_account.RecoveryCodesView.as_view(), name="account-recovery-codes"),
    path("clinic/api-keys/", views_api_keys.ApiKeysView.as_view(), name="api-keys"),
    path("clinic/api-keys/<uuid:pk>/revoke/", views_api_keys.ApiKeyRevokeView.as_view(), name="api-key-revoke"),
    path("clinic/audit/", views_audit.AuditView.as_view(), name="audit"),
    path("clinic/audit/export/", views_audit.AuditExportView.as_view(), name="audit-export"),
]
