"""The visit's chart by tooth, and the patient report (HTML, PDF) and FHIR export grouped by tooth: restorations
and implants are the tooth's status, not problems, and each problem is explained once."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.urls import reverse
from pypdf import PdfReader

from analysis.models import AnalysisSettings, Finding
from clinics.models import AuditEvent
from clinics.tenancy import clinic_scope

from ..conftest import World, token_client, user_client

pytestmark = pytest.mark.django_db


def _findings(world: World) -> dict[str, Finding]:
    """Beside the fixture's caries (pending): a second caries and a filling on 16, an implant on 36, an ulcer with
    no tooth, and a rejected calculus on 11."""
    with clinic_scope(world.clinic.id):
        Finding.objects.filter(pk=world.finding.pk).update(tooth="16", surfaces="MO")

        def add(condition: str, **extra: Any) -> Finding:
            return Finding.objects.create(
                analysis=world.analysis,
                image=world.image,
                condition=condition,
                probability=0.9,
                box=[0.5, 0.5, 0.1, 0.1],
                **extra,
            )

        return {
            "caries2": add("caries", tooth="16", status="confirmed"),
            "filling": add("filling", tooth="16", status="confirmed"),
            "implant": add("implant", tooth="36", status="confirmed"),
            "ulcer": add("ulcer", status="confirmed"),
            "calculus": add("calculus", tooth="11", status="rejected", reason="not_present"),
        }


def _chart(world: World, role: str = "dentist") -> Any:
    return user_client(world.users[role]).get(reverse("analysis:chart", kwargs={"pk": world.image.visit_id}))


def test_the_chart_groups_by_tooth(alice: World) -> None:
    _findings(alice)
    response = _chart(alice, "staff")
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    html = response.content.decode()
    assert 'data-testid="chart-tooth" data-fdi="16"' in html and 'data-fdi="36"' in html
    assert 'data-testid="chart-tooth" data-fdi="11"' not in html  # rejected: not charted
    tooth16 = html.split('data-testid="chart-tooth" data-fdi="16"')[1].split("</li>")[0]
    assert "<strong>Status:</strong> Filling" in tooth16
    assert "<strong>Problems:</strong> Caries" in tooth16 and "<strong>Undecided:</strong> Caries" in tooth16
    tooth36 = html.split('data-testid="chart-tooth" data-fdi="36"')[1].split("</li>")[0]
    assert "Status:</strong> Implant" in tooth36 and "Problems" not in tooth36
    assert "No tooth assigned" in html and "Ulcer" in html.split('data-testid="chart-unassigned"')[1]
    assert 'class="chart-tooth has-problem has-status has-pending" data-fdi="16"' in html
    assert AuditEvent.unscoped.filter(clinic=alice.clinic, action="chart.view").count() == 1


def test_the_chart_uses_the_clinic_notation(alice: World) -> None:
    _findings(alice)
    with clinic_scope(alice.clinic.id):
        AnalysisSettings.objects.create(tooth_notation="palmer")
    html = _chart(alice).content.decode()
    assert "Tooth UR6 (upper right first molar)" in html and "Tooth LL6 (lower left first molar)" in html


def test_another_clinic_cannot_open_the_chart(alice: World, bob: World) -> None:
    response = user_client(bob.users["dentist"]).get(reverse("analysis:chart", kwargs={"pk": alice.image.visit_id}))
    assert response.status_code == 404


def _sign(world: World) -> None:
    api = token_client(world, "dentist")
    review = reverse("api:finding-review", kwargs={"pk": world.finding.pk})
    assert api.post(review, {"decision": "confirm"}, format="json").status_code == 200
    assert api.post(reverse("api:visit-report", kwargs={"pk": world.image.visit_id})).status_code == 201


def test_the_report_groups_by_tooth_and_explains_each_problem_once(alice: World) -> None:
    _findings(alice)
    with clinic_scope(alice.clinic.id):
        AnalysisSettings.objects.create(tooth_notation="universal")
    _sign(alice)
    staff = user_client(alice.users["staff"])
    html = staff.get(reverse("analysis:report", kwargs={"pk": alice.image.visit_id})).content.decode()
    teeth = html.split('id="by-tooth"')[1].split("</section>")[0]
    assert "Tooth 3 (upper right first molar)" in teeth and "Tooth 19 (lower left first molar)" in teeth
    tooth3 = teeth.split('data-fdi="16"')[1].split("</li>\n      \n")[0]
    assert tooth3.count("Tooth decay (caries)") == 2 and "(surfaces MO)" in tooth3
    assert 'Existing filling <span class="muted">· Existing treatment (not a new problem)' in tooth3
    assert "Not linked to a tooth" in teeth and "Mouth ulcer" in teeth
    assert "Tartar" not in teeth  # rejected
    explained = html.split('id="meaning-title"')[1].split("</section>")[0]
    assert explained.count('data-testid="explanation"') == 2  # caries and ulcer, once each
    assert "Tooth decay (caries)" in explained and "Mouth ulcer" in explained
    assert "Existing filling" not in explained and "Dental implant" not in explained

    pdf = staff.get(reverse("analysis:report-pdf", kwargs={"pk": alice.image.visit_id}))
    text = " ".join(" ".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf.content)).pages).split())
    assert "Your teeth" in text and "Tooth 3 (upper right first molar)" in text
    assert text.count("Tooth decay is damage") == 1  # explained once
    assert "A filling from earlier dental treatment" not in text  # a status, not a problem to explain

    bundle = token_client(alice, "staff").get(reverse("api:visit-report-fhir", kwargs={"pk": alice.image.visit_id}))
    sites = {
        o["resource"]["id"]: o["resource"].get("bodySite")
        for o in bundle.json()["entry"]
        if o["resource"]["resourceType"] == "Observation"
    }
    assert sites[str(alice.finding.pk)]["coding"][0]["code"] == "865995000"
    assert len([s for s in sites.values() if s]) == 4 and sum(s is None for s in sites.values()) == 1
