"""Metrics of the multi-label photo classifier: labels ``y`` (images x classes, 0/1) against probabilities ``p``.

Per-class and macro ROC-AUC and PR-AUC (average precision); F1, sensitivity, specificity at the shipped
thresholds; expected calibration error (15 equal-width bins over all image x label probabilities, and per
label); 95% bootstrap intervals obtained by resampling *groups* (near-duplicate clusters) with replacement.
Plain NumPy: no torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

N_BINS = 15


# ----------------------------------------------------------------------------- primitives


def roc_auc(y: np.ndarray, s: np.ndarray) -> float:
    """ROC-AUC as the Mann-Whitney statistic (ties count half); NaN without both classes."""
    from scipy.stats import rankdata  # SciPy loads when an AUC is first computed, not with the module

    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(y: np.ndarray, s: np.ndarray) -> float:
    """PR-AUC as average precision; NaN without positives."""
    if y.sum() == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    ys = y[order]
    tp = np.cumsum(ys)
    # handle ties like sklearn: evaluate at distinct score thresholds
    distinct = np.r_[np.nonzero(np.diff(s[order]))[0], len(ys) - 1]
    tp = tp[distinct]
    fp = (distinct + 1) - tp
    precision = tp / (tp + fp)
    recall = tp / ys.sum()
    recall_prev = np.r_[0.0, recall[:-1]]
    return float(np.sum((recall - recall_prev) * precision))


def confusion(y: np.ndarray, pred: np.ndarray) -> dict:
    tp = int(((pred == 1) & (y == 1)).sum())
    fp = int(((pred == 1) & (y == 0)).sum())
    fn = int(((pred == 0) & (y == 1)).sum())
    tn = int(((pred == 0) & (y == 0)).sum())
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn}


def rates(c: dict) -> dict:
    tp, fp, fn, tn = c["tp"], c["fp"], c["fn"], c["tn"]
    sens = tp / (tp + fn) if tp + fn else float("nan")
    spec = tn / (tn + fp) if tn + fp else float("nan")
    prec = tp / (tp + fp) if tp + fp else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else float("nan")
    return {"f1": f1, "sensitivity": sens, "specificity": spec, "precision": prec}


def macro(values: Sequence[float]) -> float:
    """Mean over the classes that have a value (NaN = undefined, e.g. no positives); NaN when none has."""
    arr = np.asarray(values, dtype=float)
    return float(np.nanmean(arr)) if np.isfinite(arr).any() else float("nan")


def roc_auc_per_class(y: np.ndarray, p: np.ndarray) -> list[float]:
    """scikit-learn's ROC-AUC per class (NaN without both classes): model selection and calibration in training."""
    from sklearn.metrics import roc_auc_score  # scikit-learn loads when training first validates

    out = []
    for c in range(y.shape[1]):
        if 0 < y[:, c].sum() < len(y):
            out.append(float(roc_auc_score(y[:, c], p[:, c])))
        else:
            out.append(float("nan"))
    return out


# ----------------------------------------------------------------------------- calibration


def ece(y: np.ndarray, p: np.ndarray, n_bins: int = N_BINS) -> float:
    y, p = np.asarray(y, float).ravel(), np.asarray(p, float).ravel()
    if len(p) == 0:
        return float("nan")
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        m = bins == b
        if m.any():
            total += m.sum() * abs(y[m].mean() - p[m].mean())
    return float(total / len(p))


def reliability_table(y: np.ndarray, p: np.ndarray, n_bins: int = N_BINS) -> list[dict]:
    y, p = np.asarray(y, float).ravel(), np.asarray(p, float).ravel()
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    rows = []
    for b in range(n_bins):
        m = bins == b
        if m.any():
            rows.append(
                {"bin": b, "count": int(m.sum()), "confidence": float(p[m].mean()), "accuracy": float(y[m].mean())}
            )
    return rows


# ----------------------------------------------------------------------------- the metrics of a split


def point_metrics(y: np.ndarray, p: np.ndarray, thresholds: dict[str, float], labels: Sequence[str]) -> dict:
    per = {}
    for c, name in enumerate(labels):
        pred = (p[:, c] >= thresholds[name]).astype(int)
        conf = confusion(y[:, c], pred)
        per[name] = {
            "roc_auc": roc_auc(y[:, c], p[:, c]),
            "pr_auc": average_precision(y[:, c], p[:, c]),
            **rates(conf),
            "ece": ece(y[:, c], p[:, c]),
            "threshold": thresholds[name],
            "confusion": conf,
            "positives": int(y[:, c].sum()),
            "n": len(y),
        }
    out = {"per_class": per}
    for key in ("roc_auc", "pr_auc", "f1", "sensitivity", "specificity"):
        out[f"macro_{key}"] = macro([per[n][key] for n in labels])
    out["ece"] = ece(y, p)
    healthy = y.sum(1) == 0
    any_finding = np.zeros(len(y), bool)
    for c, name in enumerate(labels):
        any_finding |= p[:, c] >= thresholds[name]
    out["healthy_images"] = int(healthy.sum())
    out["healthy_false_alarm_rate"] = float(any_finding[healthy].mean()) if healthy.any() else float("nan")
    out["exact_match"] = float(np.mean(np.all((p >= np.array([thresholds[n] for n in labels])) == (y == 1), axis=1)))
    return out


def bootstrap_ci(
    y: np.ndarray,
    p: np.ndarray,
    groups: Sequence[str],
    thresholds: dict[str, float],
    labels: Sequence[str],
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """95% percentile intervals from resampling groups with replacement."""
    rng = np.random.default_rng(seed)
    uniq, inv = np.unique(np.asarray(groups), return_inverse=True)
    members = [np.nonzero(inv == g)[0] for g in range(len(uniq))]
    keys = ("roc_auc", "pr_auc", "f1", "sensitivity", "specificity")
    samples: dict[str, list[float]] = {}
    for _ in range(n_boot):
        pick = rng.integers(0, len(uniq), len(uniq))
        idx = np.concatenate([members[g] for g in pick])
        yy, pp = y[idx], p[idx]
        per_vals = {k: [] for k in keys}
        for c, name in enumerate(labels):
            pred = (pp[:, c] >= thresholds[name]).astype(int)
            r = rates(confusion(yy[:, c], pred))
            vals = {"roc_auc": roc_auc(yy[:, c], pp[:, c]), "pr_auc": average_precision(yy[:, c], pp[:, c]), **r}
            for k in keys:
                samples.setdefault(f"{name}.{k}", []).append(vals[k])
                per_vals[k].append(vals[k])
        for k in keys:
            samples.setdefault(f"macro_{k}", []).append(macro(per_vals[k]))
        samples.setdefault("ece", []).append(ece(yy, pp))
    out = {}
    for key, vals in samples.items():
        a = np.asarray(vals, float)
        a = a[np.isfinite(a)]
        out[key] = [float(np.percentile(a, 2.5)), float(np.percentile(a, 97.5))] if len(a) else [None, None]
    return out


def full_metrics(y, p, groups, thresholds, labels, n_boot=1000) -> dict:
    m = point_metrics(y, p, thresholds, labels)
    if n_boot:
        ci = bootstrap_ci(y, p, groups, thresholds, labels, n_boot=n_boot)
        m["ci95"] = ci
        for name in labels:
            m["per_class"][name]["ci95"] = {k.split(".", 1)[1]: v for k, v in ci.items() if k.startswith(name + ".")}
        m["bootstrap"] = {"n": n_boot, "unit": "group (near-duplicate cluster)", "interval": "percentile 2.5-97.5"}
    return m


def summary_of(m: dict, labels: Sequence[str]) -> dict:
    """The headline numbers of ``full_metrics`` that go into ``model.json`` and the summary of ``metrics.json``."""
    keep = ("roc_auc", "pr_auc", "f1", "sensitivity", "specificity", "ece")
    s = {
        k: m[k]
        for k in (
            "macro_roc_auc",
            "macro_pr_auc",
            "macro_f1",
            "macro_sensitivity",
            "macro_specificity",
            "ece",
            "healthy_false_alarm_rate",
        )
    }
    s["per_class"] = {n: {k: m["per_class"][n][k] for k in keep} for n in labels}
    if "ci95" in m:
        s["ci95"] = {k: m["ci95"][k] for k in ("macro_roc_auc", "macro_f1", "ece")}
    return s
