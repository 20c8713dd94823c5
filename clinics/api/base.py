"""Base classes of every API view: they own authentication-to-clinic resolution and scoping, and answer
a GET naming a query parameter its documentation does not list with 400 ``unknown_parameter``
(``clinics.api.parameters``).

Subclasses may not override ``initial``, ``dispatch`` or ``perform_authentication`` (enforced at
class creation), so no view can skip entering the clinic scope taken from the authenticated identity.
"""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions, generics, views
from rest_framework.request import Request

from ..access import Access, access_for_api_key, access_for_session, access_for_user, enter
from ..models import ApiKey, UserToken
from .authentication import ApiKeyPrincipal
from .parameters import reject_unknown_query_parameters

_SEALED = ("initial", "dispatch", "perform_authentication")


def resolve_access(request: Request) -> Access | None:
    auth = request.auth
    if isinstance(auth, ApiKey):
        return access_for_api_key(auth)
    if isinstance(auth, UserToken):
        access = access_for_user(auth.user, auth.clinic_id)
        if access is None or access.clinic.id != auth.clinic_id:
            raise exceptions.AuthenticationFailed("This token's clinic membership is no longer active.")
        return access
    user = request.user
    if user is not None and getattr(user, "is_authenticated", False) and not isinstance(user, ApiKeyPrincipal):
        return access_for_session(user, request.session)
    return None


class ClinicScopedAPIMixin:
    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__module__.startswith(__name__):
            for name in _SEALED:
                if name in cls.__dict__:
                    raise TypeError(f"{cls.__name__} may not override {name}(): it owns clinic scoping.")

    def perform_authentication(self, request: Request) -> None:
        super().perform_authentication(request)  # type: ignore[misc]
        access = resolve_access(request)
        request.access = access  # type: ignore[attr-defined]
        if access is not None:
            enter(access)

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)  # type: ignore[misc]
        # After authentication and permissions (an outsider gets 401/403, not a hint about parameters).
        view_name = request.resolver_match.view_name if request.resolver_match else ""
        reject_unknown_query_parameters(
            view_name, request.method or "GET", list(request.query_params), one_object="pk" in kwargs
        )

    def http_method_not_allowed(self, request: Request, *args: Any, **kwargs: Any) -> Any:
        # "Not yours" and "not found" must look alike even for methods a route does not offer.
        if "pk" in kwargs and hasattr(self, "get_object"):
            self.get_object()  # type: ignore[attr-defined]
        raise exceptions.MethodNotAllowed(request.method)


class ClinicAPIView(ClinicScopedAPIMixin, views.APIView):
    pass


class ClinicGenericAPIView(ClinicScopedAPIMixin, generics.GenericAPIView):
    pass
