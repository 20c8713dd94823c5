"""The image gate in the platform: an image the AI cannot judge is stored, its analysis says "not assessable" and
why (at upload already), nothing is queued, and the review page, the report, FHIR, the API and analyze_images
all say "not assessed by the AI" instead of "no findings". Unfamiliar images are marked and can be hidden."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from django.core.management import call_command
from django.urls import reverse
from PIL import Image as PILImage

from analysis import fhir
from analysis.ml import gate
from analysis.models import Analysis, AnalysisSettings, Finding
from analysis.registry import model_register
from analysis.report_wording import render_html_context
from analysis.reports import report_content, report_sign
from analysis.selectors import visit_findings
from analysis.services import Claimed, analysis_claim, analysis_finish, image_gate
from clinics.models import AuditEvent
from clinics.tenancy import clinic_scope
from tests.ml.conftest import random_artifact  # noqa: F401 - fixture

from ..conftest import World, token_client, user_client


@pytest.fixture
def gated_model(random_artifact: Path, db: object):  # noqa: F811, ANN201
    """The random test model, declaring the image gate as the shipped models do."""
    meta_path = random_artifact / "model.json"
    meta = json.loads(meta_path.read_text())
    meta["image_gate"] = "v1"
    meta_path.write_text(json.dumps(meta))
    return model_register(artifact_dir=random_artifact)


def _png(arr: np.ndarray) -> bytes:
    out = io.BytesIO()
    PILImage.fromarray(arr.astype(np.uint8)).save(out, "PNG")
    return out.getvalue()


def blurred_photo() -> bytes:
    """A colourful, evenly exposed image without any detail: what a shaken camera gives."""
    y, x = np.mgrid[0:300, 0:400]
    red = 150 + 60 * np.sin(x / 90.0)
    green = 70 + 30 * np.cos(y / 80.0)
    blue = 80 + 20 * np.sin((x + y) / 120.0)
    return _png(np.stack([red, green, blue], axis=-1))


def grey_radiograph_like() -> bytes:
    """A sharp greyscale texture (no colour at all), as a radiograph is."""
    rng = np.random.default_rng(3)
    grey = rng.integers(30, 230, size=(300, 400)).astype(np.float64)
    return _png(np.repeat(grey[..., None], 3, axis=-1))


def _upload(world: World, data: bytes, modality: str = "photo"):  # noqa: ANN202
    f = io.BytesIO(data)
    f.name = "scan.png"
    return token_client(world, "staff").post(
        reverse("api:patient-image-list", kwargs={"pk": world.patient.pk}),
        {"file": f, "modality": modality},
        format="multipart",
    )


def test_a_blurred_photo_is_stored_not_queued_and_says_why_at_once(
    alice: World,
    gated_model,
    django_capture_on_commit_callbacks,  # noqa: ANN001
) -> None:
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = _upload(alice, blurred_photo())
    assert response.status_code == 201, response.content
    summary = response.json()["analysis"]
    assert summary["status"] == "not_assessable"
    assert summary["not_assessable"]["code"] == "blurred"
    assert "retake" in summary["not_assessable"]["message"].lower()
    assert not any("_enqueue" in repr(c) for c in callbacks)  # nothing sent to a worker
    body = token_client(alice, "dentist").get(reverse("api:analysis-detail", kwargs={"pk": summary["id"]})).json()
    assert body["status"] == "not_assessable" and body["findings"] == []
    assert body["not_assessable"] == summary["not_assessable"]
    assert AuditEvent.unscoped.filter(action="analysis.not_assessable", object_id=summary["id"]).exists()
    with clinic_scope(alice.clinic.id):  # the image itself is kept, for the dentist to review by hand
        assert Analysis.objects.get(pk=summary["id"]).image.original_key


def test_a_radiograph_sent_as_a_photo_is_refused_as_wrong_modality(alice: World, gated_model) -> None:  # noqa: ANN001
    response = _upload(alice, grey_radiograph_like())
    assert response.status_code == 201
    assert response.json()["analysis"]["not_assessable"]["code"] == "wrong_modality"


def test_a_colour_photo_sent_as_an_x_ray_is_refused_from_its_colours() -> None:
    rng = np.random.default_rng(1)
    photo = PILImage.fromarray(
        np.stack(
            [rng.integers(120, 250, (300, 400)), rng.integers(20, 90, (300, 400)), rng.integers(30, 80, (300, 400))], -1
        ).astype(np.uint8)
    )
    grey = photo.convert("L")  # what intake stores for an X-ray
    result = image_gate(grey, "xray", colour_hint=photo, meta={"image_gate": "v1"})
    assert result is not None and not result.assessable and result.code == "wrong_modality"


def test_a_model_without_the_gate_gets_every_image(alice: World) -> None:
    assert image_gate(PILImage.new("RGB", (40, 30)), "photo", meta={"name": "home-made"}) is None


def test_a_fault_of_the_gate_never_refuses_an_upload(alice: World, gated_model, monkeypatch) -> None:  # noqa: ANN001
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("gate bug")

    monkeypatch.setattr(gate, "check_image", broken)
    response = _upload(alice, blurred_photo())
    assert response.status_code == 201
    assert response.json()["analysis"]["status"] in ("queued", "running", "done")


def test_the_report_fhir_and_review_say_not_assessed_never_no_findings(alice: World, gated_model) -> None:  # noqa: ANN001
    response = _upload(alice, blurred_photo())
    image_id = response.json()["id"]
    with clinic_scope(alice.clinic.id):
        image = Analysis.objects.get(pk=response.json()["analysis"]["id"]).image
    page = user_client(alice.users["dentist"]).get(reverse("analysis:review", kwargs={"pk": image.visit_id}))
    assert page.status_code == 200 and b"not_assessable" in page.content and b"blurred" in page.content
    with clinic_scope(alice.clinic.id):
        Finding.objects.filter(image__visit=image.visit).exclude(image=image).update(status="confirmed")
        report = report_sign(visit=image.visit, signer=alice.users["dentist"])
        snapshot = report_content(report)
    item = next(i for i in snapshot["images"] if i["id"] == image_id)
    assert item["analysis"] == "not_assessable" and item["not_assessable"]["code"] == "blurred"
    wording = render_html_context(snapshot)
    shown = next(i for i in wording["images"] if i["id"] == image_id)
    assert "did not assess this image" in shown["analysis_note"] and "blurred" in shown["analysis_note"]
    bundle = fhir.report_bundle(snapshot)
    text = json.dumps(bundle)
    assert "not assessed by the AI" in text and "blurred" in text
    # the narrative, which most FHIR viewers show instead of the coded parts, says it too
    [diagnostic] = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "DiagnosticReport"]
    assert "not assessed by the AI" in diagnostic["text"]["div"] and "blurred" in diagnostic["text"]["div"]


def _finished(world: World, model, result: dict) -> Analysis:  # noqa: ANN001
    with clinic_scope(world.clinic.id):
        analysis = Analysis.objects.create(image=world.image, model_version=model, input_sha256=world.image.sha256)
        token = analysis_claim(analysis.pk)
        assert analysis_finish(Claimed(Analysis.objects.get(pk=analysis.pk), token), result)
        return Analysis.objects.get(pk=analysis.pk)


def test_the_model_s_own_out_of_distribution_refusal_is_recorded(alice: World, gated_model) -> None:  # noqa: ANN001
    refusal = {"assessable": False, "code": "out_of_distribution", "message": "Unlike any photo the AI knows."}
    result = {"scores": {"caries": 0.9}, "findings": [], "gate": refusal, "ood_score": 9.0}
    analysis = _finished(alice, gated_model, result)
    assert analysis.status == "not_assessable" and analysis.not_assessable_code == "out_of_distribution"
    assert analysis.scores == {} and analysis.ood_score == 9.0


def test_findings_of_an_unfamiliar_image_are_marked_and_hidden_when_the_clinic_chooses(
    alice: World,
    gated_model,  # noqa: ANN001
) -> None:
    finding = {"condition": "gingivitis", "probability": 0.95, "box": [0.1, 0.1, 0.2, 0.2], "heatmap": None}
    result = {"scores": {"gingivitis": 0.95}, "findings": [finding], "unfamiliar": True, "ood_score": 3.0}
    analysis = _finished(alice, gated_model, result)
    assert analysis.unfamiliar
    client = token_client(alice, "dentist")
    body = client.get(reverse("api:analysis-detail", kwargs={"pk": analysis.pk})).json()
    assert body["unfamiliar"] is True and [f["condition"] for f in body["findings"]] == ["gingivitis"]
    with clinic_scope(alice.clinic.id):
        AnalysisSettings.objects.create(unfamiliar_findings="hide")
        shown = [f.condition for f in visit_findings(alice.image.visit)[alice.image] if f.analysis_id == analysis.pk]
    assert shown == []
    assert client.get(reverse("api:analysis-detail", kwargs={"pk": analysis.pk})).json()["findings"] == []
    # signed so, the report, FHIR and the DICOM SR say the AI's suggestions were not shown: never "nothing found"
    with clinic_scope(alice.clinic.id):
        Finding.objects.filter(image=alice.image).exclude(analysis=analysis).update(status="confirmed")
        snapshot = report_content(report_sign(visit=alice.image.visit, signer=alice.users["dentist"]))
    [item] = [i for i in snapshot["images"] if i["id"] == str(alice.image.pk)]
    assert item["suggestions_hidden"] is True and item["analysis"] == "done"
    [worded] = [i for i in render_html_context(snapshot)["images"] if i["id"] == str(alice.image.pk)]
    assert "does not show its suggestions" in worded["analysis_note"]
    [diagnostic] = [
        e["resource"]
        for e in fhir.report_bundle(snapshot)["entry"]
        if e["resource"]["resourceType"] == "DiagnosticReport"
    ]
    assert fhir.HIDDEN_NOTE in diagnostic["conclusion"] and fhir.HIDDEN_NOTE in json.dumps(diagnostic["media"])
    from dicom.results import _not_assessed_group

    header = {"SOPClassUID": "1.2.840.10008.5.1.4.1.1.77.1.4", "SOPInstanceUID": "1.2.3.4.5"}
    group = _not_assessed_group(item, header)
    assert group is not None and group.finding_type.value == "not-assessed"


def test_analyze_images_prints_assessable_and_the_reason(gated_model, tmp_path: Path) -> None:  # noqa: ANN001
    blurred = tmp_path / "blurred.png"
    blurred.write_bytes(blurred_photo())
    out = io.StringIO()
    call_command("analyze_images", str(blurred), modality="photo", json=True, stdout=out)
    line = json.loads(out.getvalue().splitlines()[0])
    assert line["assessable"] is False and line["findings"] == []
    assert line["not_assessable"]["code"] == "blurred" and line["not_assessable"]["message"]
