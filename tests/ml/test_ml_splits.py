from collections import Counter

from analysis.ml.data import read_manifest
from analysis.ml.splits import group_kfold, train_val_test_split


def test_groups_do_not_straddle_parts(synthetic_manifest):
    records = read_manifest(synthetic_manifest)
    tr, va, te = train_val_test_split(records, 0.15, 0.15, seed=1)
    assert sorted(tr + va + te) == list(range(len(records)))
    groups = [{records[i].group for i in idx} for idx in (tr, va, te)]
    assert not groups[0] & groups[1]
    assert not groups[0] & groups[2]
    assert not groups[1] & groups[2]


def test_split_fractions_and_stratification(synthetic_manifest):
    records = read_manifest(synthetic_manifest)
    tr, va, te = train_val_test_split(records, 0.2, 0.2, seed=3)
    n = len(records)
    for idx, frac in ((tr, 0.6), (va, 0.2), (te, 0.2)):
        assert abs(len(idx) / n - frac) < 0.08
    overall = Counter(r.label_key for r in records)
    for idx in (tr, te):
        part = Counter(records[i].label_key for i in idx)
        for key, count in overall.items():
            if count >= 30:  # only frequent label sets can be checked meaningfully
                assert abs(part[key] / len(idx) - count / n) < 0.1, key


def test_split_is_reproducible_and_seed_dependent(synthetic_manifest):
    records = read_manifest(synthetic_manifest)
    assert train_val_test_split(records, seed=7) == train_val_test_split(records, seed=7)
    assert train_val_test_split(records, seed=7) != train_val_test_split(records, seed=8)


def test_group_kfold(synthetic_manifest):
    records = read_manifest(synthetic_manifest)
    folds = group_kfold(records, k=4, seed=0)
    held = [i for _, h in folds for i in h]
    assert sorted(held) == list(range(len(records)))
    for train, test in folds:
        assert not {records[i].group for i in train} & {records[i].group for i in test}
