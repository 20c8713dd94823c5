"""Log-in (password, then the second factor), re-authentication, log-out and the emailed password reset."""

from __future__ import annotations

import time
from typing import Any

import segno
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import authenticate, logout
from django.contrib.auth.forms import PasswordResetForm, SetPasswordForm
from django.contrib.auth.tokens import default_token_generator
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme, urlencode, urlsafe_base64_decode

from . import audit, context, mfa, ratelimit
from .access import Access, access_for_session, enter
from .forms import LoginForm
from .middleware import client_ip
from .models import AuditOutcome, User
from .selectors import memberships_of
from .services import (
    login_failed_record,
    password_reset_request,
    password_set,
    second_factor_blocked,
    second_factor_failed,
)
from .sessions import complete_login, mark_reauthenticated, sessions_end_all
from .views_base import ClinicView

MFA_PENDING = "mfa_pending"


def _safe_next(request: HttpRequest, next_url: str) -> str:
    if not url_has_allowed_host_and_scheme(next_url, {request.get_host()}, request.is_secure()):
        return ""
    return next_url


def login_target(user: User, clinic_id: object = None) -> tuple[bool, Access | None]:
    """Whether ``user`` may log in (an active membership; in ``clinic_id`` when given), and the clinic the
    session will work in: their only clinic, the one given, or None when they have several to pick from."""
    memberships = list(memberships_of(user))
    if clinic_id:
        chosen = next((m for m in memberships if str(m.clinic_id) == str(clinic_id)), None)
        return chosen is not None, Access(clinic=chosen.clinic, user=user, membership=chosen) if chosen else None
    if len(memberships) == 1:
        return True, Access(clinic=memberships[0].clinic, user=user, membership=memberships[0])
    return bool(memberships), None


def after_login(next_url: str, access: Access | None) -> HttpResponse:
    if access is None:  # several clinics: the person picks one first
        return redirect(f"{reverse('clinics:pick-clinic')}?{urlencode({'next': next_url})}")
    return redirect(next_url or "clinics:home")


def _account_limited(request: HttpRequest, purpose: str, account: str) -> int | None:
    """The per-account allowance of an anonymous purpose (log-in, second factor, password reset, invitation
    acceptance), beside the per-IP one the base view counts (``ratelimit.ROUTE_LIMITS``)."""
    return ratelimit.hit_account(purpose, account)


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
            # the per-account allowance counts failures only (below), so sending a person's address locks no one out
            locked = ratelimit.locked_for(email, ip) or ratelimit.account_blocked("login", email)
            if locked:
                login_failed_record(email, "locked_out")
                form.add_error(None, "Too many failed attempts from this address. Try again later.")
                return _too_many(request, self.template_name, {"form": form, "next": next_url}, locked)
            user = authenticate(request, email=email, password=form.cleaned_data["password"])
            may, access = login_target(user) if user is not None else (False, None)
            if may:
                if mfa.has_mfa(user) or mfa.mfa_required(user):
                    mfa_pending_start(request, user, next_url=next_url, clinic_id=access.clinic.id if access else "")
                    return redirect("clinics:mfa")
                complete_login(request, user, access)
                ratelimit.success(email, ip)
                return after_login(next_url, access)
            login_failed_record(email, "bad_credentials" if user is None else "no_membership")
            ratelimit.account_failure("login", email)
            locked = ratelimit.failure(email, ip)
            form.add_error(None, "Email or password is not correct, or the account has no active clinic.")
            if locked:
                return _too_many(request, self.template_name, {"form": form, "next": next_url}, locked)
        return render(request, self.template_name, {"form": form, "next": next_url}, status=400)


def mfa_pending_start(request: HttpRequest, user: User, *, next_url: str, clinic_id: object) -> None:
    """The password was right: the second step (code, or enrolment) must follow within
    ``MFA_PENDING_MAX_AGE_SECONDS``; no session is logged in before it."""
    request.session.cycle_key()
    request.session[MFA_PENDING] = {
        "user": str(user.pk),
        "at": time.time(),
        "next": next_url,
        "clinic": str(clinic_id or ""),
    }


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
        locked = (
            ratelimit.locked_for(user.email, ip)
            or second_factor_blocked(user)
            or _account_limited(request, "second_factor", user.email)
        )
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
        may, access = login_target(user, pending.get("clinic")) if method else (False, None)
        if not may:
            login_failed_record(user.email, "bad_second_factor")
            locked = second_factor_failed(user) or ratelimit.failure(user.email, ip)
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
            if access is None:
                next_url = f"{reverse('clinics:pick-clinic')}?{urlencode({'next': next_url})}"
            return render(request, "clinics/recovery_codes.html", {"codes": recovery_codes, "next": next_url})
        return after_login(next_url, access)


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
    """Any logged-in person may log out, also one of several clinics who has not picked one yet (or one with no
    active clinic): audited in the session's clinic, else in the global chain. The route is public; the view
    sends anonymous visitors to the log-in page (a session whose clinic ended it was logged out already)."""

    def post(self, request: HttpRequest) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect("clinics:login")
        access = access_for_session(request.user, request.session)
        if access is not None:
            enter(access)
        else:
            context.actor_var.set(context.Actor(user=request.user))
        clinic_id = access.clinic.id if access is not None else None
        audit.record(action="auth.logout", clinic_id=clinic_id)
        # Log-out ends every session (other devices too) and every API token of this person.
        sessions_end_all(request.user, reason="logout", clinic_id=clinic_id)
        logout(request)
        return redirect("clinics:login")


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
        locked = _account_limited(request, "password_reset", email)
        if locked:  # the same for every address, known or not
            return _too_many(request, self.template_name, {"form": form}, locked)
        # Same page, same work in this request whoever asks: the mail goes from a worker after the response.
        if ratelimit.hit_address("password_reset_mail", email) is None:
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
