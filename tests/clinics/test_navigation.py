"""Every page a role may open is reachable from the top bar: the set is derived from the permission map and the
URL conf, so a new page without a link fails here."""

from __future__ import annotations

import re

import pytest
from django.urls import NoReverseMatch, get_resolver, reverse

from clinics.models import Role
from clinics.permissions import MEMBER, PUBLIC, ROUTE_PERMISSIONS, role_has_permission

from ..conftest import World, user_client

# Pages that are steps of a flow or downloads, not places to go: reached from where they belong.
NOT_IN_THE_BAR = {
    "clinics:login",
    "clinics:mfa",
    "clinics:password-reset",
    "clinics:password-reset-confirm",
    "clinics:reauth",
    "clinics:audit-export",  # the audit page's download buttons
}


def _pages_of(role: str) -> dict[str, str]:
    """URL name -> path of every HTML page without URL parameters that ``role`` may GET."""
    pages = {}
    for name, methods in ROUTE_PERMISSIONS.items():
        if name.startswith("api:") and name != "api:docs":
            continue
        permission = methods.get("GET")
        if permission is None or permission == PUBLIC or name in NOT_IN_THE_BAR:
            continue
        try:
            path = reverse(name)
        except NoReverseMatch:  # needs an object id: reached from a list
            continue
        if permission == MEMBER or role_has_permission(role, permission):
            pages[name] = path
    return pages


def test_the_map_covers_the_html_routes() -> None:
    names = {
        f"{ns}:{p.name}"
        for ns, (_, resolver) in get_resolver().namespace_dict.items()
        for p in resolver.url_patterns
        if getattr(p, "name", None)
    }
    assert {n for n in names if not n.startswith("api:")} <= set(ROUTE_PERMISSIONS)


@pytest.mark.parametrize("role", [r.value for r in Role])
def test_every_page_a_role_may_open_is_in_the_top_bar(alice: World, role: str) -> None:
    html = user_client(alice.users[role]).get(reverse("clinics:home")).content.decode()
    header = html[html.index('<header class="topbar">') : html.index("</header>")]
    linked = set(re.findall(r'href="([^"]+)"', header))
    pages = _pages_of(role)
    assert pages, role
    missing = {name: path for name, path in pages.items() if path not in linked}
    assert not missing, f"{role} cannot reach {missing} from the top bar"
    if role == Role.CLINIC_ADMIN:
        for name in ("members", "api-keys", "audit"):
            assert reverse(f"clinics:{name}") in linked
        for name in ("thresholds", "agreement", "webhooks"):
            assert reverse(f"analysis:{name}") in linked
