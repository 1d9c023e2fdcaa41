"""Plotly figures: confidence against outcomes (reliability), q distributions, comparisons.

Every function takes plain lists (or the aggregated rows of `foresight_lite.reproduce`:
one dict per method, world and split, with `METRIC` the mean over seeds and `METRIC_ci` its
Student-t 95% half-width) and returns a `plotly.graph_objects.Figure`; call `.show()` in a
notebook or `.write_html(path)` for a report.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .metrics import auroc, brier, ece


def reliability_points(conf, correct, *, n_bins: int = 10) -> tuple[list, list, list]:
    """(mean confidence, observed success rate, count) of every non-empty equal-width bin."""
    c, y = np.asarray(conf, float), np.asarray(correct, float)
    bins = np.minimum((c * n_bins).astype(int), n_bins - 1)
    xs, ys, ns = [], [], []
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            xs.append(float(c[mask].mean())), ys.append(float(y[mask].mean())), ns.append(int(mask.sum()))
    return xs, ys, ns


def reliability_diagram(conf, correct, *, n_bins: int = 10, title: str = "Reliability") -> go.Figure:
    """Binned confidence against the observed success rate; the diagonal is perfect calibration.

    Marker size shows how many predictions fall in each bin."""
    c, y = np.asarray(conf, float), np.asarray(correct, float)
    xs, ys, ns = reliability_points(c, y, n_bins=n_bins)
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


WORLD_COLORS = {"search": "#1f77b4", "math": "#ff7f0e"}
METRIC_NAMES = {"success": "success", "mean_at_k": "mean@k", "pass_at_k": "pass@k",
                "format_adherence": "format adherence", "grounding": "keyword grounding",
                "brier_all": "Brier (lower is better)", "ece_all": "ECE (lower is better)",
                "auroc_all": "AUROC (0.5 = ranks nothing)", "tokens_per_episode": "tokens per episode"}


def _cells(rows, split):
    """{(label, world): row} of one split, and the labels and worlds in first-seen order."""
    cells = {(r["label"], r["world"]): r for r in rows if r["split"] == split}
    labels = list(dict.fromkeys(r["label"] for r in rows if r["split"] == split))
    worlds = list(dict.fromkeys(r["world"] for r in rows if r["split"] == split))
    return cells, labels, worlds


def _bar(cells, labels, world, metric, *, showlegend):
    values = [cells.get((label, world), {}).get(metric) for label in labels]
    errors = [cells.get((label, world), {}).get(f"{metric}_ci") for label in labels]
    seeds = [cells.get((label, world), {}).get("seeds", 0) for label in labels]
    return go.Bar(x=labels, y=values, name=world, marker_color=WORLD_COLORS.get(world), showlegend=showlegend,
                  legendgroup=world, error_y=dict(type="data", array=[e or 0 for e in errors], visible=True),
                  customdata=seeds, hovertemplate="%{x}<br>%{y:.3f} ± %{error_y.array:.3f}"
                                                  "<br>%{customdata} seed(s)<extra>" + world + "</extra>")


def method_bars(rows, *, metric: str = "success", split: str = "eval", title: str | None = None) -> go.Figure:
    """One bar per method and world: the mean over seeds, error bars the Student-t 95% half-width."""
    cells, labels, worlds = _cells(rows, split)
    fig = go.Figure([_bar(cells, labels, w, metric, showlegend=True) for w in worlds])
    name = METRIC_NAMES.get(metric, metric)
    fig.update_layout(barmode="group", title=title or f"{name}, {split} split (mean over seeds, 95% CI)",
                      yaxis_title=name, width=max(560, 90 * len(labels)), height=440)
    if metric not in ("tokens_per_episode", "turns_per_episode"):
        fig.update_yaxes(range=[0, 1.05] if metric != "brier_all" else None)
    return fig


def calibration_bars(rows, *, split: str = "eval") -> go.Figure:
    """Brier, ECE and AUROC per method and world, side by side, with 95% error bars."""
    cells, labels, worlds = _cells(rows, split)
    metrics = ("brier_all", "ece_all", "auroc_all")
    fig = make_subplots(rows=1, cols=3, subplot_titles=[METRIC_NAMES[m] for m in metrics])
    for col, metric in enumerate(metrics, start=1):
        for w in worlds:
            fig.add_trace(_bar(cells, labels, w, metric, showlegend=col == 1), row=1, col=col)
    fig.add_hline(y=0.5, line_dash="dot", line_color="grey", row=1, col=3)
    fig.update_layout(barmode="group", title=f"Calibration of the stated confidence, {split} split "
                      "(all steps; mean over seeds, 95% CI)", width=max(900, 130 * len(labels)), height=460)
    return fig


def format_capability_gap(rows, *, split: str = "eval") -> go.Figure:
    """The paper's gap, per method: format adherence (the form of foresight) beside keyword
    grounding and AUROC (its substance). A long line from format to grounding is a wide gap."""
    cells, labels, worlds = _cells(rows, split)
    fig = make_subplots(rows=1, cols=len(worlds), subplot_titles=worlds, shared_yaxes=True)
    marks = (("format_adherence", "format adherence", "#2ca02c", "circle"),
             ("grounding", "keyword grounding", "#d62728", "diamond"),
             ("auroc_all", "AUROC of confidence", "#9467bd", "x"))
    for col, w in enumerate(worlds, start=1):
        for label in labels:
            row = cells.get((label, w), {})
            a, b = row.get("format_adherence"), row.get("grounding")
            if a is not None and b is not None:
                fig.add_trace(go.Scatter(x=[b, a], y=[label, label], mode="lines", showlegend=False,
                                         line=dict(color="lightgrey", width=6), hoverinfo="skip"), row=1, col=col)
        for metric, name, color, symbol in marks:
            xs = [cells.get((label, w), {}).get(metric) for label in labels]
            errs = [cells.get((label, w), {}).get(f"{metric}_ci") or 0 for label in labels]
            fig.add_trace(go.Scatter(x=xs, y=labels, mode="markers", name=name, legendgroup=name,
                                     showlegend=col == 1, marker=dict(color=color, size=11, symbol=symbol),
                                     error_x=dict(type="data", array=errs, visible=True, thickness=1)),
                          row=1, col=col)
        fig.update_xaxes(range=[-0.02, 1.02], title_text="share / AUROC", row=1, col=col)
    fig.update_layout(title=f"The format-capability gap, {split} split: form of foresight vs substance "
                      "(methods without a confidence have no AUROC; plain SFT writes no keywords)",
                      width=max(700, 450 * len(worlds)), height=120 + 45 * len(labels))
    return fig


def reliability_grid(pairs: dict, *, n_bins: int = 10, cols: int = 3, title: str = "Reliability per method"
                     ) -> go.Figure:
    """One reliability diagram per entry of `pairs` ({name: (confidences in [0, 1], outcomes)})."""
    names = list(pairs)
    n_rows = max(1, -(-len(names) // cols))
    fig = make_subplots(rows=n_rows, cols=cols, subplot_titles=[_short(n, pairs[n]) for n in names],
                        horizontal_spacing=0.08, vertical_spacing=0.12)
    for i, name in enumerate(names):
        r, c = i // cols + 1, i % cols + 1
        conf, ok = pairs[name]
        fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dash", color="grey"),
                                 showlegend=False, hoverinfo="skip"), row=r, col=c)
        if len(conf):
            xs, ys, ns = reliability_points(conf, ok, n_bins=n_bins)
            size = 6 + 18 * np.sqrt(np.asarray(ns) / max(ns))
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", marker=dict(size=size), showlegend=False,
                                     text=[f"n={n}" for n in ns],
                                     hovertemplate="confidence %{x:.2f}<br>success %{y:.2f}<br>%{text}"),
                          row=r, col=c)
        fig.update_xaxes(range=[0, 1], row=r, col=c)
        fig.update_yaxes(range=[-0.02, 1.02], row=r, col=c)
    fig.update_layout(title=title, width=330 * cols, height=80 + 300 * n_rows)
    return fig


def _short(name, pair) -> str:
    conf, ok = pair
    if not len(conf):
        return f"{name}<br><sup>no confidence stated</sup>"
    c, y = np.asarray(conf, float), np.asarray(ok, float)
    a, e = auroc(c, y), ece(c, y)
    return (f"{name}<br><sup>n={len(c)} · AUROC {'n/a' if a is None else f'{a:.2f}'} · "
            f"ECE {'n/a' if e is None else f'{e:.2f}'}</sup>")
