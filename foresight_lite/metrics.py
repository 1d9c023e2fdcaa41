"""Calibration and ranking metrics for a confidence against real outcomes.

`conf` is a probability in [0, 1] (a parsed <confidence> divided by 100), `correct` is 0/1.
brier: mean squared error of the confidence (lower is better; a constant 0.5 scores 0.25).
ece:   expected calibration error over `n_bins` equal-width bins (lower is better).
auroc: chance that a random success got a higher confidence than a random failure (0.5 is
       uninformative); None when only one outcome is present, because it is undefined then.
"""

from __future__ import annotations

import numpy as np


def _arrays(conf, correct) -> tuple[np.ndarray, np.ndarray]:
    c = np.asarray(conf, dtype=float).reshape(-1)
    y = np.asarray(correct, dtype=float).reshape(-1)
    if c.shape != y.shape:
        raise ValueError(f"conf and correct differ in length ({c.size} vs {y.size}).")
    if c.size and (np.nanmin(c) < 0 or np.nanmax(c) > 1):
        raise ValueError("conf must lie in [0, 1]; divide a 0-100 confidence by 100.")
    return c, y


def brier(conf, correct) -> float | None:
    c, y = _arrays(conf, correct)
    return float(np.mean((c - y) ** 2)) if c.size else None


def ece(conf, correct, n_bins: int = 10) -> float | None:
    c, y = _arrays(conf, correct)
    if not c.size:
        return None
    bins = np.minimum((c * n_bins).astype(int), n_bins - 1)  # conf == 1.0 joins the top bin
    total = 0.0
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            total += mask.sum() * abs(c[mask].mean() - y[mask].mean())
    return float(total / c.size)


def auroc(conf, correct) -> float | None:
    c, y = _arrays(conf, correct)
    pos, neg = c[y == 1], c[y == 0]
    if not pos.size or not neg.size:
        return None
    # Mann-Whitney U with ties counted as half
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (pos.size * neg.size))
