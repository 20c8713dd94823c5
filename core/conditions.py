"""The platform's one vocabulary of conditions.

Every finding, threshold, agreement row, export (REST, webhooks, FHIR, PDF) and screen names a condition by
its **code**: lowercase snake-case, owned here. Models speak their own labels (a data set's class names such as
``"Impacted Tooth"``); each model's ``model.json`` maps them onto these codes in ``condition_codes``, checked
at registration (``analysis.registry``), so nothing past the registry ever sees a model's own label.

Each condition carries what every consumer needs, written once:

- ``name``: the clinician's short name (review screen, agreement page, API ``display``);
- ``patient_name`` and ``explanation``: the patient-facing wording of the report and its glossary;
- ``colour``: one colour of the Okabe-Ito colour-blind-safe palette, shared by the screen, the report and the PDF;
- ``snomed``: the SNOMED CT concept (id, preferred term) of the FHIR export, or None where no source we could read
  names one (then FHIR carries ``fhir_text`` only, never a guessed code). The ids were taken from published
  material (the HL7 Dental Data Exchange guide, SNOMED International's implementation demonstrator) and have not
  been checked against a terminology server (none is reachable from our build machines): a terminology review
  before a national-registry integration should confirm them. "implant" has none: the published examples code
  the implant as a device (a physical object), not as a finding;
- ``kind``: ``pathology`` (a problem to look at), ``restoration`` (earlier treatment, recorded, not a new problem)
  or ``anatomy`` (how a tooth sits or developed);
- ``modality``: the image kind a model reports it on (a clinician may add it only there).

Plain Python: no Django, so ``analysis.ml`` and every app may import it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

PATHOLOGY: Final = "pathology"
RESTORATION: Final = "restoration"
ANATOMY: Final = "anatomy"
KINDS: Final = (PATHOLOGY, RESTORATION, ANATOMY)

#: Okabe-Ito colour-blind-safe palette. Photo and X-ray conditions never share an image, but every condition
#: still gets its own colour so a legend never repeats. Black is used for tartar (drawn on photos, where it stands
#: out against teeth and gums), never for an X-ray condition.
OKABE_ITO: Final[dict[str, str]] = {
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "bluish_green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish_purple": "#CC79A7",
    "black": "#000000",
}
#: Colour of a name that is not a code (never produced by the platform; kept so a renderer never fails): a
#: neutral grey, so it can never be mistaken for a condition.
FALLBACK_COLOUR: Final = "#7F7F7F"

SNOMED_SYSTEM: Final = "http://snomed.info/sct"


@dataclass(frozen=True)
class Condition:
    code: str
    modality: str
    kind: str
    name: str
    patient_name: str
    explanation: str
    colour: str
    fhir_text: str
    snomed: tuple[str, str] | None = None


_ALL: Final = (
    Condition(
        code="caries",
        modality="photo",
        kind=PATHOLOGY,
        name="Caries",
        patient_name="Tooth decay (caries)",
        explanation=(
            "Tooth decay is damage to the hard surface of a tooth caused by acid from bacteria in plaque. "
            "Found early, it can often be stopped or repaired with a small filling."
        ),
        colour=OKABE_ITO["vermillion"],
        fhir_text="Dental caries",
        snomed=("80967001", "Dental caries"),
    ),
    Condition(
        code="gingivitis",
        modality="photo",
        kind=PATHOLOGY,
        name="Gingivitis",
        patient_name="Gum inflammation (gingivitis)",
        explanation=(
            "Gingivitis is inflammation of the gums: they may look red or swollen and bleed when you brush. "
            "It is usually reversible with careful brushing, cleaning between the teeth and a professional clean."
        ),
        colour=OKABE_ITO["blue"],
        fhir_text="Gingivitis",
        snomed=("66383009", "Gingivitis"),
    ),
    Condition(
        code="calculus",
        modality="photo",
        kind=PATHOLOGY,
        name="Calculus",
        patient_name="Tartar (calculus)",
        explanation=(
            "Tartar is plaque that has hardened on the teeth. Brushing cannot remove it; "
            "a dentist or dental hygienist can clean it off."
        ),
        colour=OKABE_ITO["black"],
        fhir_text="Dental calculus",
        # what a photograph shows is above the gum line; seen in SNOMED International's implementation demonstrator
        snomed=("18755003", "Supragingival dental calculus"),
    ),
    Condition(
        code="ulcer",
        modality="photo",
        kind=PATHOLOGY,
        name="Ulcer",
        patient_name="Mouth ulcer",
        explanation=(
            "A mouth ulcer is a small sore inside the mouth. Most heal on their own within two weeks; "
            "tell your dentist if it lasts longer than that."
        ),
        colour=OKABE_ITO["reddish_purple"],
        fhir_text="Ulcer of mouth",
        snomed=("26284000", "Ulcer of mouth"),
    ),
    Condition(
        code="cavity",
        modality="xray",
        kind=PATHOLOGY,
        name="Cavity",
        patient_name="Cavity seen on the X-ray",
        explanation=(
            "A cavity is a hole in a tooth caused by decay, seen here on the X-ray. "
            "Your dentist will talk with you about whether it needs a filling or other treatment."
        ),
        colour=OKABE_ITO["orange"],
        fhir_text="Dental caries (seen on a radiograph)",
        # a cavity on a radiograph is a carious lesion: the same concept as caries
        snomed=("80967001", "Dental caries"),
    ),
    Condition(
        code="filling",
        modality="xray",
        kind=RESTORATION,
        name="Filling",
        patient_name="Existing filling",
        explanation="A filling from earlier dental treatment. It is noted for your records and is not a new problem.",
        colour=OKABE_ITO["sky_blue"],
        fhir_text="Dental filling (restoration) present",
        # used by the HL7 Dental Data Exchange guide's scenarios
        snomed=("109727004", "Dental restoration present"),
    ),
    Condition(
        code="implant",
        modality="xray",
        kind=RESTORATION,
        name="Implant",
        patient_name="Dental implant",
        explanation=(
            "A dental implant is an artificial tooth root placed during earlier treatment. "
            "It is noted for your records and is not a new problem."
        ),
        colour=OKABE_ITO["bluish_green"],
        fhir_text="Dental implant present",
    ),
    Condition(
        code="impacted_tooth",
        modality="xray",
        kind=ANATOMY,
        name="Impacted tooth",
        patient_name="Impacted tooth (a tooth that has not come through)",
        explanation=(
            "An impacted tooth is stuck under the gum or bone and has not come through fully; "
            "this is common with wisdom teeth. Your dentist will tell you whether anything needs to be done."
        ),
        colour=OKABE_ITO["yellow"],
        fhir_text="Impacted tooth",
        # seen in SNOMED International's implementation demonstrator (dental finding options)
        snomed=("235104008", "Impacted tooth"),
    ),
)

#: code -> Condition, in the order above (photo conditions first).
CONDITIONS: Final[dict[str, Condition]] = {c.code: c for c in _ALL}
MODALITIES: Final = ("photo", "xray")
CODE_PATTERN: Final = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$")


class UnknownCondition(ValueError):
    """A name that is not one of the platform's condition codes."""


def get(code: str) -> Condition:
    try:
        return CONDITIONS[code]
    except KeyError:
        raise UnknownCondition(f"{code!r} is not a condition code (known: {', '.join(CONDITIONS)})") from None


def is_code(name: object) -> bool:
    return isinstance(name, str) and name in CONDITIONS


def codes_for(modality: str) -> tuple[str, ...]:
    """The conditions reported on one kind of image, in display order."""
    return tuple(c.code for c in _ALL if c.modality == modality)


def colours() -> dict[str, str]:
    return {c.code: c.colour for c in _ALL}


def colour(code: str) -> str:
    found = CONDITIONS.get(code)
    return found.colour if found else FALLBACK_COLOUR


def name(code: str) -> str:
    found = CONDITIONS.get(code)
    return found.name if found else code.replace("_", " ").capitalize()


def patient_name(code: str) -> str:
    found = CONDITIONS.get(code)
    return found.patient_name if found else code.replace("_", " ").capitalize()


def explanation(code: str) -> str:
    found = CONDITIONS.get(code)
    return found.explanation if found else ""


# --- models' own labels -------------------------------------------------------------------------------------------


class UnmappedLabel(ValueError):
    """A model label with no condition code, or mapped onto something that is not a code of its modality."""


def label_codes(labels: Iterable[str], mapping: Mapping[str, str] | None, *, modality: str) -> dict[str, str]:
    """``{model label: condition code}`` for every label of a model, from its ``model.json`` ``condition_codes``.

    Refuses (``UnmappedLabel``, naming each offending label) a label without an entry, an entry that is not a
    code, a code of the other modality, and two labels onto one code (their scores would overwrite each other)."""
    mapping = dict(mapping or {})
    labels = list(labels)
    problems = []
    for label in labels:
        code = mapping.get(label)
        if code is None:
            problems.append(f"{label!r} has no entry in condition_codes")
        elif code not in CONDITIONS:
            problems.append(f"{label!r} maps to {code!r}, which is not a condition code")
        elif CONDITIONS[code].modality != modality:
            problems.append(f"{label!r} maps to {code!r}, a {CONDITIONS[code].modality} condition, not {modality}")
    codes = [mapping.get(label) for label in labels]
    for code in {c for c in codes if c is not None and codes.count(c) > 1}:
        problems.append(f"several labels map to {code!r}")
    if problems:
        raise UnmappedLabel("; ".join(problems))
    return {label: mapping[label] for label in labels}


_LEGACY: Final[dict[str, str]] = {
    # names the first X-ray detectors (1.0.0-1.2.0) wrote before they carried condition_codes
    "Cavity": "cavity",
    "Fillings": "filling",
    "Impacted Tooth": "impacted_tooth",
    "Implant": "implant",
}


def canonical(name: str) -> str:
    """The code of a condition name written before the vocabulary existed (``"Impacted Tooth"`` ->
    ``"impacted_tooth"``); a code, or a name this does not know, comes back unchanged. For data migrations and
    for reading signed report snapshots, which are never rewritten."""
    if name in CONDITIONS:
        return name
    if name in _LEGACY:
        return _LEGACY[name]
    folded = re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")
    return folded if folded in CONDITIONS else name
