"""Metrics (Eqs. M1-M3) checked against hand arithmetic and scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import f1_score

from deepens.selection import PROBABILITY_FLOOR, SelectionError
from deepens.selection.metrics import (
    LOG_TERM_SCALE,
    cross_entropy,
    cross_entropy_from_sums,
    error_rate,
    evaluate,
    macro_f1_error,
)


def test_cross_entropy_by_hand() -> None:
    # True-class probabilities 0.5 and 0.25: (ln 2 + ln 4) / 2 = 1.5 ln 2.
    probabilities = np.array([[0.5, 0.5], [0.75, 0.25]])
    assert cross_entropy(probabilities, [0, 1]) == pytest.approx(1.5 * math.log(2))


def test_cross_entropy_clips_at_the_floor() -> None:
    # A true-class probability of 0 costs -ln(1e-7) = 16.118, not infinity.
    probabilities = np.array([[1.0, 0.0]], dtype=np.float16)
    assert cross_entropy(probabilities, [1]) == pytest.approx(-math.log(1e-7))
    assert PROBABILITY_FLOOR == 1e-7


def test_cross_entropy_from_fixed_point_sums() -> None:
    # Two picks summing to s = (1.0, 0.5) on two samples: the average is
    # (0.5, 0.25), so E = 1.5 ln 2 = ln 2 - (ln 1 + ln 0.5) / 2.
    sums = np.rint(np.log([1.0, 0.5]) * LOG_TERM_SCALE).sum()
    assert cross_entropy_from_sums(sums, 2, 2) == pytest.approx(1.5 * math.log(2))


def test_error_rate_ties_go_to_the_lowest_class() -> None:
    # Row 0 ties classes 0 and 1 -> class 0 (right); row 1 predicts 2 (wrong).
    probabilities = np.array([[0.4, 0.4, 0.2], [0.1, 0.2, 0.7]])
    assert error_rate(probabilities, [0, 1]) == 0.5


def test_macro_f1_counts_a_class_missing_from_the_labels() -> None:
    # Labels 0,0,1,1 over 3 classes; predictions 0,1,1,2.
    # class 0: TP 1, predicted 1, actual 2 -> F1 = 2/(1+2) = 2/3
    # class 1: TP 1, predicted 2, actual 2 -> F1 = 2/4 = 1/2
    # class 2: TP 0, predicted 1, actual 0 -> F1 = 0 (predicting it costs)
    # macro F1 = (2/3 + 1/2 + 0) / 3 = 7/18, error 11/18.
    labels = np.array([0, 0, 1, 1])
    probabilities = np.eye(3)[[0, 1, 1, 2]]
    assert macro_f1_error(probabilities, labels, 3) == pytest.approx(11 / 18)
    reference = f1_score(labels, [0, 1, 1, 2], labels=[0, 1, 2], average="macro")
    assert macro_f1_error(probabilities, labels, 3) == pytest.approx(1 - reference)


def test_macro_f1_of_a_perfect_classifier_is_zero_with_a_missing_class() -> None:
    # Class 2 is neither present nor predicted: 0/0 counts as F1 = 1.
    labels = np.array([0, 1, 1])
    probabilities = np.eye(3)[labels]
    assert macro_f1_error(probabilities, labels, 3) == 0.0
    reference = f1_score(
        labels, labels, labels=[0, 1, 2], average="macro", zero_division=1
    )
    assert reference == 1.0


def test_evaluate_dispatches_and_rejects_unknown_metrics() -> None:
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8]])
    assert evaluate("error_rate", probabilities, [0, 0]) == 0.5
    with pytest.raises(SelectionError, match=r"metric must be one of .*'macro_f1'"):
        evaluate("accuracy", probabilities, [0, 0])
