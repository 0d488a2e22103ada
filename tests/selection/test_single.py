"""Best single model under a budget (Eq. S1), by hand.

good: t = 0.75, E = 0.287682, cost 10; cheap: t = 0.7, E = 0.356675, cost 1.
"""

from __future__ import annotations

import pytest
from selection_helpers import binary_models, zero_labels

from deepens.errors import BudgetError
from deepens.selection import best_single, prepare_library

MODELS = binary_models([[0.75, 0.75], [0.70, 0.70]])


def test_best_single_within_the_budget() -> None:
    with prepare_library(
        MODELS, zero_labels(2), [10.0, 1.0], pruning_fraction=1
    ) as lib:
        assert best_single(lib, 5.0).members == (1,)
        assert best_single(lib, 10.0).members == (0,)
        unlimited = best_single(lib)
    assert unlimited.members == (0,)
    assert unlimited.method == "single"
    assert unlimited.budget is None
    assert unlimited.weights == (1.0,)


def test_ties_go_to_the_lowest_index() -> None:
    twins = binary_models([[0.8, 0.6], [0.8, 0.6], [0.8, 0.6]])
    with prepare_library(twins, zero_labels(2), [1, 1, 1], pruning_fraction=1) as lib:
        assert best_single(lib, 1.0).members == (0,)


def test_budget_below_every_model() -> None:
    with prepare_library(
        MODELS, zero_labels(2), [10.0, 1.0], pruning_fraction=1
    ) as lib:
        with pytest.raises(BudgetError, match=r"cheapest model \(1, model #1\)"):
            best_single(lib, 0.25)
