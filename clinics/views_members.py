"""The clinic's members (clinic admins): invite, change role, deactivate, reset a lost second factor.

Invariant: the page shows only what this clinic gave or was given: the address it invited, the role, the name
the person chose to show to this clinic, and a second factor's status only for accounts this clinic created.
Inviting answers the same (status, page, headers) whether or not the address has an account anywhere."""

from __future__ import annotations

from datetime import timedelta

from django.contrib import messages
from django.db.models import Exists, OuterRef
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone

from . import ratelimit
from .forms import InvitationForm, MemberUpdateForm
from .models import Invitation, Membership, Role, TotpDevice
from .services import ServiceError, invitation_create, member_mfa_reset, member_update
from .views_base import ClinicView


class MembersView(ClinicView):
    def _render(self, request: HttpRequest, form: InvitationForm, status: int = 200) -> HttpResponse:
        authenticator = TotpDevice.objects.filter(user=OuterRef("user"), confirmed_at__isnull=False)
        memberships = (
            Membership.objects.select_related("user")
            .annotate(has_authenticator=Exists(authenticator))
            .order_by("-is_active", "user__email")
        )
        invitations = Invitation.objects.filter(
            accepted_at=None, revoked_at=None, expires_at__gt=timezone.now() - timedelta(days=30)
        ).order_by("-created_at")
        return render(
            request,
            "clinics/members.html",
            {"form": form, "memberships": memberships, "invitations": invitations, "roles": Role.choices},
            status=status,
        )

    def get(self, request: HttpRequest) -> HttpResponse:
        return self._render(request, InvitationForm())

    def post(self, request: HttpRequest) -> HttpResponse:
        form = InvitationForm(request.POST)
        if form.is_valid():
            # at most a few invitations of one address a day from this clinic (whether or not it has an account)
            retry_after = ratelimit.hit_address(
                "invitation_address", form.cleaned_data["email"], clinic_id=self.access.clinic.id
            )
            if retry_after is not None:
                form.add_error(None, "This address was invited too often today. Try again tomorrow.")
                response = self._render(request, form, status=429)
                response["Retry-After"] = str(retry_after)
                return response
            try:
                invitation_create(
                    email=form.cleaned_data["email"],
                    role=form.cleaned_data["role"],
                    invited_by=request.user,
                    domain=request.get_host(),
                    use_https=request.is_secure(),
                )
            except ServiceError as exc:
                form.add_error(None, exc.message)
            else:
                # One message for every address: it names none, so the answer is the same byte for byte.
                messages.success(request, "Invitation sent. It shows as pending below until the person accepts it.")
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
