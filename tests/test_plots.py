"""plots: the reliability bins agree with metrics.ece, and each figure shows the numbers it is given."""

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from foresight_lite.metrics import ece
from foresight_lite.plots import (calibration_bars, confidence_histogram, format_capability_gap, method_bars,
                                  reliability_diagram, reliability_grid, reliability_points)


def test_reliability_points_by_hand():
    # bins: 0.05 -> 0, 0.15 and 0.12 -> 1, 1.0 -> the top bin (9)
    xs, ys, ns = reliability_points([0.05, 0.15, 0.12, 1.0], [0, 1, 0, 1])
    assert ns == [1, 2, 1]
    assert np.allclose(xs, [0.05, 0.135, 1.0])
    assert ys == [0.0, 0.5, 1.0]
    assert reliability_points([], []) == ([], [], [])


pairs = st.integers(1, 60).flatmap(lambda n: st.tuples(
    st.lists(st.floats(0, 1), min_size=n, max_size=n), st.lists(st.integers(0, 1), min_size=n, max_size=n)))


@settings(deadline=None)
@given(pairs)
def test_reliability_points_are_the_bins_of_ece(pair):
    """The diagram draws what ECE measures: the count-weighted gap of its points is the ECE."""
    conf, correct = pair
    xs, ys, ns = reliability_points(conf, correct)
    assert sum(ns) == len(conf)
    assert all(0 <= y <= 1 for y in ys) and xs == sorted(xs)
    gap = sum(n * abs(x - y) for x, y, n in zip(xs, ys, ns)) / len(conf)
    assert math.isclose(gap, ece(conf, correct), abs_tol=1e-9)


def test_reliability_diagram_and_histogram_show_their_scores():
    fig = reliability_diagram([0.9, 0.8, 0.2, 0.1], [1, 1, 0, 0])
    diagonal, observed = fig.data
    assert list(diagonal.x) == [0, 1] and list(observed.y) == [0.0, 0.0, 1.0, 1.0]
    assert "AUROC 1.000" in fig.layout.title.text
    # one outcome only: AUROC is undefined and says so instead of failing
    assert "AUROC n/a" in reliability_diagram([0.3, 0.7], [1, 1]).layout.title.text
    assert "AUROC n/a" in reliability_diagram([], []).layout.title.text
    hist = confidence_histogram([0.9, 0.8, 0.2], [1, 1, 0])
    assert [t.name for t in hist.data] == ["succeeded (n=2)", "failed (n=1)"]
    assert list(hist.data[0].x) == [0.9, 0.8]


ROWS = [  # aggregated rows as reproduce.aggregate writes them
    {"label": "FE-SFT", "world": "search", "split": "eval", "success": 0.4, "success_ci": 0.1, "seeds": 3,
     "format_adherence": 1.0, "grounding": 0.05, "auroc_all": 0.5, "brier_all": 0.3, "ece_all": 0.2},
    {"label": "FE-SFT", "world": "math", "split": "eval", "success": 0.3, "success_ci": None, "seeds": 1,
     "format_adherence": 0.9, "grounding": None, "auroc_all": None, "brier_all": 0.4, "ece_all": 0.3},
    {"label": "SFT", "world": "search", "split": "eval", "success": 0.6, "success_ci": 0.05, "seeds": 3},
    {"label": "SFT", "world": "search", "split": "ood", "success": 0.1, "success_ci": 0.0, "seeds": 3},
]


def test_method_bars_one_bar_per_method_and_world():
    fig = method_bars(ROWS)
    search, math_ = fig.data
    assert (search.name, list(search.x), list(search.y)) == ("search", ["FE-SFT", "SFT"], [0.4, 0.6])
    assert list(search.error_y.array) == [0.1, 0.05]
    assert list(math_.y) == [0.3, None]  # a method never run on a world is a gap, not a zero
    assert list(math_.error_y.array) == [0, 0]  # one seed: no interval drawn
    ood = method_bars(ROWS, split="ood")
    assert [list(t.y) for t in ood.data] == [[0.1]]


def test_calibration_bars_and_gap_figure():
    fig = calibration_bars(ROWS)
    assert len(fig.data) == 3 * 2  # three metrics x two worlds
    assert [t.y[0] for t in fig.data if t.name == "search"] == [0.3, 0.2, 0.5]
    gap = format_capability_gap(ROWS)
    connectors = [t for t in gap.data if t.mode == "lines"]
    # a line from grounding to format only where both are known: FE-SFT on search
    assert [list(t.x) for t in connectors] == [[0.05, 1.0]]


def test_reliability_grid_titles_each_method():
    fig = reliability_grid({"FE-SFT": ([0.9, 0.2], [1, 0]), "SFT": ([], [])}, cols=2)
    titles = [a.text for a in fig.layout.annotations]
    assert titles[0].startswith("FE-SFT<br><sup>n=2 · AUROC 1.00")
    assert "no confidence stated" in titles[1]
