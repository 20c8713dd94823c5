"""Signing, amendments, clinician findings, and the agreement figures."""

from __future__ import annotations

from django.urls import reverse

from analysis.models import Analysis, AnalysisSettings, Finding, Report
from analysis.monitoring import agreement
from analysis.reports import report_content
from analysis.webhooks import webhook_register
from clinics.models import AuditEvent
from clinics.tenancy import clinic_scope

from ..conftest import World, fixture_model_version, token_client


def _sign(world: World, role: str = "dentist"):  # noqa: ANN202
    return token_client(world, role).post(reverse("api:visit-report", kwargs={"pk": world.image.visit_id}))


def test_sign_needs_decisions_then_locks_and_amendment_keeps_both_versions(alice: World) -> None:
    dentist = token_client(alice, "dentist")
    review = reverse("api:finding-review", kwargs={"pk": alice.finding.pk})
    pending = _sign(alice)
    assert pending.status_code == 409 and pending.json()["error"]["code"] == "findings_pending"
    assert _sign(alice, "staff").status_code == 403 and _sign(alice, "clinic_admin").status_code == 403
    assert dentist.post(review, {"decision": "confirm"}, format="json").status_code == 200
    added = dentist.post(
        reverse("api:image-finding-add", kwargs={"pk": alice.image.pk}),
        {"condition": "calculus", "box": [0.5, 0.5, 0.2, 0.1]},
        format="json",
    )
    assert added.status_code == 201 and added.json()["source"] == "clinician"
    signed = _sign(alice)
    assert signed.status_code == 201 and signed.json()["version"] == 1
    v1 = signed.json()["id"]

    locked = dentist.post(review, {"decision": "reject", "reason": "not_present"}, format="json")
    assert locked.status_code == 409 and locked.json()["error"]["code"] == "report_signed"
    assert _sign(alice).status_code == 409
    assert (
        dentist.post(
            reverse("api:image-finding-add", kwargs={"pk": alice.image.pk}),
            {"condition": "ulcer", "box": [0.1, 0.1, 0.1, 0.1]},
            format="json",
        ).status_code
        == 409
    )

    amend_url = reverse("api:visit-amendment", kwargs={"pk": alice.image.visit_id})
    assert token_client(alice, "staff").post(amend_url, {"reason": "x"}, format="json").status_code == 403
    assert dentist.post(amend_url, {"reason": "Second look: not caries"}, format="json").status_code == 201
    assert dentist.post(review, {"decision": "reject", "reason": "wrong_condition"}, format="json").status_code == 200
    signed2 = _sign(alice)
    assert signed2.status_code == 201
    body = signed2.json()
    assert body["version"] == 2 and body["amends"] == v1 and body["amendment_reason"] == "Second look: not caries"

    versions = dentist.get(reverse("api:visit-report", kwargs={"pk": alice.image.visit_id})).json()
    assert [r["version"] for r in versions] == [2, 1]
    with clinic_scope(alice.clinic.id):
        first = report_content(Report.objects.select_related("visit__patient").get(pk=v1))
        second = report_content(Report.objects.select_related("visit__patient").get(pk=body["id"]))
        stored = bytes(Report.objects.get(pk=v1).content)
    status_of = {f["id"]: f["status"] for f in first["images"][0]["findings"]}
    assert status_of[str(alice.finding.pk)] == "confirmed"  # the original is kept as signed
    assert {f["id"]: f["status"] for f in second["images"][0]["findings"]}[str(alice.finding.pk)] == "rejected"
    assert first["patient"]["family_name"] == alice.patient_name and alice.patient_name.encode() not in stored
    assert AuditEvent.unscoped.filter(action="report.sign", clinic=alice.clinic).count() == 2


def test_adjusting_a_box_is_a_confirmation_with_before_and_after(alice: World) -> None:
    response = token_client(alice, "dentist").post(
        reverse("api:finding-review", kwargs={"pk": alice.finding.pk}),
        {"decision": "adjust", "box": [0.2, 0.25, 0.3, 0.3]},
        format="json",
    )
    assert response.status_code == 200
    assert response.json()["box"] == [0.2, 0.25, 0.3, 0.3] and response.json()["status"] == "confirmed"
    bad = token_client(alice, "dentist").post(
        reverse("api:finding-review", kwargs={"pk": alice.finding.pk}),
        {"decision": "adjust", "box": [0.9, 0.9, 0.5, 0.5]},
        format="json",
    )
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_box"
    with clinic_scope(alice.clinic.id):
        decision = alice.finding.decisions.get(decision="adjust")
    assert decision.before["box"] == [0.1, 0.2, 0.3, 0.25] and decision.after["box"] == [0.2, 0.25, 0.3, 0.3]


def test_agreement_figures_match_a_seeded_set_of_reviews(alice: World, bob: World) -> None:
    model = fixture_model_version()
    seeded = {  # condition -> statuses (with reasons for rejections) of the model's suggestions
        "caries": ["confirmed"] * 3 + [("rejected", "not_present")] * 2 + [("rejected", "image_quality")] + ["pending"],
        "gingivitis": ["confirmed"] * 4,
        "ulcer": [("rejected", "wrong_condition")] * 2 + ["pending"] * 2,
    }
    with clinic_scope(alice.clinic.id):
        Finding.objects.all().delete()
        analysis = Analysis.objects.get(pk=alice.analysis.pk)
        for condition, statuses in seeded.items():
            for item in statuses:
                status, reason = item if isinstance(item, tuple) else (item, "")
                Finding.objects.create(
                    analysis=analysis,
                    image=alice.image,
                    condition=condition,
                    probability=0.8,
                    box=[0, 0, 0.5, 0.5],
                    status=status,
                    reason=reason,
                )
        for _ in range(2):
            Finding.objects.create(
                image=alice.image, source="clinician", condition="caries", box=[0, 0, 0.1, 0.1], status="confirmed"
            )
        # neither counts: a candidate kept below the threshold (never shown) and an added finding rejected later
        Finding.objects.create(
            analysis=analysis, image=alice.image, condition="caries", probability=0.1, box=[0, 0, 0.2, 0.2]
        )
        Finding.objects.create(
            image=alice.image,
            source="clinician",
            condition="caries",
            box=[0, 0, 0.1, 0.1],
            status="rejected",
            reason="not_present",
        )
        rows = {row["condition"]: row for row in agreement()}
    mid = model.model_id
    assert rows["caries"] == {
        "model": mid,
        "condition": "caries",
        "confirmed": 3,
        "rejected": 3,
        "pending": 1,
        "decided": 6,
        "ppv": 0.5,
        "added_by_clinicians": 2,
        "rejected_by_reason": {"not_present": 2, "image_quality": 1},
    }
    assert rows["gingivitis"]["ppv"] == 1.0 and rows["gingivitis"]["decided"] == 4
    assert rows["ulcer"]["ppv"] == 0.0 and rows["ulcer"]["pending"] == 2
    assert rows["ulcer"]["rejected_by_reason"] == {"wrong_condition": 2}
    api = token_client(alice, "clinic_admin").get(reverse("api:monitoring-agreement")).json()
    assert {r["condition"]: r["ppv"] for r in api} == {"caries": 0.5, "gingivitis": 1.0, "ulcer": 0.0}
    assert token_client(alice, "dentist").get(reverse("api:monitoring-agreement")).status_code == 403
    with clinic_scope(bob.clinic.id):  # another clinic's figures are its own
        assert [(r["condition"], r["pending"]) for r in agreement()] == [("caries", 1)]


def test_signing_emits_report_signed_to_the_clinics_webhooks(alice: World, bob: World) -> None:
    from analysis.models import WebhookDelivery

    with clinic_scope(alice.clinic.id):
        webhook_register(url="https://pms.example/hook", events=["report.signed"])
    with clinic_scope(bob.clinic.id):
        webhook_register(url="https://other.example/hook", events=[])
    token_client(alice, "dentist").post(
        reverse("api:finding-review", kwargs={"pk": alice.finding.pk}), {"decision": "confirm"}, format="json"
    )
    assert _sign(alice).status_code == 201
    deliveries = list(WebhookDelivery.unscoped.all())
    assert [(d.event, d.endpoint.url) for d in deliveries] == [("report.signed", "https://pms.example/hook")]
    assert deliveries[0].payload["data"]["version"] == 1


def test_signed_report_as_html_pdf_and_fhir(alice: World, bob: World) -> None:
    from fhir.resources.R4B.bundle import Bundle

    from ..conftest import user_client

    staff = user_client(alice.users["staff"])
    assert b"not signed yet" in staff.get(reverse("analysis:report", kwargs={"pk": alice.image.visit_id})).content
    fhir_url = reverse("api:visit-report-fhir", kwargs={"pk": alice.image.visit_id})
    assert token_client(alice, "staff").get(fhir_url).status_code == 409
    token_client(alice, "dentist").post(
        reverse("api:finding-review", kwargs={"pk": alice.finding.pk}), {"decision": "confirm"}, format="json"
    )
    assert _sign(alice).status_code == 201

    page = staff.get(reverse("analysis:report", kwargs={"pk": alice.image.visit_id}))
    assert page.status_code == 200 and page["Cache-Control"] == "no-store"
    html = page.content.decode()
    assert alice.patient_name in html and "Tooth decay" in html and "Reviewed and signed by" in html
    # the confirmed finding's box is drawn on the image, in the colour of its list entry (and of the PDF)
    from analysis.report_wording import condition_colour

    colour = condition_colour(alice.finding.condition)
    rect = f'<rect data-testid="report-box" x="0.1000" y="0.2000" width="0.3000" height="0.2500" stroke="{colour}">'
    assert rect in html and f"--swatch: {colour}" in html
    pdf = staff.get(reverse("analysis:report-pdf", kwargs={"pk": alice.image.visit_id}))
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF") and pdf["Content-Type"] == "application/pdf"

    response = token_client(alice, "staff").get(fhir_url)
    assert response.status_code == 200 and response["Content-Type"] == "application/fhir+json"
    bundle = response.json()
    Bundle.model_validate(bundle)
    kinds = [e["resource"]["resourceType"] for e in bundle["entry"]]
    assert kinds.count("DiagnosticReport") == 1 and kinds.count("Observation") == 1
    report = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "DiagnosticReport")
    assert report["status"] == "final"
    from ..conftest import key_client

    assert key_client(alice).get(fhir_url).status_code == 200  # integrations pull the reviewed result
    assert key_client(bob).get(fhir_url).status_code == 404
    assert AuditEvent.unscoped.filter(action="report.export", clinic=alice.clinic).count() == 2


def test_a_patient_with_an_amended_report_can_be_erased(alice: World, django_capture_on_commit_callbacks) -> None:  # noqa: ANN001
    """Version 2 of a report ``amends`` version 1; erasure deletes both with the visit (Art. 17) instead of
    failing on the reference between them -- while version 1 alone still cannot be deleted under version 2."""
    from django.db.models import RestrictedError

    from patients.models import Patient, Visit

    dentist = token_client(alice, "dentist")
    review = reverse("api:finding-review", kwargs={"pk": alice.finding.pk})
    assert dentist.post(review, {"decision": "confirm"}, format="json").status_code == 200
    assert _sign(alice).status_code == 201
    amend_url = reverse("api:visit-amendment", kwargs={"pk": alice.image.visit_id})
    assert dentist.post(amend_url, {"reason": "Second look"}, format="json").status_code == 201
    assert _sign(alice).status_code == 201
    with clinic_scope(alice.clinic.id):
        v1 = Report.objects.get(version=1)
        try:
            v1.delete()
        except RestrictedError:
            pass
        else:
            raise AssertionError("version 1 was deleted while version 2 amends it")

    with django_capture_on_commit_callbacks(execute=True):
        response = token_client(alice, "clinic_admin").delete(
            reverse("api:patient-detail", kwargs={"pk": alice.patient.pk})
        )
    assert response.status_code == 204, response.content
    assert not Patient.unscoped.filter(pk=alice.patient.pk).exists()
    assert not Visit.unscoped.filter(patient_id=alice.patient.pk).exists()
    assert not Report.unscoped.filter(visit_id=alice.image.visit_id).exists()


def test_the_patient_export_holds_findings_decisions_reports_and_amendments(alice: World, bob: World) -> None:
    import io
    import json
    import zipfile

    dentist = token_client(alice, "dentist")
    review = reverse("api:finding-review", kwargs={"pk": alice.finding.pk})
    assert dentist.post(review, {"decision": "confirm"}, format="json").status_code == 200
    added = dentist.post(
        reverse("api:image-finding-add", kwargs={"pk": alice.image.pk}),
        {"condition": "calculus", "box": [0.5, 0.5, 0.2, 0.1]},
        format="json",
    ).json()
    v1 = _sign(alice).json()
    amend_url = reverse("api:visit-amendment", kwargs={"pk": alice.image.visit_id})
    assert dentist.post(amend_url, {"reason": "Second look"}, format="json").status_code == 201
    assert dentist.post(review, {"decision": "reject", "reason": "not_present"}, format="json").status_code == 200
    v2 = _sign(alice).json()

    response = token_client(alice, "clinic_admin").get(reverse("api:patient-export", kwargs={"pk": alice.patient.pk}))
    assert response.status_code == 200
    record = json.loads(zipfile.ZipFile(io.BytesIO(response.content)).read("patient.json"))
    (visit,) = record["visits"]
    (image,) = visit["images"]
    assert [a["id"] for a in image["analyses"]] == [str(alice.analysis.pk)]
    assert image["analyses"][0]["model"] == alice.analysis.model_version.model_id
    findings = {f["id"]: f for f in image["findings"]}
    assert findings.keys() == {str(alice.finding.pk), added["id"]}
    model_finding = findings[str(alice.finding.pk)]
    assert (model_finding["condition"], model_finding["status"], model_finding["reason"]) == (
        "caries",
        "rejected",
        "not_present",
    )
    assert [(d["decision"], d["reason"]) for d in model_finding["decisions"]] == [
        ("confirm", ""),
        ("reject", "not_present"),
    ]
    assert all(d["by"] == alice.users["dentist"].email for d in model_finding["decisions"])
    assert findings[added["id"]]["source"] == "clinician" and findings[added["id"]]["box"] == [0.5, 0.5, 0.2, 0.1]
    assert [(r["id"], r["version"], r["amends"]) for r in visit["reports"]] == [
        (v1["id"], 1, None),
        (v2["id"], 2, v1["id"]),
    ]
    assert all(r["content"] and r["signed_by"] == alice.users["dentist"].email for r in visit["reports"])
    assert alice.patient_name in json.dumps(visit["reports"][0]["content"])  # the snapshot as signed, decrypted
    (amendment,) = visit["amendments"]
    assert amendment["reason"] == "Second look" and amendment["closed_by_report"] == v2["id"]
    assert str(bob.finding.pk) not in json.dumps(record)


def test_a_signed_visit_takes_no_more_scans(alice: World) -> None:
    import io

    from patients.models import Image

    from ..conftest import png_bytes

    def upload(**fields):  # noqa: ANN003, ANN202
        f = io.BytesIO(png_bytes((96, 72)))
        f.name = "later.png"
        return token_client(alice, "staff").post(
            reverse("api:patient-image-list", kwargs={"pk": alice.patient.pk}),
            {"file": f, "modality": "photo", **fields},
            format="multipart",
        )

    dentist = token_client(alice, "dentist")
    review = reverse("api:finding-review", kwargs={"pk": alice.finding.pk})
    assert dentist.post(review, {"decision": "confirm"}, format="json").status_code == 200
    assert _sign(alice).status_code == 201
    signed_visit = alice.image.visit_id
    with clinic_scope(alice.clinic.id):
        before = Image.objects.count()
    refused = upload(visit=str(signed_visit))
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "visit_signed"
    with clinic_scope(alice.clinic.id):
        assert Image.objects.count() == before and Image.objects.filter(visit_id=signed_visit).count() == 1
    # A later scan the same day starts a new visit, and the next one joins it.
    first, second = upload(), upload()
    assert first.status_code == 201 and second.status_code == 201
    assert first.json()["visit"] != str(signed_visit) and second.json()["visit"] == first.json()["visit"]
    # An amendment opens the signed visit again.
    amend_url = reverse("api:visit-amendment", kwargs={"pk": signed_visit})
    assert dentist.post(amend_url, {"reason": "add the bitewing"}, format="json").status_code == 201
    assert upload(visit=str(signed_visit)).status_code == 201


def test_a_report_says_which_images_the_software_did_not_check(alice: World) -> None:
    """A failed analysis, or an X-ray with no X-ray model installed, must not read as "nothing found"."""
    import io

    from fhir.resources.R4B.bundle import Bundle
    from pypdf import PdfReader

    from analysis.report_wording import NOT_ANALYSED

    from ..conftest import png_bytes, user_client

    def upload(modality: str) -> str:
        f = io.BytesIO(png_bytes((96, 72)))
        f.name = "scan.png"
        response = token_client(alice, "staff").post(
            reverse("api:patient-image-list", kwargs={"pk": alice.patient.pk}),
            {"file": f, "modality": modality},
            format="multipart",
        )
        assert response.status_code == 201, response.content
        return response.json()["id"]

    failed, unanalysed = upload("xray"), upload("photo")
    with clinic_scope(alice.clinic.id):
        assert Analysis.objects.filter(image_id=failed).update(status="failed") == 1  # the model crashed on it
        Analysis.objects.filter(image_id=unanalysed).delete()  # as when no model for its kind is installed
    dentist = token_client(alice, "dentist")
    dentist.post(reverse("api:finding-review", kwargs={"pk": alice.finding.pk}), {"decision": "confirm"}, format="json")
    signed = _sign(alice)
    assert signed.status_code == 201, signed.content
    with clinic_scope(alice.clinic.id):
        snapshot = report_content(Report.objects.get(visit_id=alice.image.visit_id))
    states = {image["id"]: image["analysis"] for image in snapshot["images"]}
    assert states == {str(alice.image.pk): "done", failed: "failed", unanalysed: "none"}

    staff = user_client(alice.users["staff"])
    html = staff.get(reverse("analysis:report", kwargs={"pk": alice.image.visit_id})).content.decode()
    assert html.count('data-testid="not-analysed"') == 2
    assert NOT_ANALYSED["none"] in html and NOT_ANALYSED["failed"] in html
    assert html.count("Your dentist did not note any problems on this image.") == 2
    pdf = staff.get(reverse("analysis:report-pdf", kwargs={"pk": alice.image.visit_id})).content
    text = " ".join(" ".join(p.extract_text().split()) for p in PdfReader(io.BytesIO(pdf)).pages)
    assert "The AI software does not check this kind of image" in text and "could not check this image" in text
    bundle = token_client(alice, "staff").get(reverse("api:visit-report-fhir", kwargs={"pk": alice.image.visit_id}))
    Bundle.model_validate(bundle.json())
    report = next(e["resource"] for e in bundle.json()["entry"] if e["resource"]["resourceType"] == "DiagnosticReport")
    assert "2 image(s) were not checked by the AI software" in report["conclusion"]


def test_suggestions_the_clinic_hides_are_not_pending_in_the_agreement(alice: World) -> None:
    with clinic_scope(alice.clinic.id):
        Analysis.objects.filter(pk=alice.analysis.pk).update(unfamiliar=True)
        Finding.objects.filter(pk=alice.finding.pk).update(status="pending", probability=0.99)
        before = sum(row["pending"] for row in agreement())
        AnalysisSettings.objects.create(unfamiliar_findings="hide")
        after = sum(row["pending"] for row in agreement())
    assert (before, after) == (1, 0)
