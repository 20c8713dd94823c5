"""The clinic's members (clinic admins): add, change role, deactivate, reset a lost second factor."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db.models import Exists, OuterRef
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render

from .forms import MemberAddForm, MemberUpdateForm
from .models import Membership, TotpDevice
from .services import ServiceError, member_add, member_mfa_reset, member_update
from .views_base import ClinicView


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
