"""The person's own account: password change and recovery codes of the second factor."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import update_session_auth_hash
from django.contrib.auth.forms import PasswordChangeForm
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse

from . import audit, mfa, ratelimit
from .middleware import client_ip
from .models import AuditOutcome
from .services import password_set, recovery_codes_renew
from .views_base import ClinicView


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
