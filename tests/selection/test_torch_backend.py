"""The torch path (here on CPU torch) agrees with the numpy path."""

from __future__ import annotations

import pytest
from selection_helpers import random_library

from deepens.selection import METHODS, METRICS, prepare_library, select_from_library

pytest.importorskip("torch")


@pytest.mark.parametrize("metric", METRICS)
def test_cpu_torch_matches_numpy(metric: str) -> None:
    predictions, labels, costs = random_library(16, 90, 6, seed=5)
    budgets = [1.5, 6.0, 25.0]
    with (
        prepare_library(predictions, labels, costs, pruning_fraction=0.5) as numpy_lib,
        prepare_library(
            predictions, labels, costs, pruning_fraction=0.5, device="cpu-torch"
        ) as torch_lib,
    ):
        for method in METHODS:
            expected = select_from_library(
                numpy_lib, budgets, method=method, metric=metric
            )
            found = select_from_library(
                torch_lib, budgets, method=method, metric=metric
            )
            for budget in budgets:
                ours, theirs = found.ensembles[budget], expected.ensembles[budget]
                assert ours.members == theirs.members, (method, budget)
                assert ours.cost == theirs.cost
                assert ours.validation_loss == pytest.approx(
                    theirs.validation_loss, abs=1e-6
                )
                assert ours.validation_error == theirs.validation_error
