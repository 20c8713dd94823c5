"""The number of SQL queries of a list request does not grow with the page size (no N+1)."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from analysis.models import Analysis, Finding
from clinics.tenancy import clinic_scope
from patients.models import Image
from patients.services import patient_create

from ..conftest import World, key_client

ROWS = 50


def _clone(instance, **changes):  # noqa: ANN001, ANN202
    fields = {f.attname: getattr(instance, f.attname) for f in type(instance)._meta.concrete_fields}
    fields.update(id=uuid.uuid4(), **changes)
    return type(instance)(**fields)


@pytest.fixture
def many(alice: World) -> World:
    """ROWS more patients; ROWS more images of alice's patient, each with a done analysis and 2 findings."""
    with clinic_scope(alice.clinic.id):
        for i in range(ROWS):
            patient_create(
                external_id=f"qc-{i:03d}",
                given_name="Query",
                family_name=f"Count{i}",
                date_of_birth=dt.date(1990, 1, 1),
            )
        images = Image.objects.bulk_create([_clone(alice.image) for _ in range(ROWS)])
        analyses = Analysis.objects.bulk_create([_clone(alice.analysis, image_id=im.pk) for im in images])
        Finding.objects.bulk_create(
            [
                _clone(alice.finding, analysis_id=a.pk, image_id=a.image_id, condition=c)
                for a in analyses
                for c in ("caries", "calculus")
            ]
        )
    return alice


def _queries(client, url: str, page_size: int) -> int:  # noqa: ANN001
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url, {"page_size": page_size})
    assert response.status_code == 200, response.content[:300]
    assert len(response.json()["results"]) == page_size
    return len(ctx.captured_queries)


@pytest.mark.parametrize(
    "endpoint",
    [
        pytest.param("patients", id="patients"),
        pytest.param("images", id="images"),
        pytest.param("analyses", id="analyses"),
    ],
)
def test_list_queries_do_not_grow_with_page_size(many: World, endpoint: str) -> None:
    url = {
        "patients": reverse("api:patient-list"),
        "images": reverse("api:patient-image-list", kwargs={"pk": many.patient.pk}),
        "analyses": reverse("api:analysis-list"),
    }[endpoint]
    client = key_client(many)
    _queries(client, url, 5)  # warm caches that are per process (model registry, keys)
    small, large = _queries(client, url, 5), _queries(client, url, ROWS)
    assert large == small, f"{endpoint}: {small} queries for 5 rows, {large} for {ROWS} rows (N+1)"


def _more_visits(world: World, count: int) -> None:
    """``count`` more patients, each with a visit of 2 images, a done analysis per image and 2 pending findings."""
    from patients.models import Visit

    with clinic_scope(world.clinic.id):
        for i in range(count):
            patient = patient_create(
                external_id=f"wl-{uuid.uuid4().hex[:8]}",
                given_name="Work",
                family_name=f"List{i}",
                date_of_birth=dt.date(1990, 1, 1),
            )
            visit = Visit.objects.create(patient=patient, visit_date=dt.date(2026, 1, 1))
            images = Image.objects.bulk_create(
                [_clone(world.image, patient_id=patient.pk, visit_id=visit.pk) for _ in range(2)]
            )
            analyses = Analysis.objects.bulk_create([_clone(world.analysis, image_id=im.pk) for im in images])
            Finding.objects.bulk_create(
                [
                    _clone(world.finding, analysis_id=a.pk, image_id=a.image_id, condition=c)
                    for a in analyses
                    for c in ("caries", "calculus")
                ]
            )


def test_worklist_queries_do_not_grow_with_the_visits(alice: World) -> None:
    from ..conftest import user_client

    client = user_client(alice.users["dentist"])
    url = reverse("analysis:worklist")

    def queries() -> int:
        with CaptureQueriesContext(connection) as ctx:
            response = client.get(url)
        assert response.status_code == 200
        return len(ctx.captured_queries)

    _more_visits(alice, 2)
    queries()  # warm per-process caches
    few = queries()
    _more_visits(alice, 12)
    many = queries()
    assert "List11" in client.get(url).content.decode()  # the new visits are listed, with their patients' names
    assert many == few, f"worklist: {few} queries for 3 visits, {many} for 15 (N+1)"
