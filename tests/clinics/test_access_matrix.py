"""The access matrix, generated from the URL conf and the permission map.

Every URL pattern is requested, for every method in its ROUTE_PERMISSIONS entry, as each role of
the owning clinic, a user of another clinic, an anonymous client, the owning clinic's API key and
another clinic's API key. Expected outcomes come from the permission map. A URL pattern without a
permission entry, or with a path parameter this module cannot fill, fails the suite.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from analysis.models import Finding, VisitNote, WebhookDelivery, WebhookEndpoint
from analysis.webhooks import webhook_register
from clinics.models import ApiKey, Invitation, Membership, Role
from clinics.permissions import API_KEY_GRANTABLE, MEMBER, PUBLIC, ROUTE_PERMISSIONS, route_permission
from clinics.services import invitation_create
from clinics.tenancy import clinic_scope
from patients.models import Image, Patient

from ..conftest import World, key_client, token_client, user_client
from ..dicom.objects import dicom_object

# Which object fills a route's path parameters (an object of the owning clinic).
OBJECT_FOR_ROUTE: dict[str, str] = {
    "clinics:member-update": "membership",
    "clinics:member-mfa-reset": "membership",
    "clinics:password-reset-confirm": "reset_link",
    "clinics:invitation": "invitation_link",
    "clinics:invitation-revoke": "invitation",
    "clinics:api-key-revoke": "api_key",
    "patients:detail": "patient",
    "patients:upload": "patient",
    "patients:export": "patient",
    "patients:erase": "patient",
    "patients:image": "image",
    "patients:restrict": "patient",
    "patients:break-glass": "patient",
    "api:patient-break-glass": "patient",
    "api:patient-detail": "patient",
    "api:patient-export": "patient",
    "api:patient-image-list": "patient",
    "api:patient-image-batch": "patient",
    "api:image-detail": "image",
    "api:image-file": "image",
    "api:analysis-detail": "analysis",
    "api:analysis-retry": "analysis",
    "api:finding-review": "finding",
    "api:finding-detail": "finding",
    "api:visit-note": "visit",
    "api:image-finding-add": "image",
    "api:visit-report": "visit",
    "analysis:report": "visit",
    "analysis:report-pdf": "visit",
    "analysis:review": "visit",
    "analysis:chart": "visit",
    "api:visit-amendment": "visit",
    "api:visit-report-fhir": "visit",
    "api:webhook-detail": "webhook",
    "api:webhook-test": "webhook",
    "api:webhook-deliveries": "webhook",
    "api:dicom-inbox-assign": "dicom_instance",
    "api:dicom-send-resend": "dicom_send",
}
PRINCIPALS = ["staff", "dentist", "clinic_admin", "other_user", "anonymous", "own_key", "other_key"]


def _walk(patterns: list[Any], prefix: str = "") -> list[tuple[str, URLPattern]]:
    found = []
    for p in patterns:
        if isinstance(p, URLResolver):
            ns = f"{prefix}{p.namespace}:" if p.namespace else prefix
            found += _walk(p.url_patterns, ns)
        elif isinstance(p, URLPattern) and p.name:
            found.append((f"{prefix}{p.name}", p))
        elif isinstance(p, URLPattern):
            pytest.fail(f"URL pattern {p.pattern} has no name: it cannot be in the permission map")
    return found


ALL_ROUTES = _walk(get_resolver().url_patterns)
ROUTE_NAMES = sorted(name for name, _ in ALL_ROUTES)


def test_every_route_has_a_permission_entry_and_vice_versa() -> None:
    missing = [name for name in ROUTE_NAMES if name not in ROUTE_PERMISSIONS]
    assert not missing, f"routes without a ROUTE_PERMISSIONS entry: {missing}"
    stale = sorted(set(ROUTE_PERMISSIONS) - set(ROUTE_NAMES))
    assert not stale, f"permission entries for routes that do not exist: {stale}"


def test_every_parametrised_route_can_be_filled() -> None:
    for name, pattern in ALL_ROUTES:
        if pattern.pattern.converters:
            assert name in OBJECT_FOR_ROUTE, f"{name} takes path parameters: add it to OBJECT_FOR_ROUTE"


def test_every_handled_method_is_in_the_map() -> None:
    for name, pattern in ALL_ROUTES:
        view_class = getattr(pattern.callback, "view_class", None) or getattr(pattern.callback, "cls", None)
        assert view_class is not None, name
        for method in ("get", "post", "put", "patch", "delete"):
            ours = [k for k in view_class.__mro__ if k.__module__.startswith(("clinics", "patients", "analysis"))]
            if any(method in k.__dict__ for k in ours):
                assert route_permission(name, method) is not None, f"{name} handles {method.upper()} unmapped"


CASES = [
    (name, method, principal)
    for name in ROUTE_NAMES
    for method in ROUTE_PERMISSIONS.get(name, {})
    for principal in PRINCIPALS
]


def _path(name: str, alice: World) -> str:
    kind = OBJECT_FOR_ROUTE.get(name)
    if kind is None:
        return reverse(name)
    if kind == "reset_link":  # public; a link that is not valid
        return reverse(name, kwargs={"uidb64": "MQ", "token": "not-a-token"})
    if kind == "invitation_link":  # public; a link that is not valid
        return reverse(name, kwargs={"token": "not-a-token"})
    if kind == "webhook":
        return reverse(name, kwargs={"pk": _webhook(alice).pk})
    if kind == "invitation":
        return reverse(name, kwargs={"pk": _invitation(alice).pk})
    if kind in ("dicom_instance", "dicom_send"):
        return reverse(name, kwargs={"pk": dicom_object(alice, kind).pk})
    obj = {
        "membership": alice.memberships["dentist"],
        "api_key": alice.api_key,
        "patient": alice.patient,
        "image": alice.image,
        "analysis": alice.analysis,
        "finding": alice.finding,
        "visit": alice.image.visit,
    }[kind]
    return reverse(name, kwargs={"pk": obj.pk})


def _webhook(world: World) -> WebhookEndpoint:
    with clinic_scope(world.clinic.id):
        return WebhookEndpoint.objects.first() or webhook_register(url="https://pms.example/hook")[0]


def _invitation(world: World) -> Invitation:
    with clinic_scope(world.clinic.id):
        return Invitation.objects.first() or invitation_create(
            email="invited@matrix.test", role="staff", invited_by=None, domain="testserver", use_https=False
        )


def _client(principal: str, name: str, alice: World, bob: World) -> Any:
    api = name.startswith("api:")
    if principal == "anonymous":
        return None
    if principal in ("own_key", "other_key"):
        return key_client(alice if principal == "own_key" else bob)
    world, role = (bob, "clinic_admin") if principal == "other_user" else (alice, principal)
    return token_client(world, role) if api else user_client(world.users[role])


def _expected(name: str, method: str, principal: str) -> str:
    """'allowed', 'denied' (403), 'login' (401 or redirect to log-in) or 'not_found' (404)."""
    permission = route_permission(name, method)
    api = name.startswith("api:")
    if permission == PUBLIC:
        return "allowed"
    if principal == "anonymous" or (principal.endswith("_key") and not api):
        return "login"
    if name in OBJECT_FOR_ROUTE and principal in ("other_user", "other_key"):
        return "not_found"
    if principal in ("own_key", "other_key"):
        return "allowed" if permission in API_KEY_GRANTABLE else "denied"
    role = Role.CLINIC_ADMIN if principal == "other_user" else principal
    if permission == MEMBER:
        return "allowed"
    from clinics.permissions import role_has_permission

    return "allowed" if role_has_permission(role, permission) else "denied"


def _snapshot(alice: World) -> dict[str, Any]:
    p = Patient.unscoped.filter(pk=alice.patient.pk).first()
    m = Membership.unscoped.get(pk=alice.memberships["dentist"].pk)
    k = ApiKey.unscoped.get(pk=alice.api_key.pk)
    return {
        "patient": (bytes(p.identity), p.sex, p.legal_hold) if p else None,
        "images": sorted(str(i) for i in Image.unscoped.filter(clinic=alice.clinic).values_list("id", flat=True)),
        "findings": sorted(
            Finding.unscoped.filter(clinic=alice.clinic).values_list("status", "reason", "tooth", "note", "version")
        ),
        "visit_notes": sorted(VisitNote.unscoped.filter(clinic=alice.clinic).values_list("text", "version")),
        "membership": (m.role, m.is_active),
        "api_key": (k.revoked_at, k.scopes),
        "webhooks": sorted((str(w.pk), w.is_active) for w in WebhookEndpoint.unscoped.filter(clinic=alice.clinic)),
        "webhook_deliveries": WebhookDelivery.unscoped.filter(clinic=alice.clinic).count(),
        "invitations": sorted(
            (str(i.pk), i.revoked_at, i.accepted_at) for i in Invitation.unscoped.filter(clinic=alice.clinic)
        ),
    }


@pytest.mark.parametrize(("name", "method", "principal"), CASES, ids=[f"{n}-{m}-{p}" for n, m, p in CASES])
def test_access_matrix(name: str, method: str, principal: str, alice: World, bob: World) -> None:
    from django.test import Client

    client = _client(principal, name, alice, bob) or Client()
    path = _path(name, alice)
    before = _snapshot(alice)
    body = {
        "clinics:member-update": {"role": "staff"},
        "api:finding-review": {"decision": "confirm"},
        "api:finding-detail": {"tooth": "16", "note": "matrix"},
        "api:visit-note": {"text": "matrix"},
        "api:image-finding-add": {"condition": "caries", "box": [0.1, 0.1, 0.2, 0.2]},
        "api:visit-amendment": {"reason": "matrix"},
    }.get(name, {})
    kwargs: dict[str, Any] = {}
    if method in ("POST", "PATCH", "PUT"):
        if name.startswith("api:"):
            kwargs = {"data": json.dumps(body), "content_type": "application/json"}
        else:
            kwargs = {"data": body}
    response = (
        client.generic(method, path, **kwargs)
        if method in ("PATCH", "PUT")
        else getattr(client, method.lower())(path, **kwargs)
    )
    status = response.status_code
    expected = _expected(name, method, principal)
    assert status < 500, f"{status} for {principal} {method} {path}"
    if expected == "allowed":
        assert status not in (401, 403, 404), f"{principal} should pass {method} {name}, got {status}"
    elif expected == "denied":
        assert status == 403, f"{principal} should get 403 on {method} {name}, got {status}"
    elif expected == "not_found":
        assert status == 404, f"{principal} should get 404 on {method} {name}, got {status}"
    elif expected == "login":
        if name.startswith("api:"):
            assert status == 401, f"anonymous should get 401 on {method} {name}, got {status}"
        else:
            assert status == 302 and reverse("clinics:login") in response["Location"], (status, name)
    if principal in ("other_user", "other_key", "anonymous"):
        assert _snapshot(alice) == before, f"{principal} changed clinic alice's data via {method} {name}"
        content = b"".join(response.streaming_content) if response.streaming else response.content
        for secret in (
            str(alice.patient.pk),
            alice.patient_name,
            str(alice.image.pk),
            str(alice.finding.pk),
            str(alice.memberships["dentist"].pk),
            str(alice.api_key.pk),
            *(str(pk) for pk in Invitation.unscoped.filter(clinic=alice.clinic).values_list("pk", flat=True)),
            *Invitation.unscoped.filter(clinic=alice.clinic).values_list("email", flat=True),
            alice.users["dentist"].email,
            *(str(pk) for pk in WebhookEndpoint.unscoped.filter(clinic=alice.clinic).values_list("pk", flat=True)),
        ):
            assert secret.encode() not in content, f"{principal} saw alice's {secret} via {method} {name}"
