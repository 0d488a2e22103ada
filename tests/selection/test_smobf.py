"""SMOBF (the paper's Equation 2) against answers worked out by hand.

Notation: models predict ``[t, 1 - t]`` with every label 0 (see
``binary_models``), so ``E = -mean(ln t)`` and an ensemble's ``t`` is the mean
of its members'. Scores are ``(1 - w) E + w C / B``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from selection_helpers import binary_models, random_library, zero_labels

from deepens.errors import BudgetError
from deepens.selection import prepare_library, smobf, smobf_ensembles
from deepens.selection.metrics import cross_entropy
from deepens.selection.smobf import smobf_scores

# Model "good": t = 0.75, E = -ln 0.75 = 0.287682, cost 10.
# Model "cheap": t = 0.70, E = -ln 0.70 = 0.356675, cost 1.
GOOD_CHEAP = binary_models([[0.75, 0.75], [0.70, 0.70]])
GOOD_CHEAP_COSTS = [10.0, 1.0]
NAMES = ["good", "cheap"]


def good_cheap_library():  # type: ignore[no-untyped-def]
    return prepare_library(
        GOOD_CHEAP,
        zero_labels(2),
        GOOD_CHEAP_COSTS,
        pruning_fraction=1.0,
        model_names=NAMES,
    )


def test_score_is_equation_2_with_an_infinite_penalty_over_budget() -> None:
    # (1 - 0.1) * 0.5 + 0.1 * 4 / 8 = 0.45 + 0.05 = 0.5; cost 9 > 8 -> inf.
    scores = smobf_scores(np.array([0.5, 0.5]), np.array([4.0, 9.0]), 8.0, 0.1)
    assert scores[0] == pytest.approx(0.5)
    assert scores[1] == math.inf


def test_cost_penalty_picks_the_cheaper_slightly_worse_model_at_a_small_budget() -> (
    None
):
    # w = 0.1, B = 10:
    #   good:  0.9 * 0.287682 + 0.1 * 10 / 10 = 0.258914 + 0.1   = 0.358914
    #   cheap: 0.9 * 0.356675 + 0.1 *  1 / 10 = 0.321007 + 0.01  = 0.331007 <- best
    # then good + cheap costs 11 > 10: nothing fits, stop.
    with good_cheap_library() as library:
        chosen = smobf(library, 10.0, trade_offs=(0.1,))
    assert chosen.members == (1,)
    assert chosen.member_names == ("cheap",)
    assert chosen.cost == 1.0
    assert chosen.validation_loss == pytest.approx(-math.log(0.7), abs=1e-6)


def test_a_larger_budget_shrinks_the_cost_term_and_picks_the_better_model() -> None:
    # w = 0.1, B = 100:
    #   good:  0.258914 + 0.1 * 10 / 100 = 0.268914 <- best
    #   cheap: 0.321007 + 0.1 *  1 / 100 = 0.322007
    # then good + cheap: t = 0.725, E = 0.321584,
    #   score 0.9 * 0.321584 + 0.1 * 11 / 100 = 0.300425 >= 0.268914: stop.
    with good_cheap_library() as library:
        chosen = smobf(library, 100.0, trade_offs=(0.1,))
    assert chosen.members == (0,)
    assert chosen.cost == 10.0


def test_the_weight_with_the_lowest_cross_entropy_wins() -> None:
    # B = 10. w = 0.1 picks cheap (above). w = 0.01:
    #   good:  0.99 * 0.287682 + 0.01 * 10 / 10 = 0.294805 <- best
    #   cheap: 0.99 * 0.356675 + 0.01 *  1 / 10 = 0.354108
    # Cross-entropies: cheap 0.356675 > good 0.287682, so good (w = 0.01) wins.
    with good_cheap_library() as library:
        per_weight = smobf_ensembles(library, 10.0, trade_offs=(0.1, 0.01))
        chosen = smobf(library, 10.0, trade_offs=(0.1, 0.01))
    assert [ensemble.members for ensemble in per_weight] == [(1,), (0,)]
    assert [ensemble.trade_off for ensemble in per_weight] == [0.1, 0.01]
    assert chosen.members == (0,)
    assert chosen.trade_off == 0.01
    assert chosen.method == "smobf"
    assert chosen.budget == 10.0


# Three models on two samples, costs 1, budget 10, w = 0.1:
#   A: t = (0.9, 0.5), E = (0.105361 + 0.693147) / 2 = 0.399254
#   B: t = (0.5, 0.9), E = 0.399254 (a tie with A)
#   C: t = (0.6, 0.6), E = 0.510826
TRIO = binary_models([[0.9, 0.5], [0.5, 0.9], [0.6, 0.6]])


def test_growth_tie_break_and_stop_rule() -> None:
    # Step 1: A and B tie at 0.9 * 0.399254 + 0.1 * 1/10 = 0.369328; C scores
    #   0.469743. The tie goes to the lower index: A.
    # Step 2: A+B: t = (0.7, 0.7), E = 0.356675, score 0.321007 + 0.02 = 0.341007
    #   (< 0.369328, take it); A+C: t = (0.75, 0.55), E = 0.442760, worse.
    # Step 3: A+B+C: t = (2/3, 2/3), E = 0.405465, score 0.364919 + 0.03
    #   = 0.394919, not lower than 0.341007: stop with {A, B}.
    with prepare_library(TRIO, zero_labels(2), [1, 1, 1], pruning_fraction=1) as lib:
        chosen = smobf(lib, 10.0, trade_offs=(0.1,))
    assert chosen.members == (0, 1)
    assert chosen.weights == (0.5, 0.5)
    assert chosen.cost == 2.0
    assert chosen.validation_loss == pytest.approx(-math.log(0.7), abs=1e-6)


def test_stop_when_the_best_score_only_equals_the_current_one() -> None:
    # Two identical free models: adding the second leaves E and C unchanged, so
    # its score equals the current one, which is not lower: stop at one member,
    # the lower index.
    twins = binary_models([[0.8, 0.6], [0.8, 0.6]])
    with prepare_library(twins, zero_labels(2), [0, 0], pruning_fraction=1) as lib:
        chosen = smobf(lib, 1.0)
    assert chosen.members == (0,)


def test_a_library_of_one_model() -> None:
    single = binary_models([[0.9, 0.8]])
    with prepare_library(single, zero_labels(2), [3.0]) as library:
        assert smobf(library, 3.0).members == (0,)
        assert smobf(library, 300.0).members == (0,)


def test_budget_below_every_model_names_the_cheapest() -> None:
    with (
        good_cheap_library() as library,
        pytest.raises(
            BudgetError,
            match=(
                r"^budget 0.5 is below the cheapest model \(1, model 'cheap'\); "
                r"raise the budget to at least 1$"
            ),
        ),
    ):
        smobf(library, 0.5)


def test_error_rate_as_the_metric_changes_the_pick() -> None:
    # Four samples. A: t = (0.99, 0.99, 0.99, 0.4): CE 0.236610, error 1/4.
    # B: t = 0.55 everywhere: CE 0.597837, error 0. Costs 1, B = 10, w = 0.1.
    # Error rate: A 0.9 * 0.25 + 0.01 = 0.235; B 0 + 0.01 = 0.01 -> B; then
    #   A+B (t = 0.77, 0.77, 0.77, 0.475) errs once: 0.225 + 0.02, stop: {B}.
    # Cross-entropy: A 0.222949 < B 0.548053 -> A; A+B has CE 0.382134,
    #   score 0.343920 + 0.02 = 0.363920, stop: {A}.
    models = binary_models([[0.99, 0.99, 0.99, 0.4], [0.55] * 4])
    with prepare_library(models, zero_labels(4), [1, 1], pruning_fraction=1) as lib:
        by_error = smobf(lib, 10.0, trade_offs=(0.1,), metric="error_rate")
        by_loss = smobf(lib, 10.0, trade_offs=(0.1,))
    assert by_error.members == (1,)
    assert by_error.validation_error == 0.0
    assert by_loss.members == (0,)
    assert by_loss.validation_error == 0.25


def naive_smobf(
    predictions: list[np.ndarray],
    labels: np.ndarray,
    costs: np.ndarray,
    budget: float,
    trade_off: float,
) -> list[int]:
    """Equation 2 straight from the spec, on full averaged matrices."""
    members: list[int] = []
    current = math.inf
    while True:
        best, best_score = -1, math.inf
        for model in range(len(predictions)):
            cost = costs[[*members, model]].sum()
            if model in members or cost > budget:
                continue
            average = np.mean([predictions[m] for m in [*members, model]], axis=0)
            loss = cross_entropy(average, labels)
            score = (1 - trade_off) * loss + trade_off * cost / budget
            if score < best_score:
                best, best_score = model, score
        if best < 0 or not best_score < current:
            return members
        members.append(best)
        current = best_score


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_a_naive_implementation_on_random_libraries(seed: int) -> None:
    predictions, labels, costs = random_library(8, 60, 4, seed, dtype=np.float64)
    with prepare_library(predictions, labels, costs, pruning_fraction=1) as library:
        for budget in (2.0, 8.0, 30.0):
            for trade_off in (0.1, 0.01):
                chosen = smobf(library, budget, trade_offs=(trade_off,))
                expected = naive_smobf(predictions, labels, costs, budget, trade_off)
                assert list(chosen.members) == expected
