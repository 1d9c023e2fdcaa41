"""The numbers the paper reports: success over k samples, calibration, and spread over seeds.

What and why:
`conf` is a probability in [0, 1] (a parsed <confidence> divided by 100), `correct` is 0/1.
brier: mean squared error of the confidence (lower is better; a constant 0.5 scores 0.25).
ece:   expected calibration error over `n_bins` equal-width bins [0, 0.1), ..., [0.9, 1.0]
       (lower is better; a confidence of exactly 1.0 joins the top bin).
auroc: chance that a random success got a higher confidence than a random failure (0.5 is
       uninformative); None when only one outcome is present, because it is undefined then.
mean_at_k, pass_at_k: from k sampled episodes per task (the paper's mean@30 and pass@30):
       the mean success over all samples, and the unbiased estimate of the chance that at
       least one of k samples succeeds (Chen et al. 2021, "Evaluating Large Language Models
       Trained on Code": 1 - C(n-c, k) / C(n, k) per task, with n samples and c successes).
confidence_interval: mean over seeds with a Student-t 95% half-width, and the min-max range.
mcnemar: two arms played on the same tasks; the tasks only one of them solved, and the exact
       two-sided McNemar p-value: how often "no difference" (each such task a fair coin)
       splits them at least this unevenly. With 30 tasks, 1-3 tasks apart is never evidence.
Every function returns None for empty input instead of raising.
How: `python -m pytest tests/test_metrics.py -q` checks them against hand-computed values.
"""

from __future__ import annotations

import math

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


def mean_at_k(successes_per_task) -> float | None:
    """Mean success over every sample of every task: mean over tasks of c/n (tasks weigh equally)."""
    rates = [float(np.mean(np.asarray(list(s), dtype=float))) for s in successes_per_task if len(s)]
    return float(np.mean(rates)) if rates else None


def pass_at_k(successes_per_task, k: int | None = None) -> float | None:
    """Unbiased pass@k averaged over tasks; each task holds n >= k sampled outcomes (0/1).

    `k` defaults to the smallest n. Per task 1 - C(n-c, k) / C(n, k), computed as a product so
    large n does not overflow (the form in Chen et al. 2021)."""
    tasks = [np.asarray(list(s), dtype=float) for s in successes_per_task]
    tasks = [t for t in tasks if t.size]
    if not tasks:
        return None
    k = min(t.size for t in tasks) if k is None else k
    if k < 1:
        raise ValueError(f"pass@k needs k of at least 1, got {k}.")
    short = min(t.size for t in tasks)
    if short < k:
        raise ValueError(f"pass@{k} needs at least {k} samples per task; one task has only {short}.")
    values = []
    for t in tasks:
        n, c = t.size, int(t.sum())
        if n - c < k:  # every draw of k samples holds a success
            values.append(1.0)
        else:
            values.append(1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1))))
    return float(np.mean(values))


# two-sided 95% Student-t quantiles by degrees of freedom; above 30 the next smaller tabled df
# is used (a slightly wider, conservative interval), and 1.96 from 120 on
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
        10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110,
        18: 2.101, 19: 2.093, 20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060,
        26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


def t_quantile_95(df: int) -> float:
    """The two-sided 95% Student-t quantile for `df` degrees of freedom (from a table)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be at least 1, got {df}.")
    if df in _T95:
        return _T95[df]
    if df > 120:
        return 1.960
    return _T95[max(d for d in _T95 if d < df)]


def confidence_interval(values) -> dict | None:
    """Spread of one metric over seeds: mean, Student-t 95% half-width, min, max, n.

    None values (a metric undefined for a seed, e.g. AUROC with one outcome) are dropped and
    `n` counts the rest. The half-width is None with fewer than two values. None for no values."""
    x = np.asarray([v for v in values if v is not None], dtype=float)
    if not x.size:
        return None
    half = None
    if x.size > 1:
        half = float(t_quantile_95(x.size - 1) * x.std(ddof=1) / np.sqrt(x.size))
    return {"mean": float(x.mean()), "half_width": half, "min": float(x.min()), "max": float(x.max()),
            "n": int(x.size)}


def mcnemar(a, b) -> dict | None:
    """Outcomes of two arms on the same tasks (0/1 each, in one task order): how many each solved,
    how many only one solved, and the exact two-sided McNemar p-value. Only the discordant tasks
    bear on which arm is better; under "no difference" each is a fair coin. None for no tasks."""
    x = np.asarray(a, dtype=float).reshape(-1).astype(bool)
    y = np.asarray(b, dtype=float).reshape(-1).astype(bool)
    if x.shape != y.shape:
        raise ValueError(f"a and b differ in length ({x.size} vs {y.size}); pair them by task first.")
    if not x.size:
        return None
    a_only, b_only = int((x & ~y).sum()), int((~x & y).sum())
    n, k = a_only + b_only, min(a_only, b_only)
    p_value = 1.0 if n == 0 else min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)
    return {"tasks": int(x.size), "a": int(x.sum()), "b": int(y.sum()), "a_only": a_only, "b_only": b_only,
            "p_value": p_value}
