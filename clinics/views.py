from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth import authenticate, login, logout
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import Count
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.http import url_has_allowed_host_and_scheme

from patients.models import Patient

from . import audit
from .access import SESSION_CLINIC_KEY, access_for_user
from .exports import EXPORT_FORMATS, audit_export_response
from .forms import ApiKeyForm, AuditFilterForm, LoginForm, MemberAddForm, MemberUpdateForm
from .models import ApiKey, AuditOutcome, Membership
from .selectors import audit_events
from .services import (
    ServiceError,
    api_key_create,
    api_key_revoke,
    login_failed_record,
    member_add,
    member_update,
)
from .views_base import ClinicView


class LoginView(ClinicView):
    template_name = "clinics/login.html"

    def get(self, request: HttpRequest) -> HttpResponse:
        if request.user.is_authenticated:
            return redirect("clinics:home")
        return render(request, self.template_name, {"form": LoginForm(), "next": request.GET.get("next", "")})

    def post(self, request: HttpRequest) -> HttpResponse:
        form = LoginForm(request.POST)
        next_url = request.POST.get("next", "")
        if form.is_valid():
            email = form.cleaned_data["email"]
            user = authenticate(request, email=email, password=form.cleaned_data["password"])
            access = access_for_user(user) if user is not None else None
            if access is not None:
                login(request, user)  # rotates the session key
                request.session[SESSION_CLINIC_KEY] = str(access.clinic.id)
                audit.record(
                    action="auth.login", clinic_id=access.clinic.id, actor=access.actor, details={"channel": "web"}
                )
                if not url_has_allowed_host_and_scheme(next_url, {request.get_host()}, request.is_secure()):
                    next_url = ""
                return redirect(next_url or "clinics:home")
            login_failed_record(email, "bad_credentials" if user is None else "no_membership")
            form.add_error(None, "Email or password is not correct, or the account has no active clinic.")
        return render(request, self.template_name, {"form": form, "next": next_url}, status=400)


class LogoutView(ClinicView):
    def post(self, request: HttpRequest) -> HttpResponse:
        audit.record(action="auth.logout", clinic_id=self.access.clinic.id)
        logout(request)
        return redirect("clinics:login")


class SwitchClinicView(ClinicView):
    def post(self, request: HttpRequest) -> HttpResponse:
        target = access_for_user(request.user, request.POST.get("clinic", ""))
        if target is None or str(target.clinic.id) != request.POST.get("clinic"):
            return HttpResponseBadRequest("Not a clinic you belong to.")
        request.session[SESSION_CLINIC_KEY] = str(target.clinic.id)
        audit.record(action="auth.clinic.switch", clinic_id=target.clinic.id, actor=target.actor)
        return redirect("clinics:home")


class HomeView(ClinicView):
    def get(self, request: HttpRequest) -> HttpResponse:
        members = Membership.objects.filter(is_active=True).values("role").annotate(n=Count("id"))
        return render(
            request,
            "clinics/home.html",
            {
                "patient_count": Patient.objects.count(),
                "members_by_role": {row["role"]: row["n"] for row in members},
            },
        )


class MembersView(ClinicView):
    def _render(self, request: HttpRequest, form: MemberAddForm, status: int = 200) -> HttpResponse:
        memberships = Membership.objects.select_related("user").order_by("-is_active", "user__email")
        return render(request, "clinics/members.html", {"form": form, "memberships": memberships}, status=status)

    def get(self, request: HttpRequest) -> HttpResponse:
        return self._render(request, MemberAddForm())

    def post(self, request: HttpRequest) -> HttpResponse:
        form = MemberAddForm(request.POST)
        if form.is_valid():
            try:
                member_add(**form.cleaned_data)
            except ServiceError as exc:
                form.add_error(None, exc.message)
            except ValidationError as exc:  # the password validators
                form.add_error("password", exc)
            else:
                messages.success(request, f"{form.cleaned_data['email']} added as {form.cleaned_data['role']}.")
                return redirect("clinics:members")
        return self._render(request, form, status=400)


class MemberUpdateView(ClinicView):
    def post(self, request: HttpRequest, pk: str) -> HttpResponse:
        membership = get_object_or_404(Membership.objects, pk=pk)
        form = MemberUpdateForm(request.POST)
        if not form.is_valid():
            return HttpResponseBadRequest("Invalid change.")
        try:
            member_update(
                membership=membership, role=form.cleaned_data["role"] or None, is_active=form.cleaned_data["is_active"]
            )
        except ServiceError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, f"{membership.user.email} updated.")
        return redirect("clinics:members")


class ApiKeysView(ClinicView):
    def _render(self, request: HttpRequest, form: ApiKeyForm, **extra: Any) -> HttpResponse:
        keys = ApiKey.objects.order_by("revoked_at", "-created_at")
        return render(request, "clinics/api_keys.html", {"form": form, "keys": keys, **extra})

    def get(self, request: HttpRequest) -> HttpResponse:
        return self._render(request, ApiKeyForm())

    def post(self, request: HttpRequest) -> HttpResponse:
        form = ApiKeyForm(request.POST)
        if form.is_valid():
            key, secret = api_key_create(
                name=form.cleaned_data["name"], scopes=form.cleaned_data["scopes"], created_by=request.user
            )
            # Shown once on this response, never stored in clear or put in the session.
            response = self._render(request, ApiKeyForm(), new_key=key, new_secret=secret)
            response["Cache-Control"] = "no-store"
            return response
        return self._render(request, form)


class ApiKeyRevokeView(ClinicView):
    def post(self, request: HttpRequest, pk: str) -> HttpResponse:
        key = get_object_or_404(ApiKey.objects, pk=pk)
        api_key_revoke(key=key)
        messages.success(request, f"API key {key.name} revoked.")
        return redirect("clinics:api-keys")


def _audit_filters(request: HttpRequest) -> tuple[AuditFilterForm, dict[str, Any]]:
    form = AuditFilterForm(request.GET or None)
    filters = {k: v for k, v in form.cleaned_data.items() if v} if form.is_valid() else {}
    return form, filters


class AuditView(ClinicView):
    def get(self, request: HttpRequest) -> HttpResponse:
        form, filters = _audit_filters(request)
        page = Paginator(audit_events(**filters), 50).get_page(request.GET.get("page"))
        query = request.GET.copy()
        query.pop("page", None)
        return render(
            request,
            "clinics/audit.html",
            {
                "form": form,
                "page": page,
                "query": query.urlencode(),
                "formats": EXPORT_FORMATS,
                "outcomes": AuditOutcome,
            },
        )


class AuditExportView(ClinicView):
    def get(self, request: HttpRequest) -> HttpResponse:
        fmt = request.GET.get("format", "csv")
        if fmt not in EXPORT_FORMATS:
            return HttpResponseBadRequest("Unknown export format.")
        form, filters = _audit_filters(request)
        return audit_export_response(
            events=audit_events(**filters),
            fmt=fmt,
            clinic_id=self.access.clinic.id,
            filters={k: str(v) for k, v in filters.items()},
        )
