"""Tooth numbers: FDI <-> Universal <-> Palmer for all 52 teeth, surfaces, and the SNOMED CT tooth codes."""

from __future__ import annotations

import re

import pytest

from core import teeth

# Written out by hand from the notations' definitions (not computed like core.teeth does): FDI, Universal, Palmer.
EXPECTED = """
18 1 UR8   17 2 UR7   16 3 UR6   15 4 UR5   14 5 UR4   13 6 UR3   12 7 UR2   11 8 UR1
21 9 UL1   22 10 UL2  23 11 UL3  24 12 UL4  25 13 UL5  26 14 UL6  27 15 UL7  28 16 UL8
38 17 LL8  37 18 LL7  36 19 LL6  35 20 LL5  34 21 LL4  33 22 LL3  32 23 LL2  31 24 LL1
41 25 LR1  42 26 LR2  43 27 LR3  44 28 LR4  45 29 LR5  46 30 LR6  47 31 LR7  48 32 LR8
55 A URE   54 B URD   53 C URC   52 D URB   51 E URA
61 F ULA   62 G ULB   63 H ULC   64 I ULD   65 J ULE
75 K LLE   74 L LLD   73 M LLC   72 N LLB   71 O LLA
81 P LRA   82 Q LRB   83 R LRC   84 S LRD   85 T LRE
"""
ROWS = [tuple(m) for m in re.findall(r"(\d\d) (\w+) (\w+)", EXPECTED)]


def test_the_table_has_all_52_teeth_once() -> None:
    assert len(ROWS) == 52
    assert len({r[0] for r in ROWS}) == len({r[1] for r in ROWS}) == len({r[2] for r in ROWS}) == 52
    assert set(teeth.TEETH) == {r[0] for r in ROWS}
    assert sum(not t.primary for t in teeth.TEETH.values()) == 32
    assert sum(t.primary for t in teeth.TEETH.values()) == 20


@pytest.mark.parametrize(("fdi", "universal", "palmer"), ROWS, ids=[r[0] for r in ROWS])
def test_conversion_every_way(fdi: str, universal: str, palmer: str) -> None:
    forms = {teeth.FDI: fdi, teeth.UNIVERSAL: universal, teeth.PALMER: palmer}
    for source, text in forms.items():
        assert teeth.parse(text, source) == fdi
        assert teeth.parse(text.lower(), source) == fdi
        for target, expected in forms.items():
            assert teeth.convert(text, source, target) == expected
    assert teeth.parse(teeth.palmer_grid(fdi), teeth.PALMER) == fdi


def test_palmer_grid_and_names() -> None:
    assert teeth.palmer_grid("16") == "6┘" and teeth.palmer_grid("21") == "└1"
    assert teeth.palmer_grid("36") == "┌6" and teeth.palmer_grid("85") == "E┐"
    assert teeth.parse("6 ┘", teeth.PALMER) == "16" and teeth.parse("└ 1", teeth.PALMER) == "21"
    assert teeth.get("36").name == "lower left first molar"
    assert teeth.get("75").name == "primary lower left second molar"


@pytest.mark.parametrize(
    ("text", "notation"),
    [
        ("19", "fdi"),
        ("10", "fdi"),
        ("56", "fdi"),
        ("33", "universal"),
        ("0", "universal"),
        ("U", "universal"),
        ("UR9", "palmer"),
        ("URF", "palmer"),
        ("16", "palmer"),
        ("", "fdi"),
        ("1 1 1", "fdi"),
    ],
)
def test_not_a_tooth_is_refused(text: str, notation: str) -> None:
    with pytest.raises(teeth.InvalidTooth):
        teeth.parse(text, notation)


def test_universal_leading_zero_and_unknown_notation() -> None:
    assert teeth.parse("08", teeth.UNIVERSAL) == "11"
    with pytest.raises(ValueError):
        teeth.parse("11", "haderup")


def test_chart_rows_face_the_patient() -> None:
    upper, lower = teeth.chart_rows(primary=False)
    assert upper[:2] == ("18", "17") and upper[7:9] == ("11", "21") and upper[-1] == "28"
    assert lower[0] == "48" and lower[-1] == "38"
    assert sorted(upper + lower + sum(teeth.chart_rows(primary=True), ())) == sorted(teeth.TEETH)


def test_surfaces() -> None:
    assert teeth.clean_surfaces("36", "dom") == "MOD"
    assert teeth.clean_surfaces("11", "i, l") == "IL"
    assert teeth.clean_surfaces("11", "") == ""
    for fdi, bad in (("11", "O"), ("36", "I"), ("36", "MX"), ("36", "MM"), ("", "M")):
        with pytest.raises(teeth.InvalidTooth):
            teeth.clean_surfaces(fdi, bad)


def _verhoeff_ok(number: str) -> bool:
    d = [
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
        [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
        [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
        [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
        [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
        [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
        [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
        [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
        [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
    ]
    p = [
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        [1, 5, 7, 6, 2, 8, 3, 0, 9, 4],
        [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
        [8, 9, 1, 6, 0, 4, 3, 5, 2, 7],
        [9, 4, 5, 3, 1, 2, 6, 8, 7, 0],
        [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
        [2, 7, 9, 3, 8, 0, 6, 4, 1, 5],
        [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
    ]
    check = 0
    for i, digit in enumerate(reversed(number)):
        check = d[check][p[i % 8][int(digit)]]
    return check == 0


def test_snomed_codes_are_well_formed_and_name_the_tooth() -> None:
    codes = [t.snomed for t in teeth.TEETH.values()]
    assert len(set(codes)) == 52
    for tooth in teeth.TEETH.values():
        # an SCTID: 6-18 digits, Verhoeff check digit, partition "00" (a concept id)
        assert re.fullmatch(r"[1-9]\d{5,17}", tooth.snomed) and _verhoeff_ok(tooth.snomed), tooth.fdi
        assert tooth.snomed[-3:-1] == "00", tooth.fdi
        display = tooth.snomed_display
        arch = "maxillary" if tooth.quadrant in (1, 2) else "mandibular"
        side = "right" if tooth.quadrant in (1, 4) else "left"
        kind = tooth.name.replace("primary ", "").split(" ", 2)[2]
        assert display == f"Structure of {'deciduous' if tooth.primary else 'permanent'} {arch} {side} {kind} tooth"


def test_a_mistyped_snomed_id_fails_the_check_digit() -> None:
    assert _verhoeff_ok("422653006") and not _verhoeff_ok("422653007") and not _verhoeff_ok("422635006")
