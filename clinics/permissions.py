"""The permission map: who may do what, written once.

``ROLE_PERMISSIONS`` says which roles hold each permission; ``API_KEY_GRANTABLE`` which
permissions a clinic API key may carry; ``ROUTE_PERMISSIONS`` which permission each URL name
needs per HTTP method. The HTML base view and the API permission class both read these tables,
and the access-matrix tests are generated from them and from the URL conf: a URL without an
entry here fails the suite, and at run time it answers with an error instead of being open.
"""

from __future__ import annotations

from typing import Final

from .models import Role

STAFF, DENTIST, ADMIN = Role.STAFF, Role.DENTIST, Role.CLINIC_ADMIN
ALL_ROLES: Final = frozenset({STAFF, DENTIST, ADMIN})

# Special route markers.
PUBLIC: Final = "public"  # anyone, no authentication (log-in page, token endpoint, schema)
MEMBER: Final = "member"  # any authenticated member of a clinic, whatever the role

ROLE_PERMISSIONS: Final[dict[str, frozenset[str]]] = {
    "clinic.view": ALL_ROLES,
    "patient.view": ALL_ROLES,
    "patient.create": ALL_ROLES,
    "patient.update": ALL_ROLES,
    "patient.export": frozenset({ADMIN}),
    "patient.erase": frozenset({ADMIN}),
    # Restricted records: open to these roles; other members need emergency (break-glass) access.
    "patient.view_restricted": frozenset({DENTIST, ADMIN}),
    "patient.restrict": frozenset({DENTIST, ADMIN}),
    "patient.break_glass": ALL_ROLES,
    "image.upload": ALL_ROLES,
    "image.view": ALL_ROLES,
    "analysis.view": ALL_ROLES,
    "finding.review": frozenset({DENTIST}),
    "finding.add": frozenset({DENTIST}),
    "report.view": ALL_ROLES,
    "report.sign": frozenset({DENTIST}),
    "monitoring.view": frozenset({ADMIN}),
    "thresholds.manage": frozenset({ADMIN}),
    "model.manage": frozenset({ADMIN}),
    "webhook.manage": frozenset({ADMIN}),
    # DICOM: the node settings and the results sent to the PACS (admins); the inbox of unmatched images (everyone)
    "dicom.manage": frozenset({ADMIN}),
    "dicom.inbox": ALL_ROLES,
    "member.view": frozenset({ADMIN}),
    "member.manage": frozenset({ADMIN}),
    "apikey.manage": frozenset({ADMIN}),
    "audit.view": frozenset({ADMIN}),
    "audit.export": frozenset({ADMIN}),
}

# What a clinic API key (a third-party system) may be granted; never member, webhook or audit management.
API_KEY_GRANTABLE: Final = frozenset(
    {"patient.view", "patient.create", "patient.update", "image.upload", "image.view", "analysis.view", "report.view"}
)
API_KEY_DEFAULT_SCOPES: Final = sorted(API_KEY_GRANTABLE)

# URL name -> {method: permission}. "GET" also covers HEAD and OPTIONS.
ROUTE_PERMISSIONS: Final[dict[str, dict[str, str]]] = {
    # HTML
    "clinics:login": {"GET": PUBLIC, "POST": PUBLIC},
    # any logged-in person, also before picking a clinic (the view sends anonymous visitors to the log-in page)
    "clinics:logout": {"POST": PUBLIC},
    "clinics:mfa": {"GET": PUBLIC, "POST": PUBLIC},
    "clinics:password-reset": {"GET": PUBLIC, "POST": PUBLIC},
    "clinics:password-reset-confirm": {"GET": PUBLIC, "POST": PUBLIC},
    "clinics:reauth": {"GET": MEMBER, "POST": MEMBER},
    "clinics:home": {"GET": "clinic.view"},
    "clinics:switch-clinic": {"POST": MEMBER},
    # logged in, no clinic picked yet: the view itself sends anonymous visitors to the log-in page
    "clinics:pick-clinic": {"GET": PUBLIC, "POST": PUBLIC},
    # the mailed link and its acceptance: whoever holds the link (the view checks who is logged in)
    "clinics:invitation": {"GET": PUBLIC},
    "clinics:invitation-accept": {"GET": PUBLIC, "POST": PUBLIC},
    "clinics:invitation-revoke": {"POST": "member.manage"},
    "clinics:members": {"GET": "member.view", "POST": "member.manage"},
    "clinics:member-update": {"POST": "member.manage"},
    "clinics:member-mfa-reset": {"POST": "member.manage"},
    "clinics:account": {"GET": MEMBER},
    "clinics:account-password": {"POST": MEMBER},
    "clinics:account-recovery-codes": {"POST": MEMBER},
    "clinics:api-keys": {"GET": "apikey.manage", "POST": "apikey.manage"},
    "clinics:api-key-revoke": {"POST": "apikey.manage"},
    "clinics:audit": {"GET": "audit.view"},
    "clinics:audit-export": {"GET": "audit.export"},
    "patients:list": {"GET": "patient.view", "POST": "patient.create"},
    "patients:detail": {"GET": "patient.view", "POST": "patient.update"},
    "patients:upload": {"GET": "image.upload"},
    "patients:export": {"POST": "patient.export"},
    "patients:erase": {"POST": "patient.erase"},
    "patients:image": {"GET": "image.view"},
    "patients:restrict": {"POST": "patient.restrict"},
    "patients:break-glass": {"POST": "patient.break_glass"},
    "analysis:worklist": {"GET": "report.view"},
    "analysis:report": {"GET": "report.view"},
    "analysis:report-pdf": {"GET": "report.view"},
    "analysis:review": {"GET": "report.view"},
    "analysis:chart": {"GET": "report.view"},
    "analysis:review-settings": {"GET": "monitoring.view", "POST": "thresholds.manage"},
    "analysis:agreement": {"GET": "monitoring.view"},
    "analysis:thresholds": {"GET": "monitoring.view", "POST": "thresholds.manage"},
    "analysis:webhooks": {"GET": "webhook.manage", "POST": "webhook.manage"},
    "analysis:clinic-model": {"GET": "monitoring.view", "POST": "model.manage"},
    "dicom:inbox": {"GET": "dicom.inbox", "POST": "dicom.inbox"},
    "dicom:settings": {"GET": "dicom.manage", "POST": "dicom.manage"},
    # API
    "api:schema": {"GET": PUBLIC},
    "api:docs": {"GET": MEMBER},
    "api:token": {"POST": PUBLIC},
    "api:patient-list": {"GET": "patient.view", "POST": "patient.create"},
    "api:patient-search": {"POST": "patient.view"},
    "api:patient-detail": {"GET": "patient.view", "PATCH": "patient.update", "DELETE": "patient.erase"},
    "api:patient-export": {"GET": "patient.export"},
    "api:patient-break-glass": {"POST": "patient.break_glass"},
    "api:patient-image-list": {"GET": "image.view", "POST": "image.upload"},
    "api:patient-image-batch": {"POST": "image.upload"},
    "api:image-detail": {"GET": "image.view"},
    "api:image-file": {"GET": "image.view"},
    "api:analysis-list": {"GET": "analysis.view"},
    "api:analysis-detail": {"GET": "analysis.view"},
    "api:analysis-retry": {"POST": "image.upload"},
    "api:finding-detail": {"GET": "analysis.view", "PATCH": "finding.review"},
    "api:finding-review": {"POST": "finding.review"},
    "api:image-finding-add": {"POST": "finding.add"},
    "api:visit-list": {"GET": "report.view"},
    "api:visit-report": {"GET": "report.view", "POST": "report.sign"},
    "api:visit-amendment": {"POST": "report.sign"},
    "api:visit-note": {"GET": "report.view", "PUT": "finding.review"},
    "api:visit-report-fhir": {"GET": "report.view"},
    "api:monitoring-agreement": {"GET": "monitoring.view"},
    "api:webhook-list": {"GET": "webhook.manage", "POST": "webhook.manage"},
    "api:webhook-detail": {"GET": "webhook.manage", "DELETE": "webhook.manage"},
    "api:webhook-test": {"POST": "webhook.manage"},
    "api:webhook-deliveries": {"GET": "webhook.manage"},
    "api:dicom-node": {"GET": "dicom.manage", "PUT": "dicom.manage"},
    "api:dicom-inbox": {"GET": "dicom.inbox"},
    "api:dicom-inbox-assign": {"POST": "dicom.inbox"},
    "api:dicom-send-list": {"GET": "dicom.manage"},
    "api:dicom-send-resend": {"POST": "dicom.manage"},
    "api:audit-event-list": {"GET": "audit.view"},
    "api:audit-event-export": {"GET": "audit.export"},
}


# Routes that need the password (and second factor) confirmed within REAUTH_MAX_AGE_SECONDS:
# exports of patient data or of the audit trail, erasure, and changes to second factors. URL name -> methods.
REAUTH_ROUTES: Final[dict[str, frozenset[str]]] = {
    "clinics:member-mfa-reset": frozenset({"POST"}),
    "clinics:account-recovery-codes": frozenset({"POST"}),
    "patients:export": frozenset({"POST"}),
    "patients:erase": frozenset({"POST"}),
    "clinics:audit-export": frozenset({"GET"}),
    "api:patient-export": frozenset({"GET"}),
    "api:patient-detail": frozenset({"DELETE"}),
    "api:audit-event-export": frozenset({"GET"}),
}


def needs_reauth(view_name: str, method: str) -> bool:
    return method.upper() in REAUTH_ROUTES.get(view_name, frozenset())


def route_permission(view_name: str, method: str) -> str | None:
    """The permission a route needs for a method; None when the method is not offered there.

    Raises KeyError for a route missing from the map: unknown routes are never open.
    """
    methods = ROUTE_PERMISSIONS[view_name]
    method = method.upper()
    if method in {"HEAD", "OPTIONS"}:
        method = "GET"
    return methods.get(method)


def role_has_permission(role: str | None, permission: str) -> bool:
    if permission == PUBLIC:
        return True
    if role is None:
        return False
    if permission == MEMBER:
        return role in ALL_ROLES
    return role in ROLE_PERMISSIONS.get(permission, frozenset())


def api_key_has_permission(scopes: list[str], permission: str) -> bool:
    if permission in (PUBLIC, MEMBER):
        return permission == PUBLIC
    return permission in API_KEY_GRANTABLE and permission in scopes
