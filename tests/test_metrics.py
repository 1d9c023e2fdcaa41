import math

import pytest

from foresight_lite.metrics import auroc, brier, ece


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
