"""Plotly figures: confidence against outcomes (reliability), q distributions, comparisons.

Every function takes plain lists and returns a `plotly.graph_objects.Figure`; call `.show()`
in a notebook or `.write_html(path)` for a report.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from .metrics import auroc, brier, ece


def reliability_diagram(conf, correct, *, n_bins: int = 10, title: str = "Reliability") -> go.Figure:
    """Binned confidence against the observed success rate; the diagonal is perfect calibration.

    Marker size shows how many predictions fall in each bin."""
    c, y = np.asarray(conf, float), np.asarray(correct, float)
    bins = np.minimum((c * n_bins).astype(int), n_bins - 1)
    xs, ys, ns = [], [], []
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            xs.append(c[mask].mean()), ys.append(y[mask].mean()), ns.append(int(mask.sum()))
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect calibration",
                             line=dict(dash="dash", color="grey")))
    size = 8 + 30 * np.sqrt(np.asarray(ns) / max(ns)) if ns else []
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name="observed",
                             marker=dict(size=size), text=[f"n={n}" for n in ns],
                             hovertemplate="confidence %{x:.2f}<br>success %{y:.2f}<br>%{text}"))
    fig.update_layout(title=f"{title}<br><sup>{_scores(c, y)}</sup>", xaxis_title="confidence",
                      yaxis_title="observed success rate", xaxis_range=[0, 1], yaxis_range=[-0.02, 1.02],
                      width=520, height=460)
    return fig


def confidence_histogram(conf, correct, *, title: str = "Confidence by real outcome") -> go.Figure:
    """Overlaid histograms of the confidence for episodes that succeeded and that failed."""
    c, y = np.asarray(conf, float), np.asarray(correct, bool)
    fig = go.Figure()
    for label, mask, color in (("succeeded", y, "#2ca02c"), ("failed", ~y, "#d62728")):
        fig.add_trace(go.Histogram(x=c[mask], name=f"{label} (n={int(mask.sum())})", opacity=0.6,
                                   xbins=dict(start=0, end=1.0001, size=0.1), marker_color=color))
    fig.update_layout(barmode="overlay", title=f"{title}<br><sup>{_scores(c, y)}</sup>",
                      xaxis_title="confidence", yaxis_title="steps", width=620, height=420)
    return fig


def _scores(c, y) -> str:
    parts = []
    for name, fn in (("AUROC", auroc), ("Brier", brier), ("ECE", ece)):
        value = fn(c, y) if len(c) else None
        parts.append(f"{name} {value:.3f}" if value is not None else f"{name} n/a")
    return " · ".join(parts)
