"""The clinic one works in: its home page, and switching to another clinic of one's memberships."""

from __future__ import annotations

from django.db.models import Count
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect, render

from . import audit
from .access import SESSION_CLINIC_KEY, access_for_user
from .models import Membership
from .views_base import ClinicView


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
