from __future__ import annotations

import time
from typing import Any

import segno
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import authenticate, logout, update_session_auth_hash
from django.contrib.auth.forms import PasswordChangeForm, PasswordResetForm, SetPasswordForm
from django.contrib.auth.tokens import default_token_generator
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import Count, Exists, OuterRef
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme, urlsafe_base64_decode

from . import audit, mfa, ratelimit
from .access import SESSION_CLINIC_KEY, access_for_user
from .exports import EXPORT_FORMATS, audit_export_response, record_audit_trail_read
from .forms import ApiKeyForm, AuditFilterForm, LoginForm, MemberAddForm, MemberUpdateForm
from .middleware import client_ip
from .models import ApiKey, AuditOutcome, Membership, TotpDevice, User
from .selectors import audit_events
from .services import (
    ServiceError,
    api_key_create,
    api_key_revoke,
    login_failed_record,
    member_add,
    member_mfa_reset,
    member_update,
    password_reset_request,
    password_set,
    recovery_codes_renew,
)
from .sessions import complete_login, mark_reauthenticated, sessions_end_all
from .views_base import ClinicView

MFA_PENDING = "mfa_pending"


def _safe_next(request: HttpRequest, next_url: str) -> str:
    if not url_has_allowed_host_and_scheme(next_url, {request.get_host()}, request.is_secure()):
        return ""
    return next_url


def _too_many(request: HttpRequest, template: str, context_data: dict[str, Any], retry_after: int) -> HttpResponse:
    context_data["locked_minutes"] = max(1, (retry_after + 59) // 60)
    response = render(request, template, context_data, status=429)
    response["Retry-After"] = str(retry_after)
    return response


class LoginView(ClinicView):
    """Step one: email and password. People with an authenticator (and every dentist and clinic
    admin) go on to the second step before any session is created."""

    template_name = "clinics/login.html"

    def get(self, request: HttpRequest) -> HttpResponse:
        if request.user.is_authenticated:
            return redirect("clinics:home")
        reason = request.session.pop("logged_out_reason", "")
        return render(
            request,
            self.template_name,
            {"form": LoginForm(), "next": request.GET.get("next", ""), "logged_out_reason": reason},
        )

    def post(self, request: HttpRequest) -> HttpResponse:
        form = LoginForm(request.POST)
        next_url = _safe_next(request, request.POST.get("next", ""))
        if form.is_valid():
            email = form.cleaned_data["email"]
            ip = client_ip(request)
            locked = ratelimit.locked_for(email, ip)
            if locked:
                login_failed_record(email, "locked_out")
                form.add_error(None, "Too many failed attempts from this address. Try again later.")
                return _too_many(request, self.template_name, {"form": form, "next": next_url}, locked)
            user = authenticate(request, email=email, password=form.cleaned_data["password"])
            access = access_for_user(user) if user is not None else None
            if access is not None:
                if mfa.has_mfa(user) or mfa.mfa_required(user):
                    request.session.cycle_key()
                    request.session[MFA_PENDING] = {
                        "user": str(user.pk),
                        "at": time.time(),
                        "next": next_url,
                        "clinic": str(access.clinic.id),
                    }
                    return redirect("clinics:mfa")
                complete_login(request, user, access)
                ratelimit.success(email, ip)
                return redirect(next_url or "clinics:home")
            login_failed_record(email, "bad_credentials" if user is None else "no_membership")
            locked = ratelimit.failure(email, ip)
            form.add_error(None, "Email or password is not correct, or the account has no active clinic.")
            if locked:
                return _too_many(request, self.template_name, {"form": form, "next": next_url}, locked)
        return render(request, self.template_name, {"form": form, "next": next_url}, status=400)


class MfaView(ClinicView):
    """Step two of log-in: a code from the authenticator or a recovery code; dentists and clinic
    admins without an authenticator enrol here first (secret and QR code, then a first code)."""

    template_name = "clinics/mfa.html"

    def _pending(self, request: HttpRequest) -> tuple[User, dict[str, Any]] | None:
        pending = request.session.get(MFA_PENDING)
        if not pending or time.time() - float(pending.get("at", 0)) > settings.MFA_PENDING_MAX_AGE_SECONDS:
            request.session.pop(MFA_PENDING, None)
            return None
        user = User.objects.filter(pk=pending["user"], is_active=True).first()
        return (user, pending) if user is not None else None

    def _render(self, request: HttpRequest, user: User, status: int = 200, error: str = "") -> HttpResponse:
        data: dict[str, Any] = {"error": error, "enrolled": mfa.has_mfa(user)}
        if not data["enrolled"]:
            secret = mfa.pending_secret(user) or mfa.enrol_begin(user)
            uri = mfa.provisioning_uri(user, secret)
            data.update(secret=secret, qr_svg=segno.make(uri, error="m").svg_inline(scale=4), uri=uri)
        return render(request, self.template_name, data, status=status)

    def get(self, request: HttpRequest) -> HttpResponse:
        found = self._pending(request)
        if found is None:
            return redirect("clinics:login")
        return self._render(request, found[0])

    def post(self, request: HttpRequest) -> HttpResponse:
        found = self._pending(request)
        if found is None:
            return redirect("clinics:login")
        user, pending = found
        ip = client_ip(request)
        locked = ratelimit.locked_for(user.email, ip)
        if locked:
            login_failed_record(user.email, "locked_out")
            return _too_many(
                request, "clinics/mfa.html", {"error": "Too many failed attempts.", "enrolled": True}, locked
            )
        code = request.POST.get("code", "")
        recovery_codes: list[str] | None = None
        if mfa.has_mfa(user):
            method = mfa.verify(user, code)
        else:
            recovery_codes = mfa.enrol_confirm(user, code)
            method = "totp" if recovery_codes else None
        access = access_for_user(user, pending.get("clinic")) if method else None
        if access is None:
            login_failed_record(user.email, "bad_second_factor")
            locked = ratelimit.failure(user.email, ip)
            if locked:
                return _too_many(
                    request, "clinics/mfa.html", {"error": "Too many failed attempts.", "enrolled": True}, locked
                )
            return self._render(request, user, status=400, error="That code is not valid. Try the current one.")
        request.session.pop(MFA_PENDING, None)
        complete_login(request, user, access, mfa=method or "")
        ratelimit.success(user.email, ip)
        next_url = pending.get("next") or ""
        if recovery_codes:
            return render(request, "clinics/recovery_codes.html", {"codes": recovery_codes, "next": next_url})
        return redirect(next_url or "clinics:home")


class ReauthView(ClinicView):
    """Confirm the password (and second factor) again before exports and erasure."""

    template_name = "clinics/reauth.html"

    def get(self, request: HttpRequest) -> HttpResponse:
        return render(
            request,
            self.template_name,
            {"next": _safe_next(request, request.GET.get("next", "")), "needs_code": mfa.has_mfa(request.user)},
        )

    def post(self, request: HttpRequest) -> HttpResponse:
        user = request.user
        next_url = _safe_next(request, request.POST.get("next", ""))
        ip = client_ip(request)
        data = {"next": next_url, "needs_code": mfa.has_mfa(user)}
        locked = ratelimit.locked_for(user.email, ip)
        if locked:
            return _too_many(request, self.template_name, {**data, "error": "Too many failed attempts."}, locked)
        ok = user.check_password(request.POST.get("password", ""))
        if ok and data["needs_code"]:
            ok = mfa.verify(user, request.POST.get("code", "")) is not None
        if not ok:
            audit.record(
                action="auth.reauth",
                clinic_id=self.access.clinic.id,
                outcome=AuditOutcome.DENIED,
            )
            locked = ratelimit.failure(user.email, ip)
            if locked:
                return _too_many(request, self.template_name, {**data, "error": "Too many failed attempts."}, locked)
            return render(request, self.template_name, {**data, "error": "Not correct. Try again."}, status=400)
        mark_reauthenticated(request)
        audit.record(action="auth.reauth", clinic_id=self.access.clinic.id)
        messages.success(request, "Identity confirmed for the next few minutes: repeat the action.")
        return redirect(next_url or "clinics:home")


class LogoutView(ClinicView):
    def post(self, request: HttpRequest) -> HttpResponse:
        audit.record(action="auth.logout", clinic_id=self.access.clinic.id)
        # Log-out ends every session (other devices too) and every API token of this person.
        sessions_end_all(request.user, reason="logout", clinic_id=self.access.clinic.id)
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
                "members_by_role": {row["role"]: row["n"] for row in members},
                **self.registered_context(request),  # the patient count (patients.pages)
            },
        )


class MembersView(ClinicView):
    def _render(self, request: HttpRequest, form: MemberAddForm, status: int = 200) -> HttpResponse:
        authenticator = TotpDevice.objects.filter(user=OuterRef("user"), confirmed_at__isnull=False)
        memberships = (
            Membership.objects.select_related("user")
            .annotate(has_authenticator=Exists(authenticator))
            .order_by("-is_active", "user__email")
        )
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


class MemberMfaResetView(ClinicView):
    def post(self, request: HttpRequest, pk: str) -> HttpResponse:
        membership = get_object_or_404(Membership.objects.select_related("user"), pk=pk)
        try:
            member_mfa_reset(membership=membership, by=request.user)
        except ServiceError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(
                request,
                f"Second factor of {membership.user.email} removed and their sessions ended: they set up a new "
                "authenticator at their next log-in.",
            )
        return redirect("clinics:members")


def _account_page(request: HttpRequest, form: PasswordChangeForm, status: int = 200, error: str = "") -> HttpResponse:
    user = request.user
    data = {
        "form": form,
        "error": error,
        "enrolled": mfa.has_mfa(user),
        "mfa_required": mfa.mfa_required(user),
        "codes_left": mfa.recovery_codes_left(user),
    }
    return render(request, "clinics/account.html", data, status=status)


class AccountView(ClinicView):
    """The person's own account: password and second factor."""

    def get(self, request: HttpRequest) -> HttpResponse:
        return _account_page(request, PasswordChangeForm(request.user))


class PasswordChangeView(ClinicView):
    """The current password is guessed here as at log-in, so the same lockout of the (email, IP) pair applies.
    A changed password is not a re-authentication: no second factor was asked for."""

    def post(self, request: HttpRequest) -> HttpResponse:
        user, ip = request.user, client_ip(request)
        form = PasswordChangeForm(user, request.POST)
        locked = ratelimit.locked_for(user.email, ip)
        if locked:
            response = _account_page(request, PasswordChangeForm(user), status=429, error="Too many failed attempts.")
            response["Retry-After"] = str(locked)
            return response
        if not form.is_valid():
            if "old_password" in form.errors:
                audit.record(
                    action="auth.password.change",
                    clinic_id=self.access.clinic.id,
                    outcome=AuditOutcome.DENIED,
                    object_type="user",
                    object_id=user.pk,
                    details={"reason": "wrong_current_password"},
                )
                ratelimit.failure(user.email, ip)
            return _account_page(request, form, status=400)
        ratelimit.success(user.email, ip)
        password_set(
            user=user,
            password=form.cleaned_data["new_password1"],
            action="auth.password.change",
            clinic_id=self.access.clinic.id,
        )  # every session and API token of the person ends...
        update_session_auth_hash(request, user)  # ...except this session, which goes on (with a new key)
        messages.success(request, "Password changed. You were logged out everywhere else.")
        return redirect("clinics:account")


class RecoveryCodesView(ClinicView):
    """New recovery codes (the old ones stop working), shown once."""

    def post(self, request: HttpRequest) -> HttpResponse:
        if not mfa.has_mfa(request.user):
            messages.error(request, "You have no authenticator, so there are no recovery codes to renew.")
            return redirect("clinics:account")
        codes = recovery_codes_renew(user=request.user, clinic_id=self.access.clinic.id)
        return render(request, "clinics/recovery_codes.html", {"codes": codes, "next": reverse("clinics:account")})


class PasswordResetView(ClinicView):
    """ "Forgot your password?": a link valid for PASSWORD_RESET_TIMEOUT goes to the address, if it belongs to an
    active account. The answer is the same either way, so the page does not tell who has an account. The
    second factor is still asked for at the next log-in."""

    template_name = "clinics/password_reset.html"

    def get(self, request: HttpRequest) -> HttpResponse:
        return render(request, self.template_name, {"form": PasswordResetForm()})

    def post(self, request: HttpRequest) -> HttpResponse:
        form = PasswordResetForm(request.POST)
        if not form.is_valid():
            return render(request, self.template_name, {"form": form}, status=400)
        email = form.cleaned_data["email"]
        # Same page, same work in this request whoever asks: the mail goes from a worker after commit.
        if ratelimit.hit_address("password_reset", email) is None:
            password_reset_request(email=email, domain=request.get_host(), use_https=request.is_secure())
        minutes = settings.PASSWORD_RESET_TIMEOUT // 60
        return render(request, self.template_name, {"sent": True, "valid_minutes": minutes})


RESET_TOKEN_SESSION_KEY = "password_reset_token"
RESET_FROM_SESSION = "set-password"


class PasswordResetConfirmView(ClinicView):
    """The emailed link. Its token moves into the session at once and the browser is sent to a URL without it,
    so the token never sits in the address bar, the history or a Referer header. (Django's own
    PasswordResetConfirmView does the same; ours is a ClinicView, whose dispatch owns access control.)"""

    template_name = "clinics/password_reset_confirm.html"

    def _user(self, request: HttpRequest, uidb64: str, token: str) -> User | None:
        try:
            uid = urlsafe_base64_decode(uidb64).decode()
            user = User.objects.filter(pk=uid, is_active=True).first()
        except (ValueError, TypeError, OverflowError, ValidationError):
            return None
        if token == RESET_FROM_SESSION:
            token = request.session.get(RESET_TOKEN_SESSION_KEY, "")
        return user if user is not None and default_token_generator.check_token(user, token) else None

    def _invalid(self, request: HttpRequest) -> HttpResponse:
        return render(request, self.template_name, {"invalid": True}, status=400)

    def get(self, request: HttpRequest, uidb64: str, token: str) -> HttpResponse:
        user = self._user(request, uidb64, token)
        if user is None:
            return self._invalid(request)
        if token != RESET_FROM_SESSION:
            request.session[RESET_TOKEN_SESSION_KEY] = token
            return redirect("clinics:password-reset-confirm", uidb64=uidb64, token=RESET_FROM_SESSION)
        return render(request, self.template_name, {"form": SetPasswordForm(user)})

    def post(self, request: HttpRequest, uidb64: str, token: str) -> HttpResponse:
        user = self._user(request, uidb64, token)
        if user is None:
            return self._invalid(request)
        form = SetPasswordForm(user, request.POST)
        if not form.is_valid():
            return render(request, self.template_name, {"form": form}, status=400)
        # every session and API token of the person ends; the link stops working (the token covers the hash)
        password_set(
            user=user,
            password=form.cleaned_data["new_password1"],
            action="auth.password.reset",
            clinic_id=mfa.audit_clinic_of(user),
        )
        request.session.pop(RESET_TOKEN_SESSION_KEY, None)
        messages.success(request, "Your password was changed. Log in with it.")
        return redirect("clinics:login")


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
                name=form.cleaned_data["name"],
                scopes=form.cleaned_data["scopes"],
                created_by=request.user,
                expires_in_days=form.cleaned_data["expires_in_days"],
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
        page.object_list = list(page.object_list)  # read before this read is itself recorded
        record_audit_trail_read(
            clinic_id=self.access.clinic.id, filters=filters, page=page.number, shown=len(page.object_list)
        )
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
                **self.registered_context(request),  # emergency-access grants (patients.pages)
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
            filters=filters,
        )
