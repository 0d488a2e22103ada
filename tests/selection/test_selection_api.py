"""select_ensembles: one call, several budgets, every method, and its errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from selection_helpers import binary_models, random_library, zero_labels

from deepens.errors import BudgetError
from deepens.selection import (
    METHODS,
    METRICS,
    SelectionError,
    prepare_library,
    select_ensembles,
    select_from_library,
    smobf,
)

GOOD_CHEAP = binary_models([[0.75, 0.75], [0.70, 0.70]])


def test_one_ensemble_per_budget_in_order_and_the_pareto_front() -> None:
    # From test_smobf: with W = (0.1,), budget 10 -> cheap (cost 1, E 0.356675)
    # and budget 100 -> good (cost 10, E 0.287682). Neither dominates.
    result = select_ensembles(
        GOOD_CHEAP,
        zero_labels(2),
        [10.0, 1.0],
        [100.0, 10.0],
        weights=(0.1,),
        pruning_fraction=1.0,
        model_names=["good", "cheap"],
    )
    assert list(result.ensembles) == [100.0, 10.0]
    assert result.ensembles[100.0].members == (0,)
    assert result.ensembles[10.0].members == (1,)
    assert [e.members for e in result.pareto] == [(1,), (0,)]
    assert result.pruned == (0, 1)
    assert len(result.candidates) == 2


def test_several_budgets_equal_one_budget_at_a_time_and_reuse_scores() -> None:
    predictions, labels, costs = random_library(30, 80, 5, seed=3)
    budgets = [2.0, 5.0, 12.0, 40.0]
    result = select_ensembles(predictions, labels, costs, budgets)
    with prepare_library(predictions, labels, costs) as library:
        for budget in budgets:
            assert smobf(library, budget) == result.ensembles[budget]
        counts = library.scoring_counts()
        # Later budgets share steps (the first step above all) with earlier ones.
        assert counts["computed"] < counts["requested"]
        # A new budget on the prepared library needs nothing else.
        again = select_from_library(library, [7.5])
        assert again.ensembles[7.5].cost <= 7.5


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("metric", METRICS)
def test_never_over_budget_never_empty(method: str, metric: str) -> None:
    predictions, labels, costs = random_library(20, 50, 4, seed=7)
    with prepare_library(predictions, labels, costs, pruning_fraction=0.5) as library:
        cheapest = float(library.costs.min())
        budgets = [cheapest, cheapest * 1.5, 3.0, 9.0, 50.0]
        result = select_from_library(
            library, budgets, method=method, metric=metric, ensemble_size=4
        )
    for budget, chosen in result.ensembles.items():
        assert 1 <= len(chosen.members)
        assert chosen.cost <= budget
        assert set(chosen.members) <= set(result.pruned)
        assert sum(chosen.weights) == pytest.approx(1.0)
        assert chosen.method == method
        assert chosen.budget == budget


def test_macro_f1_scores_a_class_missing_from_the_labels() -> None:
    # Three classes; labels hold only 0 and 1. Model 0 predicts class 2 once.
    # Model 0 arg-maxes 0, 1, 2, 1 against labels 0, 1, 0, 1:
    #   class 0: TP 1, predicted 1, actual 2 -> 2/3; class 1: 2*2/(2+2) = 1;
    #   class 2: TP 0, predicted 1, actual 0 -> 0. Error 1 - 5/9 = 4/9.
    # Model 1 arg-maxes 0, 1, 0, 0: class 0: 2*2/(3+2) = 4/5; class 1:
    #   2/(1+2) = 2/3; class 2: neither present nor predicted -> 1.
    #   Error 1 - (4/5 + 2/3 + 1) / 3 = 1 - 37/45 = 8/45 -> model 1 wins.
    labels = np.array([0, 1, 0, 1])
    model0 = np.array(
        [[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.1, 0.8, 0.1]]
    )
    model1 = np.array(
        [[0.5, 0.4, 0.1], [0.3, 0.6, 0.1], [0.5, 0.3, 0.2], [0.5, 0.4, 0.1]]
    )
    result = select_ensembles(
        [model0, model1],
        labels,
        [1, 1],
        [1.0],
        method="single",
        metric="macro_f1",
        pruning_fraction=1,
        num_classes=3,
    )
    assert result.ensembles[1.0].members == (1,)


def test_budget_below_every_model_raises_before_any_work() -> None:
    with pytest.raises(BudgetError, match=r"^budget 0.5 is below the cheapest model"):
        select_ensembles(
            GOOD_CHEAP, zero_labels(2), [10.0, 1.0], [5.0, 0.5], pruning_fraction=1
        )


def test_budget_error_mentions_cheaper_pruned_models() -> None:
    # Pruning keeps only good (cost 10); cheap (cost 1) was pruned.
    with pytest.raises(
        BudgetError,
        match=(
            r"budget 5 is below the cheapest model \(10, model #0\); raise the "
            r"budget to at least 10 \(cheaper models were pruned: model #1 costs 1; "
            r"raise pruning_fraction, now 0.2, to keep more models\)"
        ),
    ):
        select_ensembles(GOOD_CHEAP, zero_labels(2), [10.0, 1.0], [5.0])


@pytest.mark.parametrize(
    ("keywords", "message"),
    [
        (
            {"method": "random"},
            r"method must be one of 'smobf', 'greedy', .*'single'; received 'random'",
        ),
        (
            {"metric": "auc"},
            r"metric must be one of 'cross_entropy', 'error_rate', 'macro_f1'; "
            r"received 'auc'",
        ),
        (
            {"budgets": [1.0, 0.0]},
            r"budgets must be positive finite numbers; received 0.0",
        ),
        (
            {"budgets": [-2.0]},
            r"budgets must be positive finite numbers; received -2.0",
        ),
        (
            {"budgets": [math.inf]},
            r"budgets must be positive finite numbers; received inf",
        ),
        (
            {"budgets": []},
            r"budgets must be a non-empty sequence of budgets; received \[\]",
        ),
        (
            {"weights": (0.1, 1.5)},
            r"weights must be a non-empty sequence of trade-off weights in \[0, 1\]",
        ),
        ({"weights": ()}, r"weights must be a non-empty sequence"),
        ({"ensemble_size": 0}, r"ensemble_size must be a positive integer; received 0"),
        (
            {"pruning_fraction": -0.1},
            r"pruning_fraction must be a number in \(0, 1\]; received -0.1",
        ),
    ],
)
def test_invalid_settings(keywords: dict, message: str) -> None:
    arguments = {"budgets": [10.0], **keywords}
    budgets = arguments.pop("budgets")
    with pytest.raises(SelectionError, match=message) as caught:
        select_ensembles(GOOD_CHEAP, zero_labels(2), [10.0, 1.0], budgets, **arguments)
    assert isinstance(caught.value, ValueError)


def test_numpy_budgets_are_accepted_and_reported_plainly() -> None:
    result = select_ensembles(
        GOOD_CHEAP,
        zero_labels(2),
        np.array([10.0, 1.0]),
        np.array([10.0]),
        pruning_fraction=1,
    )
    assert list(result.ensembles) == [10.0]
    with pytest.raises(SelectionError, match=r"received 0.0$"):
        select_ensembles(GOOD_CHEAP, zero_labels(2), [10.0, 1.0], np.array([0.0]))


def test_results_serialise_to_json() -> None:
    result = select_ensembles(
        GOOD_CHEAP,
        zero_labels(2),
        [10.0, 1.0],
        [10.0],
        pruning_fraction=1,
        model_names=["good", "cheap"],
    )
    document = json.loads(json.dumps(result.to_dict()))
    chosen = document["ensembles"]["10.0"]
    assert chosen["members"] == [0]
    assert chosen["member_names"] == ["good"]
    assert chosen["method"] == "smobf"
    assert chosen["trade_off"] == 0.01
    assert set(chosen) == {
        "members",
        "member_names",
        "weights",
        "cost",
        "validation_loss",
        "validation_error",
        "method",
        "budget",
        "trade_off",
    }
