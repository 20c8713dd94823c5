"""Invitations: the mailed link, its acceptance (an existing account while logged in as it, or a new account with
a password and, where the role needs one, a second factor), and the clinic admin's revocation.

The link's token moves into the session at once and the browser goes on to a URL without it (as for password
reset links), so it never sits in the address bar, the history or a Referer header."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import urlencode

from . import mfa, ratelimit
from .forms import InvitationAcceptForm, InvitationNewAccountForm
from .models import Invitation, User
from .services import (
    ServiceError,
    invitation_accept,
    invitation_accept_new_account,
    invitation_for_token,
    invitation_revoke,
)
from .sessions import complete_login
from .views_auth import _too_many, login_target, mfa_pending_start
from .views_base import ClinicView

INVITATION_SESSION_KEY = "invitation_token"
TEMPLATE = "clinics/invitation_accept.html"


def _invalid(request: HttpRequest) -> HttpResponse:
    return render(request, TEMPLATE, {"invalid": True}, status=400)


class InvitationLinkView(ClinicView):
    def get(self, request: HttpRequest, token: str) -> HttpResponse:
        if invitation_for_token(token) is None:
            return _invalid(request)
        request.session[INVITATION_SESSION_KEY] = token
        return redirect("clinics:invitation-accept")


class InvitationAcceptView(ClinicView):
    def _invitation(self, request: HttpRequest) -> Invitation | None:
        return invitation_for_token(request.session.get(INVITATION_SESSION_KEY, ""))

    def _render(
        self, request: HttpRequest, invitation: Invitation, form: object = None, status: int = 200
    ) -> HttpResponse:
        data: dict[str, object] = {"invitation": invitation, "clinic": invitation.clinic}
        has_account = User.objects.filter(email=invitation.email).exists()
        if request.user.is_authenticated and request.user.email != invitation.email:
            data["other_account"] = True
            status = 403 if status == 200 else status
        elif has_account and not request.user.is_authenticated:
            data["login_url"] = (
                f"{reverse('clinics:login')}?{urlencode({'next': reverse('clinics:invitation-accept')})}"
            )
        elif has_account:
            data["form"] = form or InvitationAcceptForm(initial={"display_name": request.user.full_name})
        else:
            data["new_account"] = True
            data["form"] = form or InvitationNewAccountForm()
            data["needs_mfa"] = invitation.role in mfa.MFA_REQUIRED_ROLES
        return render(request, TEMPLATE, data, status=status)

    def get(self, request: HttpRequest) -> HttpResponse:
        invitation = self._invitation(request)
        if invitation is None:
            return _invalid(request)
        return self._render(request, invitation)

    def post(self, request: HttpRequest) -> HttpResponse:
        invitation = self._invitation(request)
        if invitation is None:
            return _invalid(request)
        locked = ratelimit.hit_account("invitation", invitation.email)
        if locked:
            return _too_many(request, TEMPLATE, {"invitation": invitation, "clinic": invitation.clinic}, locked)
        if request.user.is_authenticated:
            if request.user.email != invitation.email:
                return self._render(request, invitation, status=403)
            form = InvitationAcceptForm(request.POST)
            if not form.is_valid():
                return self._render(request, invitation, form, status=400)
            try:
                invitation_accept(
                    invitation=invitation, user=request.user, display_name=form.cleaned_data["display_name"]
                )
            except ServiceError as exc:
                form.add_error(None, exc.message)
                return self._render(request, invitation, form, status=exc.status)
            request.session.pop(INVITATION_SESSION_KEY, None)
            messages.success(
                request, f"You joined {invitation.clinic.name}: switch to it with the clinic menu at the top."
            )
            return redirect("clinics:home")
        if User.objects.filter(email=invitation.email).exists():
            return self._render(request, invitation, status=400)  # log in first
        form = InvitationNewAccountForm(request.POST)
        if not form.is_valid():
            return self._render(request, invitation, form, status=400)
        try:
            membership = invitation_accept_new_account(
                invitation=invitation, full_name=form.cleaned_data["full_name"], password=form.cleaned_data["password1"]
            )
        except ServiceError as exc:
            form.add_error(None, exc.message)
            return self._render(request, invitation, form, status=exc.status)
        except ValidationError as exc:  # the password validators
            form.add_error("password1", exc)
            return self._render(request, invitation, form, status=400)
        request.session.pop(INVITATION_SESSION_KEY, None)
        user = membership.user
        if mfa.mfa_required(user):  # dentists and clinic admins set up an authenticator before any session
            mfa_pending_start(request, user, next_url="", clinic_id=membership.clinic_id)
            return redirect("clinics:mfa")
        _, access = login_target(user, membership.clinic_id)
        complete_login(request, user, access)
        return redirect("clinics:home")


class InvitationRevokeView(ClinicView):
    def post(self, request: HttpRequest, pk: str) -> HttpResponse:
        invitation = get_object_or_404(Invitation.objects, pk=pk)
        invitation_revoke(invitation=invitation)
        messages.success(request, f"Invitation of {invitation.email} revoked.")
        return redirect("clinics:members")
