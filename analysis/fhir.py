"""FHIR R4 (4.0.1) export of a signed visit report.

Plain Python (no Django): ``report_bundle`` turns the signed report snapshot (``analysis.reports.report_snapshot``)
into a ``collection`` Bundle holding

* ``Patient`` (practice identifier, name, birth date, administrative gender) and the clinic ``Organization``;
* ``Practitioner``: the dentist who signed;
* ``Media`` per image of the visit (metadata only, no pixels) -- the report's key images;
* ``Device`` per AI model version that made a confirmed suggestion;
* one ``DiagnosticReport`` (``final``, or ``amended`` when it amends a previous signed version);
* one ``Observation`` per CONFIRMED finding; a finding with a tooth carries it as ``bodySite``: the tooth's SNOMED CT
  body structure concept (``core.teeth``, from HL7 Belgium's ISO tooth number ConceptMap; not checked against a
  terminology server) with the FDI number, the tooth's name and any surfaces in the text.
  Rejected and pending findings are not exported (the report's narrative
  says how many were left out): they are not clinical statements the dentist stands behind.

No implementation guide is claimed (``meta.profile`` is not set): the resources follow core R4 only. US Core needs
US-specific elements and the HL7 Dental Data Exchange IG targets referrals between US dental providers.

Codes: each condition's SNOMED CT concept from the platform vocabulary (``core.conditions``); a condition without
one gets a text-only CodeableConcept rather than a guessed code (``implant`` is exported as text only). The SNOMED
CT codes were taken from published material (the HL7 Dental Data Exchange guide, SNOMED International's
implementation demonstrator) and have NOT been checked against a terminology server -- in particular those of
``calculus`` (18755003), ``filling`` (109727004) and ``impacted_tooth`` (235104008); validate them with a SNOMED CT
release or terminology service before relying on them.
The report code is LOINC 18748-4 "Diagnostic imaging study", the modality-independent LOINC document code for an
imaging report (used for DICOM SR and IHE XDS imaging reports): it fits a report that covers intraoral photographs
as well as X-rays.

Project-specific extensions are identified by ``urn:dentalscan:fhir:extension:*`` (an ``Extension.url`` may be a
logical URI); core R4 has no element for them:

* ``amendment`` (DiagnosticReport): ``replaces`` -- a *logical* reference (``Reference.identifier``) to the report
  version this one supersedes, and ``reason``. R4's ``basedOn`` means "fulfils this request" (ServiceRequest,
  CarePlan...), not "supersedes", and the core ``replaces`` extension is only defined for definitional/canonical
  resources, so neither fits. The previous version is not in the bundle, so a literal ``urn:uuid`` reference would
  not resolve; the identifier (system ``urn:dentalscan:report``, value = previous report id) is what a receiver
  can look up. Both versions also share the business identifier ``urn:dentalscan:visit-report|<visit id>``.
* ``image-region`` (Observation): ``image`` (reference to the Media), ``x``, ``y``, ``width``, ``height`` --
  the finding's box as fractions (0..1) of the image width/height, origin top-left.
* ``finding-origin`` (Observation): ``source`` (``model`` = AI suggestion confirmed by the dentist, ``clinician``
  = added by a clinician), ``model`` (model id@version) and ``probability`` (the model's score) when from a model.
"""

from __future__ import annotations

import datetime as dt
import uuid
from html import escape
from typing import Any

from core import conditions, teeth

from .report_wording import plain_name

FHIR_VERSION = "4.0.1"

SNOMED = conditions.SNOMED_SYSTEM
LOINC = "http://loinc.org"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
MEDIA_TYPE = "http://terminology.hl7.org/CodeSystem/media-type"

EXTENSION_BASE = "urn:dentalscan:fhir:extension:"
EXT_AMENDMENT = EXTENSION_BASE + "amendment"
EXT_IMAGE_REGION = EXTENSION_BASE + "image-region"
EXT_FINDING_ORIGIN = EXTENSION_BASE + "finding-origin"

SYSTEM_REPORT = "urn:dentalscan:report"
SYSTEM_VISIT_REPORT = "urn:dentalscan:visit-report"
SYSTEM_VISIT = "urn:dentalscan:visit"
SYSTEM_PATIENT = "urn:dentalscan:patient"
SYSTEM_USER = "urn:dentalscan:user"
SYSTEM_CLINIC = "urn:dentalscan:clinic"
SYSTEM_IMAGE = "urn:dentalscan:image"
SYSTEM_FINDING = "urn:dentalscan:finding"
SYSTEM_MODEL = "urn:dentalscan:model"


def practice_id_system(clinic_id: str) -> str:
    """The identifier system of a clinic's own patient numbers (the practice-management system id)."""
    return f"urn:dentalscan:clinic:{clinic_id}:patient"


REPORT_CODE = {
    "coding": [{"system": LOINC, "code": "18748-4", "display": "Diagnostic imaging study"}],
    "text": "Dental imaging findings (AI-assisted, reviewed by a dentist)",
}
GENDERS = {"female": "female", "male": "male", "other": "other", "unknown": "unknown"}
MODALITY_TEXT = {"photo": "Intraoral photograph", "xray": "Dental X-ray"}


def condition_code(condition: str) -> dict[str, Any]:
    """The Observation.code of a condition: its SNOMED CT concept where the vocabulary has one, else text only."""
    code = conditions.canonical(condition)
    known = conditions.CONDITIONS.get(code)
    if known is None:
        return {"text": condition.replace("_", " ")}
    if known.snomed is not None:
        sctid, display = known.snomed
        return {"coding": [{"system": SNOMED, "code": sctid, "display": display}], "text": known.patient_name}
    return {"text": known.fhir_text}


# --- helpers ------------------------------------------------------------------------------------------------------


def _uuid(value: object) -> str:
    """Canonical lower-case UUID text; ids of this platform are UUIDs and ``urn:uuid:`` needs one."""
    return str(uuid.UUID(str(value)))


def _instant(value: str | dt.datetime) -> str:
    """A FHIR instant (timezone required): naive timestamps are taken as UTC."""
    moment = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.isoformat()


def _date(value: str) -> str:
    return dt.date.fromisoformat(str(value)[:10]).isoformat()


def _decimal(value: float) -> float:
    return round(float(value), 6)


class _Refs:
    """fullUrl and reference text per resource: ``urn:uuid:<id>`` for both by default; with an http(s) base,
    fullUrl ``<base>/<Type>/<id>`` and relative references ``<Type>/<id>`` (resolved against the fullUrl)."""

    def __init__(self, base_url: str) -> None:
        if base_url == "urn:uuid:":
            self.base = None
        elif base_url.startswith(("http://", "https://")):
            self.base = base_url.rstrip("/")
        else:
            raise ValueError("base_url must be 'urn:uuid:' or an http(s) URL of a FHIR server base")

    def full_url(self, resource_type: str, resource_id: str) -> str:
        return f"urn:uuid:{resource_id}" if self.base is None else f"{self.base}/{resource_type}/{resource_id}"

    def ref(self, resource_type: str, resource_id: str, display: str | None = None) -> dict[str, Any]:
        reference = f"urn:uuid:{resource_id}" if self.base is None else f"{resource_type}/{resource_id}"
        out: dict[str, Any] = {"reference": reference}
        if display:
            out["display"] = display
        return out


def _device_id(model: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{SYSTEM_MODEL}:{model}"))


def _split_model(model: str) -> tuple[str, str | None]:
    name, _, version = model.partition("@")
    return name, version or None


# --- resources ----------------------------------------------------------------------------------------------------


def _patient(report: dict[str, Any], organization: dict[str, Any] | None) -> dict[str, Any]:
    patient = report["patient"]
    clinic_id = report["clinic"]["id"]
    identifiers: list[dict[str, Any]] = []
    if patient.get("external_id"):
        identifiers.append(
            {
                "use": "usual",
                "type": {"coding": [{"system": V2_0203, "code": "MR", "display": "Medical record number"}]},
                "system": practice_id_system(clinic_id),
                "value": str(patient["external_id"]),
                "assigner": organization,
            }
        )
    identifiers.append({"use": "secondary", "system": SYSTEM_PATIENT, "value": _uuid(patient["id"])})
    name: dict[str, Any] = {"use": "official"}
    if patient.get("family_name"):
        name["family"] = patient["family_name"]
    if patient.get("given_name"):
        name["given"] = [patient["given_name"]]
    name["text"] = " ".join(p for p in (patient.get("given_name"), patient.get("family_name")) if p)
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "id": _uuid(patient["id"]),
        "identifier": [{k: v for k, v in i.items() if v is not None} for i in identifiers],
        "name": [name] if name["text"] else [],
        "gender": GENDERS.get(str(patient.get("sex") or "unknown"), "unknown"),
    }
    if patient.get("date_of_birth"):
        resource["birthDate"] = _date(patient["date_of_birth"])
    if organization:
        resource["managingOrganization"] = organization
    if not resource["name"]:
        del resource["name"]
    return resource


def _organization(report: dict[str, Any]) -> dict[str, Any]:
    clinic = report["clinic"]
    resource = {
        "resourceType": "Organization",
        "id": _uuid(clinic["id"]),
        "identifier": [{"system": SYSTEM_CLINIC, "value": _uuid(clinic["id"])}],
        "active": True,
        "name": clinic.get("name") or "Dental clinic",
    }
    return resource


def _practitioner(report: dict[str, Any]) -> dict[str, Any]:
    signer = report["signed_by"]
    resource: dict[str, Any] = {
        "resourceType": "Practitioner",
        "id": _uuid(signer["id"]),
        "identifier": [{"system": SYSTEM_USER, "value": _uuid(signer["id"])}],
        "name": [{"text": signer.get("name") or signer.get("email") or "Dentist"}],
    }
    if signer.get("email"):
        resource["telecom"] = [{"system": "email", "value": signer["email"], "use": "work"}]
    return resource


def _media(image: dict[str, Any], report: dict[str, Any], patient_ref: dict[str, Any]) -> dict[str, Any]:
    modality = MODALITY_TEXT.get(image.get("modality") or "", "Dental image")
    resource: dict[str, Any] = {
        "resourceType": "Media",
        "id": _uuid(image["id"]),
        "identifier": [{"system": SYSTEM_IMAGE, "value": _uuid(image["id"])}],
        "status": "completed",
        "type": {"coding": [{"system": MEDIA_TYPE, "code": "image", "display": "Image"}]},
        "modality": {"text": modality},
        "subject": patient_ref,
        "createdDateTime": _date(report["visit"]["date"]),
        # Metadata only: the pixels stay in the platform (fetch them through its API with the image id).
        "content": {"title": f"{modality} {_uuid(image['id'])}"},
    }
    if image.get("width"):
        resource["width"] = int(image["width"])
    if image.get("height"):
        resource["height"] = int(image["height"])
    return resource


def _device(model: str) -> dict[str, Any]:
    name, version = _split_model(model)
    resource: dict[str, Any] = {
        "resourceType": "Device",
        "id": _device_id(model),
        "identifier": [{"system": SYSTEM_MODEL, "value": model}],
        "deviceName": [{"name": name, "type": "model-name"}],
        "type": {"text": "AI image analysis software (suggests findings for a dentist to review)"},
    }
    if version:
        resource["version"] = [{"value": version}]
    return resource


def _observation(
    finding: dict[str, Any],
    image: dict[str, Any],
    report: dict[str, Any],
    refs: _Refs,
    *,
    patient_ref: dict[str, Any],
    practitioner_ref: dict[str, Any],
) -> dict[str, Any]:
    condition = finding["condition"]
    source = finding.get("source") or "model"
    model = finding.get("model")
    probability = finding.get("probability")
    media_ref = refs.ref("Media", _uuid(image["id"]))
    signer = report["signed_by"].get("name") or report["signed_by"].get("email") or "the dentist"

    if source == "model":
        method = "AI suggestion confirmed by the dentist"
        details = [f"model {model}" if model else "model unknown"]
        if probability is not None:
            details.append(f"probability {float(probability):.2f}")
        note = f"AI suggestion ({', '.join(details)}) reviewed and confirmed by {signer}."
    else:
        method = "Added by a clinician"
        note = f"Finding added by a clinician; report signed by {signer}."

    region: list[dict[str, Any]] = [{"url": "image", "valueReference": media_ref}]
    box = finding.get("box")
    if box and len(box) == 4:
        for key, value in zip(("x", "y", "width", "height"), box, strict=True):
            region.append({"url": key, "valueDecimal": _decimal(value)})
    origin: list[dict[str, Any]] = [{"url": "source", "valueCode": source}]
    if model:
        origin.append({"url": "model", "valueString": model})
    if probability is not None:
        origin.append({"url": "probability", "valueDecimal": _decimal(probability)})

    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": _uuid(finding["id"]),
        "extension": [
            {"url": EXT_IMAGE_REGION, "extension": region},
            {"url": EXT_FINDING_ORIGIN, "extension": origin},
        ],
        "identifier": [{"system": SYSTEM_FINDING, "value": _uuid(finding["id"])}],
        "status": "final",
        "category": [
            {"coding": [{"system": OBSERVATION_CATEGORY, "code": "imaging", "display": "Imaging"}]},
        ],
        "code": condition_code(condition),
        "subject": patient_ref,
        "effectiveDateTime": _date(report["visit"]["date"]),
        "issued": _instant(report["signed_at"]),
        "performer": [practitioner_ref],
        "valueBoolean": True,
        "note": [{"text": note}],
        "method": {"text": method},
        "derivedFrom": [media_ref],
    }
    site = body_site(finding.get("tooth"), finding.get("surfaces") or "")
    if site is not None:
        resource["bodySite"] = site
    if source == "model" and model:
        resource["device"] = refs.ref("Device", _device_id(model), display=model)
    return resource


def body_site(fdi: str | None, surfaces: str = "") -> dict[str, Any] | None:
    """``Observation.bodySite`` of a tooth (its SNOMED CT body structure concept), or None without a known tooth."""
    if not fdi or fdi not in teeth.TEETH:
        return None
    tooth = teeth.get(fdi)
    text = f"Tooth {fdi} (FDI), {tooth.name}"
    if surfaces:
        text += ", surfaces " + ", ".join(teeth.SURFACES.get(s, s) for s in surfaces)
    return {"coding": [{"system": SNOMED, "code": tooth.snomed, "display": tooth.snomed_display}], "text": text}


def _narrative(
    report: dict[str, Any], confirmed: list[tuple[dict, dict]], rejected: int, pending: int, conclusion: str
) -> dict:
    """The human-readable text most FHIR viewers show instead of the coded parts: it ends with the conclusion, so
    images the AI did not assess are said there too, never only "no findings"."""
    signer = report["signed_by"].get("name") or report["signed_by"].get("email") or "the dentist"
    parts = [
        f"<p>Dental imaging report, version {escape(str(report.get('version')))}, "
        f"visit of {escape(_date(report['visit']['date']))}, signed by {escape(signer)} "
        f"at {escape(_instant(report['signed_at']))}.</p>"
    ]
    if report.get("amends"):
        reason = (report.get("amendment_reason") or "").strip()
        parts.append(
            f"<p>Amended report: replaces report {escape(str(report['amends']))}"
            + (f". Reason: {escape(reason)}" if reason else "")
            + ".</p>"
        )
    if confirmed:
        items = "".join(
            f"<li>{escape(plain_name(f['condition']))} ({escape(MODALITY_TEXT.get(i.get('modality') or '', 'image'))}"
            f", {'AI suggestion confirmed by the dentist' if f.get('source') == 'model' else 'added by a clinician'})"
            "</li>"
            for f, i in confirmed
        )
        parts.append(f"<p>Findings confirmed by the dentist:</p><ul>{items}</ul>")
    else:
        parts.append("<p>The dentist confirmed no findings on the images of this visit.</p>")
    parts.append(
        "<p>Only findings confirmed by the dentist are included as results. "
        f"{rejected} AI suggestion(s) rejected by the dentist and {pending} suggestion(s) not reviewed "
        "are not exported.</p>"
    )
    parts.append(f"<p>Conclusion: {escape(conclusion)}</p>")
    return {"status": "additional", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{"".join(parts)}</div>'}


def _not_assessed_note(image: dict[str, Any]) -> str:
    """``"; not assessed by the AI: <reason>"`` for an image the image gate refused, a note for one whose AI
    suggestions the clinic does not show (an unfamiliar image), else ``""``."""
    if image.get("suggestions_hidden"):
        return f"; {HIDDEN_NOTE}"
    if image.get("analysis") != "not_assessable":
        return ""
    reason = (image.get("not_assessable") or {}).get("message") or "the image could not be judged"
    return f"; not assessed by the AI: {reason}"


HIDDEN_NOTE = "AI suggestions not shown: the image is unlike those the AI learned from (clinic setting)"


def _conclusion(
    confirmed: list[tuple[dict, dict]],
    rejected: int,
    images: int,
    not_analysed: int = 0,
    not_assessed: list[dict[str, Any]] | None = None,
    hidden: int = 0,
) -> str:
    if not confirmed:
        text = f"The dentist reviewed {images} image(s) of this visit and confirmed no findings."
    else:
        counts: dict[str, int] = {}
        for finding, _ in confirmed:
            counts[finding["condition"]] = counts.get(finding["condition"], 0) + 1
        listed = "; ".join(f"{plain_name(c)}" + (f" ({n} places)" if n > 1 else "") for c, n in counts.items())
        text = f"Confirmed by the dentist on {images} image(s): {listed}."
    if rejected:
        text += f" {rejected} AI suggestion(s) were rejected by the dentist and are not part of this report."
    if not_analysed:
        text += f" {not_analysed} image(s) were not checked by the AI software (analysis failed or no model)."
    if not_assessed:
        reasons = sorted({(i.get("not_assessable") or {}).get("code") or "unknown" for i in not_assessed})
        text += (
            f" {len(not_assessed)} image(s) were not assessed by the AI (image gate: {', '.join(reasons)}); "
            "only what the dentist noted on them is reported."
        )
    if hidden:
        text += f" {hidden} image(s): {HIDDEN_NOTE}; only what the dentist noted on them is reported."
    return text


def report_bundle(
    report: dict[str, Any], *, base_url: str = "urn:uuid:", timestamp: str | dt.datetime | None = None
) -> dict[str, Any]:
    """The signed ``report`` snapshot as a FHIR R4 ``collection`` Bundle (a JSON-serialisable dict).

    ``base_url``: ``"urn:uuid:"`` (default) for ``urn:uuid:`` fullUrls and references, or the http(s) base of the
    FHIR server the resources will live on. ``timestamp``: when the bundle was assembled (default: now, UTC).
    """
    refs = _Refs(base_url)
    organization = _organization(report)
    org_ref = refs.ref("Organization", organization["id"], display=organization["name"])
    patient = _patient(report, org_ref)
    patient_ref = refs.ref("Patient", patient["id"])
    practitioner = _practitioner(report)
    practitioner_ref = refs.ref("Practitioner", practitioner["id"], display=practitioner["name"][0]["text"])

    media: list[dict[str, Any]] = []
    devices: dict[str, dict[str, Any]] = {}
    observations: list[dict[str, Any]] = []
    confirmed: list[tuple[dict, dict]] = []
    rejected = pending = 0
    for image in report.get("images") or []:
        media.append(_media(image, report, patient_ref))
        for finding in image.get("findings") or []:
            status = finding.get("status")
            if status == "rejected":
                rejected += 1
                continue
            if status != "confirmed":
                pending += 1
                continue
            confirmed.append((finding, image))
            observations.append(
                _observation(finding, image, report, refs, patient_ref=patient_ref, practitioner_ref=practitioner_ref)
            )
            if finding.get("source") == "model" and finding.get("model"):
                devices.setdefault(finding["model"], _device(finding["model"]))

    categories: list[dict[str, Any]] = [{"text": "Dental imaging"}]
    if any(image.get("modality") == "xray" for image in report.get("images") or []):
        categories.append({"coding": [{"system": V2_0074, "code": "RAD", "display": "Radiology"}]})
    conclusion_codes: list[dict[str, Any]] = []
    for finding, _ in confirmed:
        code = condition_code(finding["condition"])
        if code not in conclusion_codes:
            conclusion_codes.append(code)

    images = report.get("images") or []
    conclusion = _conclusion(
        confirmed,
        rejected,
        len(media),
        sum((i.get("analysis") or "done") not in ("done", "not_assessable") for i in images),
        [image for image in images if image.get("analysis") == "not_assessable"],
        sum(bool(image.get("suggestions_hidden")) for image in images),
    )
    report_id = _uuid(report["report_id"])
    diagnostic_report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "id": report_id,
        "text": _narrative(report, confirmed, rejected, pending, conclusion),
        "identifier": [
            {"use": "official", "system": SYSTEM_REPORT, "value": report_id},
            # Shared by every version of the visit's report: "the same report, another version".
            {"use": "secondary", "system": SYSTEM_VISIT_REPORT, "value": _uuid(report["visit"]["id"])},
        ],
        "status": "amended" if report.get("amends") else "final",
        "category": categories,
        "code": REPORT_CODE,
        "subject": patient_ref,
        # No Encounter resource is exported: a logical reference keeps the visit id.
        "encounter": {
            "type": "Encounter",
            "identifier": {"system": SYSTEM_VISIT, "value": _uuid(report["visit"]["id"])},
            "display": f"Visit of {_date(report['visit']['date'])}",
        },
        "effectiveDateTime": _date(report["visit"]["date"]),
        "issued": _instant(report["signed_at"]),
        "performer": [practitioner_ref, org_ref],
        "resultsInterpreter": [practitioner_ref],
        "result": [refs.ref("Observation", o["id"]) for o in observations],
        "media": [
            {
                "comment": MODALITY_TEXT.get(image.get("modality") or "", "Dental image") + _not_assessed_note(image),
                "link": refs.ref("Media", m["id"]),
            }
            for image, m in zip(report.get("images") or [], media, strict=True)
        ],
        "conclusion": conclusion,
    }
    if conclusion_codes:
        diagnostic_report["conclusionCode"] = conclusion_codes
    if report.get("amends"):
        extension = [
            {
                "url": "replaces",
                "valueReference": {
                    "type": "DiagnosticReport",
                    "identifier": {"system": SYSTEM_REPORT, "value": _uuid(report["amends"])},
                    "display": "Previous signed version of this report",
                },
            }
        ]
        if (report.get("amendment_reason") or "").strip():
            extension.append({"url": "reason", "valueString": report["amendment_reason"].strip()})
        diagnostic_report["extension"] = [{"url": EXT_AMENDMENT, "extension": extension}]
    for key in ("result", "media"):
        if not diagnostic_report[key]:
            del diagnostic_report[key]

    resources = [diagnostic_report, patient, practitioner, organization, *media, *devices.values(), *observations]
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": _instant(timestamp or dt.datetime.now(dt.UTC)),
        "entry": [{"fullUrl": refs.full_url(r["resourceType"], r["id"]), "resource": r} for r in resources],
    }
