"""Group-aware, label-stratified splits.

Near-duplicate clusters (``group``) never straddle two parts. Groups are stratified by their label
set (the union of their members' labels): within each label set, groups are shuffled with a fixed
seed and handed greedily to the part that is furthest below its target share of images.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence

from .data import Record


def _group_table(records: Sequence[Record]):
    members: dict[str, list[int]] = defaultdict(list)
    labels: dict[str, set[str]] = defaultdict(set)
    for i, r in enumerate(records):
        members[r.group].append(i)
        labels[r.group].update(r.labels)
    key = {g: ";".join(sorted(labels[g])) or "healthy" for g in members}
    return members, key


def assign_groups(records: Sequence[Record], fractions: Sequence[float], seed: int = 42) -> list[int]:
    """Return, for every record, the index of the part (0..len(fractions)-1) it falls into."""
    if not records:
        return []
    total = float(sum(fractions))
    fractions = [f / total for f in fractions]
    members, key = _group_table(records)
    strata: dict[str, list[str]] = defaultdict(list)
    for g in sorted(members):
        strata[key[g]].append(g)
    rng = random.Random(seed)
    part_of_group: dict[str, int] = {}
    overall = [0] * len(fractions)
    n_total = len(records)
    for stratum in sorted(strata):
        groups = strata[stratum]
        rng.shuffle(groups)
        # large groups first so that they do not overshoot at the end
        groups.sort(key=lambda g: -len(members[g]))
        n_stratum = sum(len(members[g]) for g in groups)
        got = [0] * len(fractions)
        for g in groups:
            size = len(members[g])
            # deficit within the stratum, tie-broken by the overall deficit
            scores = [
                (fractions[q] * n_stratum - got[q] - size / 2, fractions[q] * n_total - overall[q])
                for q in range(len(fractions))
            ]
            p = max(range(len(fractions)), key=scores.__getitem__)
            part_of_group[g] = p
            got[p] += size
            overall[p] += size
    return [part_of_group[r.group] for r in records]


def train_val_test_split(records: Sequence[Record], val: float = 0.15, test: float = 0.15, seed: int = 42):
    """Three disjoint lists of record indices: (train, val, test)."""
    parts = assign_groups(records, [1.0 - val - test, val, test], seed=seed)
    out: tuple[list[int], list[int], list[int]] = ([], [], [])
    for i, p in enumerate(parts):
        out[p].append(i)
    return out


def group_kfold(records: Sequence[Record], k: int = 5, seed: int = 42) -> list[tuple[list[int], list[int]]]:
    """k (train_indices, held_out_indices) pairs; each group is held out exactly once."""
    parts = assign_groups(records, [1.0] * k, seed=seed)
    folds = []
    for f in range(k):
        held = [i for i, p in enumerate(parts) if p == f]
        rest = [i for i, p in enumerate(parts) if p != f]
        folds.append((rest, held))
    return folds
