"""Evaluation plots of the photo classifier: ROC and PR curves, confusion matrices at the thresholds, reliability.

Written as PNG files (matplotlib, Agg backend) into the artefact's ``plots/`` folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .metrics import average_precision, confusion, ece, reliability_table, roc_auc


def make_plots(
    y: np.ndarray, p: np.ndarray, thresholds: dict[str, float], labels: Sequence[str], out: Path
) -> list[str]:
    # here, not at the top: the Agg backend must be chosen before pyplot loads, and only plotting needs them
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve, roc_curve

    out.mkdir(parents=True, exist_ok=True)
    written = []

    def save(fig, name):
        path = out / name
        fig.savefig(path, dpi=80, bbox_inches="tight")
        plt.close(fig)
        written.append(str(path))

    fig, axes = plt.subplots(1, len(labels), figsize=(3.2 * len(labels), 3.2))
    for ax, (c, name) in zip(np.atleast_1d(axes), enumerate(labels), strict=True):
        if 0 < y[:, c].sum() < len(y):
            fpr, tpr, _ = roc_curve(y[:, c], p[:, c])
            ax.plot(fpr, tpr, lw=1.5)
            pred = p[:, c] >= thresholds[name]
            sens = (pred & (y[:, c] == 1)).sum() / max(1, y[:, c].sum())
            fpr_t = (pred & (y[:, c] == 0)).sum() / max(1, (y[:, c] == 0).sum())
            ax.plot([fpr_t], [sens], "o", color="C3", ms=4, label="threshold")
            ax.set_title(f"{name} AUC={roc_auc(y[:, c], p[:, c]):.3f}", fontsize=9)
        ax.plot([0, 1], [0, 1], ":", color="grey", lw=0.8)
        ax.set_xlabel("1 - specificity", fontsize=8)
        ax.set_ylabel("sensitivity", fontsize=8)
        ax.tick_params(labelsize=7)
    save(fig, "roc.png")

    fig, axes = plt.subplots(1, len(labels), figsize=(3.2 * len(labels), 3.2))
    for ax, (c, name) in zip(np.atleast_1d(axes), enumerate(labels), strict=True):
        if y[:, c].sum() > 0:
            prec, rec, _ = precision_recall_curve(y[:, c], p[:, c])
            ax.plot(rec, prec, lw=1.5)
            ax.set_title(f"{name} AP={average_precision(y[:, c], p[:, c]):.3f}", fontsize=9)
        ax.set_xlabel("recall", fontsize=8)
        ax.set_ylabel("precision", fontsize=8)
        ax.set_ylim(0, 1.02)
        ax.tick_params(labelsize=7)
    save(fig, "pr.png")

    fig, axes = plt.subplots(1, len(labels), figsize=(2.6 * len(labels), 2.6))
    for ax, (c, name) in zip(np.atleast_1d(axes), enumerate(labels), strict=True):
        pred = (p[:, c] >= thresholds[name]).astype(int)
        conf = confusion(y[:, c], pred)
        mat = np.array([[conf["tn"], conf["fp"]], [conf["fn"], conf["tp"]]])
        ax.imshow(mat, cmap="Blues")
        for (i, j), v in np.ndenumerate(mat):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=9, color="white" if v > mat.max() / 2 else "black")
        ax.set_xticks([0, 1], ["pred -", "pred +"], fontsize=7)
        ax.set_yticks([0, 1], ["true -", "true +"], fontsize=7)
        ax.set_title(f"{name} (t={thresholds[name]:.2f})", fontsize=9)
    save(fig, "confusion.png")

    fig, ax = plt.subplots(figsize=(3.6, 3.6))
    ax.plot([0, 1], [0, 1], ":", color="grey", lw=0.8)
    rows = reliability_table(y, p)
    ax.plot([r["confidence"] for r in rows], [r["accuracy"] for r in rows], "o-", ms=3, label="all labels")
    for c, name in enumerate(labels):
        rc = reliability_table(y[:, c], p[:, c], n_bins=10)
        ax.plot([r["confidence"] for r in rc], [r["accuracy"] for r in rc], lw=0.8, alpha=0.7, label=name)
    ax.set_xlabel("predicted probability", fontsize=8)
    ax.set_ylabel("observed frequency", fontsize=8)
    ax.set_title(f"Reliability (ECE={ece(y, p):.3f})", fontsize=9)
    ax.legend(fontsize=6)
    ax.tick_params(labelsize=7)
    save(fig, "reliability.png")
    return written
