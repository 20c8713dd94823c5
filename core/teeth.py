"""Tooth numbers: FDI (ISO 3950) <-> Universal (ADA) <-> Palmer, surfaces, and each tooth's SNOMED CT code.

The platform stores a tooth as its **FDI** two-digit code (``"11"``..``"48"`` permanent, ``"51"``..``"85"``
primary); a clinic chooses the notation its people read and type (``NOTATIONS``), converted here at the edges.

- FDI: quadrant digit (1-4 permanent, 5-8 primary; upper right, upper left, lower left, lower right) then the
  position from the midline (1-8 permanent, 1-5 primary).
- Universal: permanent teeth 1-32 from the upper right third molar round to the lower right third molar;
  primary teeth A-T in the same order (A = upper right second molar 55, T = lower right second molar 85).
- Palmer: the quadrant and the position, permanent 1-8 and primary A-E. Written here as ``UR1``, ``UL8``,
  ``LLA``... (typeable, read aloud the same); the grid form with box-drawing characters (``1┘``, ``└1``, ``1┐``,
  ``┌1``, the number on the side of the patient's quadrant as the dentist faces the patient) is accepted as input
  and given by ``palmer_grid``.

SNOMED CT: ``snomed`` is the "Structure of ... tooth (body structure)" concept of each tooth, for FHIR
``Observation.bodySite``. The 52 ids and displays come from HL7 Belgium / eHealth Platform's published ConceptMap
``BeCMISOToothSnomedCT`` version 2.1.2 ("ISO tooth numbers to SNOMED CT",
https://www.ehealth.fgov.be/standards/fhir/mycarenet/ConceptMap/BeCMISOToothSnomedCT); the same ids appear in
Indonesia's SatuSehat dental annex and, for tooth 11, in the HL7 US Dental Data Exchange guide's examples. They
were NOT checked against a SNOMED CT release or terminology server (none is reachable from our build machines);
the tests only check that each id is a well-formed SCTID (Verhoeff check digit, concept partition) and that the
display names the right tooth. Confirm them with a terminology service before a national-registry integration.

Plain Python: no Django, so every layer may import it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

FDI: Final = "fdi"
UNIVERSAL: Final = "universal"
PALMER: Final = "palmer"
NOTATIONS: Final[tuple[tuple[str, str], ...]] = (
    (FDI, "FDI (ISO 3950): 11–48, primary 51–85"),
    (UNIVERSAL, "Universal (ADA): 1–32, primary A–T"),
    (PALMER, "Palmer: UR1–LR8, primary URA–LRE"),
)
NOTATION_CODES: Final = tuple(code for code, _ in NOTATIONS)

SNOMED_SYSTEM: Final = "http://snomed.info/sct"

#: Tooth surfaces, in the order they are written: mesial, occlusal, incisal, distal, buccal, facial, lingual,
#: palatal. Occlusal only on premolars and molars, incisal only on incisors and canines.
SURFACES: Final[dict[str, str]] = {
    "M": "mesial",
    "O": "occlusal",
    "I": "incisal",
    "D": "distal",
    "B": "buccal",
    "F": "facial",
    "L": "lingual",
    "P": "palatal",
}

_PERMANENT_NAMES: Final = (
    "central incisor",
    "lateral incisor",
    "canine",
    "first premolar",
    "second premolar",
    "first molar",
    "second molar",
    "third molar",
)
_PRIMARY_NAMES: Final = ("central incisor", "lateral incisor", "canine", "first molar", "second molar")
_QUADRANT_SIDE: Final = {1: ("upper", "right"), 2: ("upper", "left"), 3: ("lower", "left"), 4: ("lower", "right")}
_PALMER_QUADRANT: Final = {1: "UR", 2: "UL", 3: "LL", 4: "LR"}
_PALMER_GRID: Final = {1: "{n}┘", 2: "└{n}", 3: "┌{n}", 4: "{n}┐"}

# FDI -> (SNOMED CT id, display), from the ConceptMap named in the module docstring.
_SNOMED: Final[dict[str, tuple[str, str]]] = {
    "11": ("422653006", "Structure of permanent maxillary right central incisor tooth"),
    "12": ("424877001", "Structure of permanent maxillary right lateral incisor tooth"),
    "13": ("860767006", "Structure of permanent maxillary right canine tooth"),
    "14": ("57826002", "Structure of permanent maxillary right first premolar tooth"),
    "15": ("36492000", "Structure of permanent maxillary right second premolar tooth"),
    "16": ("865995000", "Structure of permanent maxillary right first molar tooth"),
    "17": ("863902006", "Structure of permanent maxillary right second molar tooth"),
    "18": ("68085002", "Structure of permanent maxillary right third molar tooth"),
    "21": ("424399000", "Structure of permanent maxillary left central incisor tooth"),
    "22": ("423185002", "Structure of permanent maxillary left lateral incisor tooth"),
    "23": ("860780009", "Structure of permanent maxillary left canine tooth"),
    "24": ("61897005", "Structure of permanent maxillary left first premolar tooth"),
    "25": ("23226009", "Structure of permanent maxillary left second premolar tooth"),
    "26": ("865988009", "Structure of permanent maxillary left first molar tooth"),
    "27": ("863901004", "Structure of permanent maxillary left second molar tooth"),
    "28": ("87704003", "Structure of permanent maxillary left third molar tooth"),
    "31": ("425106001", "Structure of permanent mandibular left central incisor tooth"),
    "32": ("423331005", "Structure of permanent mandibular left lateral incisor tooth"),
    "33": ("860782001", "Structure of permanent mandibular left canine tooth"),
    "34": ("2400006", "Structure of permanent mandibular left first premolar tooth"),
    "35": ("24573005", "Structure of permanent mandibular left second premolar tooth"),
    "36": ("866006002", "Structure of permanent mandibular left first molar tooth"),
    "37": ("863898000", "Structure of permanent mandibular left second molar tooth"),
    "38": ("74344005", "Structure of permanent mandibular left third molar tooth"),
    "41": ("424575004", "Structure of permanent mandibular right central incisor tooth"),
    "42": ("423937004", "Structure of permanent mandibular right lateral incisor tooth"),
    "43": ("860785004", "Structure of permanent mandibular right canine tooth"),
    "44": ("80140008", "Structure of permanent mandibular right first premolar tooth"),
    "45": ("8873007", "Structure of permanent mandibular right second premolar tooth"),
    "46": ("866005003", "Structure of permanent mandibular right first molar tooth"),
    "47": ("863899008", "Structure of permanent mandibular right second molar tooth"),
    "48": ("38994002", "Structure of permanent mandibular right third molar tooth"),
    "51": ("88824007", "Structure of deciduous maxillary right central incisor tooth"),
    "52": ("65624003", "Structure of deciduous maxillary right lateral incisor tooth"),
    "53": ("30618001", "Structure of deciduous maxillary right canine tooth"),
    "54": ("17505006", "Structure of deciduous maxillary right first molar tooth"),
    "55": ("27855007", "Structure of deciduous maxillary right second molar tooth"),
    "61": ("51678005", "Structure of deciduous maxillary left central incisor tooth"),
    "62": ("43622005", "Structure of deciduous maxillary left lateral incisor tooth"),
    "63": ("73937000", "Structure of deciduous maxillary left canine tooth"),
    "64": ("45234009", "Structure of deciduous maxillary left first molar tooth"),
    "65": ("51943008", "Structure of deciduous maxillary left second molar tooth"),
    "71": ("89552004", "Structure of deciduous mandibular left central incisor tooth"),
    "72": ("14770005", "Structure of deciduous mandibular left lateral incisor tooth"),
    "73": ("43281008", "Structure of deciduous mandibular left canine tooth"),
    "74": ("38896004", "Structure of deciduous mandibular left first molar tooth"),
    "75": ("49330006", "Structure of deciduous mandibular left second molar tooth"),
    "81": ("67834006", "Structure of deciduous mandibular right central incisor tooth"),
    "82": ("22445006", "Structure of deciduous mandibular right lateral incisor tooth"),
    "83": ("6062009", "Structure of deciduous mandibular right canine tooth"),
    "84": ("58646007", "Structure of deciduous mandibular right first molar tooth"),
    "85": ("61868007", "Structure of deciduous mandibular right second molar tooth"),
}


@dataclass(frozen=True)
class Tooth:
    fdi: str
    quadrant: int  # 1-4, the same for a permanent tooth and the primary tooth it replaces
    position: int  # from the midline: 1-8 permanent, 1-5 primary
    primary: bool
    universal: str
    palmer: str
    name: str  # "upper right first molar", "primary lower left canine"
    snomed: str
    snomed_display: str

    @property
    def anterior(self) -> bool:
        """Incisors and canines (an incisal edge, no occlusal surface)."""
        return self.position <= 3

    def label(self, notation: str) -> str:
        return to_notation(self.fdi, notation)


class InvalidTooth(ValueError):
    """Text that is not a tooth in the notation it was read in, or surfaces that do not fit the tooth."""


def _build() -> dict[str, Tooth]:
    teeth: dict[str, Tooth] = {}
    for primary, positions, names in ((False, 8, _PERMANENT_NAMES), (True, 5, _PRIMARY_NAMES)):
        for quadrant in (1, 2, 3, 4):
            for position in range(1, positions + 1):
                fdi = f"{quadrant + (4 if primary else 0)}{position}"
                # Universal counts round the mouth: upper right (distal to mesial), upper left (mesial to distal),
                # lower left (distal to mesial), lower right (mesial to distal).
                order = {
                    1: positions - position,
                    2: positions + position - 1,
                    3: 2 * positions + positions - position,
                    4: 3 * positions + position - 1,
                }[quadrant]
                universal = chr(ord("A") + order) if primary else str(order + 1)
                mark = chr(ord("A") + position - 1) if primary else str(position)
                arch, side = _QUADRANT_SIDE[quadrant]
                sctid, display = _SNOMED[fdi]
                teeth[fdi] = Tooth(
                    fdi=fdi,
                    quadrant=quadrant,
                    position=position,
                    primary=primary,
                    universal=universal,
                    palmer=f"{_PALMER_QUADRANT[quadrant]}{mark}",
                    name=("primary " if primary else "") + f"{arch} {side} {names[position - 1]}",
                    snomed=sctid,
                    snomed_display=display,
                )
    return teeth


#: FDI code -> Tooth, all 52: 32 permanent then 20 primary, each quadrant from the midline out.
TEETH: Final[dict[str, Tooth]] = _build()
_BY_UNIVERSAL: Final = {t.universal: t for t in TEETH.values()}
_BY_PALMER: Final = {t.palmer: t for t in TEETH.values()}
_GRID: Final = re.compile(r"^(?:([1-8A-E])\s*([┘┐])|([└┌])\s*([1-8A-E]))$")


def chart_rows(*, primary: bool) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The FDI codes of the upper and lower arch as a dentist faces the patient: the patient's right on the left
    (upper 18..11 21..28, lower 48..41 31..38; primary 55..51 61..65, 85..81 71..75)."""
    n = 5 if primary else 8
    offset = 4 if primary else 0
    upper = tuple(f"{1 + offset}{p}" for p in range(n, 0, -1)) + tuple(f"{2 + offset}{p}" for p in range(1, n + 1))
    lower = tuple(f"{4 + offset}{p}" for p in range(n, 0, -1)) + tuple(f"{3 + offset}{p}" for p in range(1, n + 1))
    return upper, lower


def get(fdi: str) -> Tooth:
    try:
        return TEETH[fdi]
    except KeyError:
        raise InvalidTooth(f"{fdi!r} is not an FDI tooth number (11-48, primary 51-85)") from None


def to_notation(fdi: str, notation: str) -> str:
    """The tooth's label in ``notation`` (``fdi``, ``universal`` or ``palmer``)."""
    tooth = get(fdi)
    if notation == FDI:
        return tooth.fdi
    if notation == UNIVERSAL:
        return tooth.universal
    if notation == PALMER:
        return tooth.palmer
    raise ValueError(f"unknown notation {notation!r} (known: {', '.join(NOTATION_CODES)})")


def palmer_grid(fdi: str) -> str:
    """The Palmer grid form, e.g. ``6┘`` for the upper right first molar (FDI 16)."""
    tooth = get(fdi)
    return _PALMER_GRID[tooth.quadrant].format(n=tooth.palmer[2:])


def parse(text: str, notation: str) -> str:
    """The FDI code of ``text`` read in ``notation``; raises ``InvalidTooth``. Spaces and case are forgiven."""
    if notation not in NOTATION_CODES:
        raise ValueError(f"unknown notation {notation!r} (known: {', '.join(NOTATION_CODES)})")
    value = re.sub(r"\s+", "", str(text or "")).upper()
    found: Tooth | None = None
    if notation == FDI:
        found = TEETH.get(value)
    elif notation == UNIVERSAL:
        found = _BY_UNIVERSAL.get(value.lstrip("0") if value.isdigit() else value)
    else:
        found = _BY_PALMER.get(value)
        grid = _GRID.match(value)
        if found is None and grid:
            mark, corner = (grid.group(1), grid.group(2)) if grid.group(1) else (grid.group(4), grid.group(3))
            quadrant = {"┘": 1, "└": 2, "┌": 3, "┐": 4}[corner]
            found = _BY_PALMER.get(_PALMER_QUADRANT[quadrant] + mark)
    if found is None:
        examples = {FDI: "11-48 or 51-85", UNIVERSAL: "1-32 or A-T", PALMER: "UR1-LR8 or URA-LRE"}[notation]
        raise InvalidTooth(f"{str(text)[:20]!r} is not a tooth number in {notation} notation ({examples}).")
    return found.fdi


def convert(text: str, source: str, target: str) -> str:
    """``text`` in notation ``source`` written in notation ``target``."""
    return to_notation(parse(text, source), target)


def clean_surfaces(fdi: str, surfaces: str) -> str:
    """Surfaces as their letters in canonical order (``"dom"`` -> ``"MOD"``); empty stays empty. Refuses unknown
    letters, repeats, occlusal on an incisor or canine and incisal on a premolar or molar."""
    letters = re.sub(r"[\s,]+", "", str(surfaces or "")).upper()
    if not letters:
        return ""
    unknown = sorted(set(letters) - set(SURFACES))
    if unknown:
        raise InvalidTooth(f"Unknown surface(s) {''.join(unknown)!r}: use {', '.join(SURFACES)}.")
    if len(set(letters)) != len(letters):
        raise InvalidTooth("A surface is named twice.")
    if not fdi:
        raise InvalidTooth("Surfaces need a tooth.")
    tooth = get(fdi)
    if tooth.anterior and "O" in letters:
        raise InvalidTooth(f"Tooth {fdi} is an incisor or canine: it has an incisal edge (I), not an occlusal surface.")
    if not tooth.anterior and "I" in letters:
        raise InvalidTooth(f"Tooth {fdi} is a premolar or molar: it has an occlusal surface (O), not an incisal edge.")
    return "".join(s for s in SURFACES if s in letters)
