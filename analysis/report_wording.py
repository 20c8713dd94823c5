"""The words of the patient-friendly report of a signed visit, and its content as data.

Plain Python (no Django): ``render_html_context`` turns the signed report snapshot (see
``analysis.reports.report_snapshot``) into the plain-language content that the HTML page shows and the PDF
(``analysis.report_pdf``) lays out, so both say the same thing. Condition names, explanations and colours come from
the platform vocabulary (``core.conditions``); the report's own texts (title, footer, notes) are here.

Only CONFIRMED findings are shown to the patient.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from core import conditions, teeth

MODALITY_LABELS: dict[str, str] = {"photo": "Photograph of the inside of your mouth", "xray": "Dental X-ray"}

TITLE = "Your dental imaging report"
FOOTER = "AI suggestions were reviewed by your dentist; this report is not a diagnosis on its own."
NO_FINDINGS = "Your dentist did not confirm any problems on this image."
# Per image whose analysis did not run (snapshot ``analysis``: ``failed`` or ``none``; older snapshots lack it).
NOT_ANALYSED = {
    "not_assessable": "The AI software did not assess this image ({reason}); only what your dentist noted is listed.",
    "failed": "The AI software could not check this image; only what your dentist noted is listed.",
    "none": "The AI software does not check this kind of image; only what your dentist noted is listed.",
    "suggestions_hidden": (
        "The AI software found this image unlike those it learned from, and your clinic does not show its "
        "suggestions on such images; only what your dentist noted is listed."
    ),
}
NO_FINDINGS_NOT_ANALYSED = "Your dentist did not note any problems on this image."
SOURCE_TEXT = {
    "model": "Suggested by the AI and confirmed by your dentist",
    "clinician": "Noted by your dentist",
}
_MONTHS = ("January February March April May June July August September October November December").split()


def plain_name(condition: str) -> str:
    """Patient-facing name; a signed snapshot written before the vocabulary may hold an old model label."""
    return conditions.patient_name(conditions.canonical(condition))


def condition_colour(condition: str) -> str:
    return conditions.colour(conditions.canonical(condition))


def human_date(value: str | dt.date | dt.datetime | None) -> str:
    """``2026-11-28`` (or a timestamp) as ``28 November 2026``, independent of the server's locale."""
    if not value:
        return ""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value) if "T" in value else dt.date.fromisoformat(value)
    if isinstance(value, dt.datetime):
        value = value.date()
    return f"{value.day} {_MONTHS[value.month - 1]} {value.year}"


def confirmed(findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for f in findings if f.get("status") == "confirmed"]


STATUS_TEXT = "Existing treatment (not a new problem)"
UNASSIGNED_TEXT = "Not linked to a tooth"


def tooth_heading(fdi: str, notation: str) -> str:
    """``Tooth 16 (upper right first molar)`` in the clinic's notation (FDI when it is unknown)."""
    tooth = teeth.get(fdi)
    notation = notation if notation in teeth.NOTATION_CODES else teeth.FDI
    return f"Tooth {tooth.label(notation)} ({tooth.name})"


def group_by_tooth(findings: list[dict[str, Any]], notation: str = teeth.FDI) -> dict[str, Any]:
    """Findings grouped by tooth, in chart order (upper arch from the patient's right, then the lower arch).

    Each tooth: ``fdi``, ``label`` (clinic notation), ``heading``, ``name``, ``status`` (restorations and implants:
    the tooth's state, not a problem), ``problems`` (pathology and anatomy), ``pending`` (undecided AI
    suggestions, shown on the dentist's chart only). Each item: ``id``, ``condition``, ``name`` (clinician),
    ``patient_name``, ``kind``, ``surfaces``, ``status``, ``source``, ``colour``, ``image`` (number, when given).
    ``unassigned`` holds the same items for findings without a tooth. Rejected findings are left out."""
    notation = notation if notation in teeth.NOTATION_CODES else teeth.FDI
    by_tooth: dict[str, dict[str, Any]] = {}
    unassigned: list[dict[str, Any]] = []
    for finding in findings:
        if finding.get("status") == "rejected":
            continue
        code = conditions.canonical(finding.get("condition") or "")
        known = conditions.CONDITIONS.get(code)
        item = {
            "id": finding.get("id"),
            "condition": code,
            "name": conditions.name(code),
            "patient_name": plain_name(code),
            "kind": known.kind if known else conditions.PATHOLOGY,
            "surfaces": finding.get("surfaces") or "",
            "status": finding.get("status"),
            "source": finding.get("source") or "model",
            "colour": condition_colour(code),
            "image": finding.get("image_number"),
        }
        fdi = finding.get("tooth") or ""
        if fdi not in teeth.TEETH:
            unassigned.append(item)
            continue
        if fdi not in by_tooth:
            tooth = teeth.get(fdi)
            by_tooth[fdi] = {
                "fdi": fdi,
                "label": tooth.label(notation),
                "heading": tooth_heading(fdi, notation),
                "name": tooth.name,
                "status": [],
                "problems": [],
                "pending": [],
            }
        group = by_tooth[fdi]
        if item["status"] == "pending":
            group["pending"].append(item)
        elif item["kind"] == conditions.RESTORATION:
            group["status"].append(item)
        else:
            group["problems"].append(item)
    order: list[str] = []
    for primary in (False, True):
        upper, lower = teeth.chart_rows(primary=primary)
        order += list(upper) + list(lower)
    rank = {fdi: i for i, fdi in enumerate(order)}
    return {"teeth": sorted(by_tooth.values(), key=lambda t: rank[t["fdi"]]), "unassigned": unassigned}


def render_html_context(report: dict[str, Any]) -> dict[str, Any]:
    """The plain-language content of a signed report as data, for the HTML template (and the PDF).

    Keys: ``title``, ``clinic_name``, ``patient_name``, ``date_of_birth``, ``visit_date`` (human dates),
    ``version``, ``amendment`` (None, or ``{"notice", "reason", "version"}``), ``images`` (per image: ``id``,
    ``number``, ``modality``, ``modality_label``, ``findings`` -- each ``id``, ``box``, ``condition``, ``name``,
    ``explanation``, ``colour``, ``source``, ``source_text`` -- ``analysis_note`` when the AI software did not
    check the image, and ``no_findings_text`` when empty),
    ``explanations`` (one per PROBLEM found -- pathology or anatomy -- in order of first appearance; existing
    treatment such as fillings and implants is charted as the tooth's status and not explained as a problem),
    ``by_tooth`` (``group_by_tooth`` of the confirmed findings, in the notation the clinic used when signing),
    ``status_text``, ``unassigned_text``, ``signed_by_line``, ``footer``.
    """
    patient = report.get("patient") or {}
    signer = report.get("signed_by") or {}
    images = []
    seen: dict[str, dict[str, str]] = {}
    all_confirmed: list[dict[str, Any]] = []
    for number, image in enumerate(report.get("images") or [], start=1):
        findings = []
        for finding in confirmed(image.get("findings") or []):
            all_confirmed.append({**finding, "image_number": number})
            condition = conditions.canonical(finding["condition"])
            source = finding.get("source") or "model"
            known = conditions.CONDITIONS.get(condition)
            restoration = known is not None and known.kind == conditions.RESTORATION
            fdi = finding.get("tooth") or ""
            item = {
                "id": finding.get("id"),
                "box": finding.get("box"),
                "condition": condition,
                "name": plain_name(condition),
                "explanation": conditions.explanation(condition),
                "colour": condition_colour(condition),
                "source": source,
                "source_text": SOURCE_TEXT.get(source, SOURCE_TEXT["clinician"]),
                "restoration": restoration,
                "tooth": tooth_heading(fdi, report.get("tooth_notation") or teeth.FDI) if fdi in teeth.TEETH else "",
            }
            findings.append(item)
            if restoration:
                continue
            seen.setdefault(
                condition,
                {
                    "condition": condition,
                    "name": item["name"],
                    "explanation": item["explanation"],
                    "colour": item["colour"],
                },
            )
        modality = image.get("modality") or ""
        state = "suggestions_hidden" if image.get("suggestions_hidden") else image.get("analysis") or "done"
        not_analysed = NOT_ANALYSED.get(state, "")
        if "{reason}" in not_analysed:
            reason = ((image.get("not_assessable") or {}).get("message") or "image quality").rstrip(".")
            not_analysed = not_analysed.format(reason=reason[:1].lower() + reason[1:])
        images.append(
            {
                "id": image.get("id"),
                "number": number,
                "modality": modality,
                "modality_label": MODALITY_LABELS.get(modality, "Image"),
                "findings": findings,
                "analysis_note": not_analysed,
                "no_findings_text": "" if findings else (NO_FINDINGS_NOT_ANALYSED if not_analysed else NO_FINDINGS),
            }
        )
    amendment = None
    if report.get("amends"):
        version = report.get("version")
        amendment = {
            "version": version,
            "notice": f"Amended report (version {version})",
            "reason": (report.get("amendment_reason") or "").strip(),
        }
    signed_on = human_date(report.get("signed_at"))
    signed_by = signer.get("name") or signer.get("email") or "your dentist"
    full_name = " ".join(p for p in (patient.get("given_name"), patient.get("family_name")) if p)
    return {
        "title": TITLE,
        "clinic_name": (report.get("clinic") or {}).get("name", ""),
        "patient_name": full_name,
        "date_of_birth": human_date(patient.get("date_of_birth")),
        "visit_date": human_date((report.get("visit") or {}).get("date")),
        "version": report.get("version"),
        "amendment": amendment,
        "images": images,
        "explanations": list(seen.values()),
        "by_tooth": group_by_tooth(all_confirmed, report.get("tooth_notation") or teeth.FDI),
        "status_text": STATUS_TEXT,
        "unassigned_text": UNASSIGNED_TEXT,
        "signed_by_line": f"Reviewed and signed by {signed_by} on {signed_on}"
        if signed_on
        else f"Reviewed and signed by {signed_by}",
        "footer": FOOTER,
    }
