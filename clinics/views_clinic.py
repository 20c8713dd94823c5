"""The clinic one works in: its home page, and switching to another clinic of one's memberships."""

from __future__ import annotations

from django.db.models import Count
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme

from .access import access_for_session, access_for_user
from .models import Membership
from .selectors import memberships_of
from .sessions import clinic_pick
from .views_base import ClinicView


def _safe(request: HttpRequest, url: str) -> str:
    return url if url_has_allowed_host_and_scheme(url, {request.get_host()}, request.is_secure()) else ""


class SwitchClinicView(ClinicView):
    def post(self, request: HttpRequest) -> HttpResponse:
        target = access_for_user(request.user, request.POST.get("clinic", ""))
        if target is None or str(target.clinic.id) != request.POST.get("clinic"):
            return HttpResponseBadRequest("Not a clinic you belong to.")
        clinic_pick(request, target, switched_from=self.access.clinic.id if self.access else None)
        return redirect("clinics:home")


class PickClinicView(ClinicView):
    """After log-in, a person who works in several clinics picks the one this session works in."""

    def get(self, request: HttpRequest) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect("clinics:login")
        if access_for_session(request.user, request.session) is not None:
            return redirect(_safe(request, request.GET.get("next", "")) or "clinics:home")
        memberships = list(memberships_of(request.user))
        if not memberships:
            return render(request, "clinics/no_clinic.html", status=403)
        return render(
            request, "clinics/pick_clinic.html", {"memberships": memberships, "next": request.GET.get("next", "")}
        )

    def post(self, request: HttpRequest) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect("clinics:login")
        target = access_for_user(request.user, request.POST.get("clinic", ""))
        if target is None or str(target.clinic.id) != request.POST.get("clinic"):
            return HttpResponseBadRequest("Not a clinic you belong to.")
        current = access_for_session(request.user, request.session)
        clinic_pick(request, target, switched_from=current.clinic.id if current else None)
        return redirect(_safe(request, request.POST.get("next", "")) or "clinics:home")


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
