import math

import pytest
from hypothesis import given, settings, strategies as st

from foresight_lite.metrics import (auroc, brier, confidence_interval, ece, mcnemar, mean_at_k, pass_at_k,
                                    t_quantile_95)


def test_brier():
    assert brier([1, 0], [1, 0]) == 0
    assert brier([0.5] * 4, [1, 0, 1, 0]) == 0.25
    assert math.isclose(brier([0.8, 0.3], [1, 0]), (0.04 + 0.09) / 2)
    assert brier([], []) is None


def test_ece_by_hand():
    # bin 9 holds 0.9, 0.95 (mean 0.925, accuracy 0.5); bin 1 holds 0.1 (accuracy 0)
    value = ece([0.9, 0.95, 0.1], [1, 0, 0])
    assert math.isclose(value, (2 * abs(0.925 - 0.5) + abs(0.1 - 0)) / 3)
    assert ece([1.0, 1.0], [1, 1]) == 0  # confidence 1.0 falls in the top bin
    assert ece([0.0], [0]) == 0
    assert ece([], []) is None


def test_auroc():
    assert auroc([0.9, 0.8, 0.2, 0.1], [1, 1, 0, 0]) == 1
    assert auroc([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0]) == 0
    assert auroc([0.5, 0.5], [1, 0]) == 0.5
    assert math.isclose(auroc([0.9, 0.4, 0.6, 0.1], [1, 1, 0, 0]), 0.75)
    assert auroc([0.3, 0.7], [1, 1]) is None  # one class only: undefined


def test_bad_input():
    with pytest.raises(ValueError, match="differ in length"):
        brier([0.1], [1, 0])
    with pytest.raises(ValueError, match="divide a 0-100 confidence by 100"):
        ece([72], [1])


def test_edge_cases_one_class_empty_and_extreme_confidences():
    # one class only: Brier and ECE are defined, AUROC is not
    assert math.isclose(brier([0.3, 0.7], [1, 1]), (0.49 + 0.09) / 2)
    assert math.isclose(ece([0.3, 0.7], [1, 1]), (0.7 + 0.3) / 2)  # bins 3 and 7, accuracy 1 in each
    assert auroc([0.3, 0.7], [0, 0]) is None
    # empty input
    assert brier([], []) is None and ece([], []) is None and auroc([], []) is None
    # confidences exactly 0 and 1: bin 0 and the top bin, never out of range
    assert brier([0.0, 1.0], [0, 1]) == 0 and brier([0.0, 1.0], [1, 0]) == 1
    assert ece([0.0, 1.0], [0, 1]) == 0 and ece([0.0, 1.0], [1, 0]) == 1
    assert auroc([0.0, 1.0], [0, 1]) == 1
    assert auroc([1.0, 1.0, 0.0], [1, 0, 0]) == 0.75  # the success ties one failure, beats the other


def test_ece_uses_ten_equal_width_bins():
    # 0.05 and 0.15 fall in different bins of width 0.1: each bin is perfectly calibrated on its own
    # only if bins are 0.1 wide; with one bin for both the error would be |0.1 - 0.5| = 0.4
    assert math.isclose(ece([0.05, 0.15], [0, 1]), (0.05 + 0.85) / 2)
    assert math.isclose(ece([0.05, 0.15], [0, 1], n_bins=1), abs(0.1 - 0.5))
    # a confidence on a bin edge (k / 100 with k a multiple of 10) lands in the bin it opens
    assert ece([0.7, 0.79], [1, 1]) == pytest.approx(1 - (0.7 + 0.79) / 2)


def test_mean_at_k_and_pass_at_k_by_hand():
    tasks = [[1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 0]]
    assert math.isclose(mean_at_k(tasks), (0.25 + 0 + 0.75) / 3)
    # pass@2: 1 - C(3,2)/C(4,2) = 0.5; no success: 0; three of four: every pair holds one, 1
    assert math.isclose(pass_at_k(tasks, k=2), (0.5 + 0 + 1) / 3)
    assert math.isclose(pass_at_k(tasks, k=1), mean_at_k(tasks))  # pass@1 is the mean success
    assert pass_at_k(tasks) == pass_at_k(tasks, k=4)  # k defaults to the samples per task
    assert math.isclose(pass_at_k([[1, 1, 0, 0, 0]], k=3), 1 - 1 / 10)  # 1 - C(3,3)/C(5,3)
    assert pass_at_k([[True, False]], k=2) == 1.0 and pass_at_k([[False] * 30], k=30) == 0.0
    # large n stays finite (the product form, not factorials)
    assert 0 < pass_at_k([[1] + [0] * 999], k=500) < 1


def test_k_sample_metrics_edge_cases():
    assert mean_at_k([]) is None and pass_at_k([]) is None and pass_at_k([[]]) is None
    with pytest.raises(ValueError, match="at least 3 samples per task"):
        pass_at_k([[1, 0], [1, 0, 1]], k=3)
    with pytest.raises(ValueError, match="k of at least 1"):
        pass_at_k([[1]], k=0)


def test_confidence_interval_over_seeds():
    ci = confidence_interval([0.2, 0.4, 0.6])
    # sd 0.2, t(2 df) = 4.303: half-width 4.303 * 0.2 / sqrt(3)
    assert ci["mean"] == pytest.approx(0.4) and ci["half_width"] == pytest.approx(4.303 * 0.2 / math.sqrt(3))
    assert (ci["min"], ci["max"], ci["n"]) == (0.2, 0.6, 3)
    one = confidence_interval([0.5, None])  # an undefined value (e.g. AUROC of one class) is dropped
    assert one == {"mean": 0.5, "half_width": None, "min": 0.5, "max": 0.5, "n": 1}
    assert confidence_interval([]) is None and confidence_interval([None]) is None
    assert confidence_interval([0.3, 0.3])["half_width"] == 0
    assert t_quantile_95(1) == 12.706 and t_quantile_95(35) == 2.042 and t_quantile_95(500) == 1.96


def test_mcnemar_against_hand_computed_values():
    # 5 tasks only a solved, none only b: under no difference that is 2 x (1/2)^5
    r = mcnemar([1] * 5 + [0] * 3 + [1] * 2, [0] * 5 + [0] * 3 + [1] * 2)
    assert r == {"tasks": 10, "a": 7, "b": 2, "a_only": 5, "b_only": 0, "p_value": 2 / 32}
    # 6 against 1: 2 x (C(7,0) + C(7,1)) / 2^7
    assert mcnemar([1] * 6 + [0], [0] * 6 + [1])["p_value"] == pytest.approx(2 * 8 / 128)
    assert mcnemar([1, 0, 1], [1, 0, 1])["p_value"] == 1.0  # no discordant task: no evidence
    assert mcnemar([1, 0], [0, 1])["p_value"] == 1.0
    assert mcnemar([], []) is None
    with pytest.raises(ValueError, match="differ in length"):
        mcnemar([1, 0], [1])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=60))
def test_mcnemar_properties(pairs):
    a, b = [x for x, _ in pairs], [y for _, y in pairs]
    r = mcnemar(a, b)
    assert 0 < r["p_value"] <= 1 and r["p_value"] == mcnemar(b, a)["p_value"]  # symmetric
    assert r["a"] - r["b"] == r["a_only"] - r["b_only"]
    # concordant tasks carry no evidence; one more task only a solves never raises p
    assert mcnemar(a + [True, False], b + [True, False])["p_value"] == r["p_value"]
    if r["a_only"] >= r["b_only"]:
        assert mcnemar(a + [True], b + [False])["p_value"] <= r["p_value"]
