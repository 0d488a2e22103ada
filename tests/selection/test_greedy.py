"""Forward greedy baselines (Caruana et al. 2004, Eq. G1) worked out by hand.

Models predict ``[t, 1 - t]`` with all labels 0, so ``E = -mean(ln t)``.
Trio, costs 1 each:
  A: t = (0.9, 0.5), E = 0.399254     B: t = (0.5, 0.9), E = 0.399254
  C: t = (0.6, 0.6), E = 0.510826
Pairs: A+B t = (0.7, 0.7) E = 0.356675; A+C t = (0.75, 0.55) E = 0.442760.
Triples: A+B+C t = (2/3, 2/3) E = 0.405465;
         A+B+A t = (2.3/3, 1.9/3) E = (0.265703 + 0.456758) / 2 = 0.361231.
"""

from __future__ import annotations

import math

import pytest
from selection_helpers import binary_models, zero_labels

from deepens.errors import BudgetError
from deepens.selection import forward_greedy, prepare_library
from deepens.selection.library import PreparedLibrary

TRIO = binary_models([[0.9, 0.5], [0.5, 0.9], [0.6, 0.6]])


def trio(costs: tuple[float, ...] = (1.0, 1.0, 1.0)) -> PreparedLibrary:
    return prepare_library(TRIO, zero_labels(2), costs, pruning_fraction=1)


def test_without_replacement_fills_the_size_even_when_it_hurts() -> None:
    # Step 1: A and B tie (0.399254): lowest index, A. Step 2: A+B (0.356675)
    # beats A+C (0.442760). Step 3: only C is left: A+B+C, E = 0.405465.
    with trio() as library:
        two = forward_greedy(library, 2)
        three = forward_greedy(library, 3)
    assert two.members == (0, 1)
    assert two.method == "greedy"
    assert three.members == (0, 1, 2)
    assert three.validation_loss == pytest.approx(-math.log(2 / 3), abs=1e-6)


def test_without_replacement_stops_when_the_library_runs_out() -> None:
    with trio() as library:
        assert forward_greedy(library, 10).members == (0, 1, 2)


def test_with_replacement_counts_become_weights() -> None:
    # Step 3 with replacement: A+B+A = A+B+B = 0.361231 < A+B+C = 0.405465;
    # the A/B tie goes to the lower index, A. Weights: A 2/3, B 1/3.
    with trio() as library:
        chosen = forward_greedy(library, 3, replacement=True)
    assert chosen.members == (0, 1, 0)
    assert chosen.method == "greedy_replacement"
    assert chosen.weights == pytest.approx((1 / 3, 1 / 3, 1 / 3))
    assert chosen.model_weights() == pytest.approx({0: 2 / 3, 1: 1 / 3})
    assert chosen.distinct_members == (0, 1)
    assert chosen.validation_loss == pytest.approx(0.361231, abs=1e-6)
    # A repeated model runs once, so its cost counts once: 1 + 1.
    assert chosen.cost == 2.0


def test_a_repeat_is_picked_when_it_is_best_and_costs_nothing_more() -> None:
    # Good: t = 0.9; bad: t = 0.3. Good+good keeps E = 0.105361; good+bad has
    # t = 0.6, E = 0.510826. So good is picked twice, at the cost of one.
    models = binary_models([[0.9], [0.3]])
    with prepare_library(models, zero_labels(1), [2.0, 1.0], pruning_fraction=1) as lib:
        chosen = forward_greedy(lib, 2, replacement=True)
    assert chosen.members == (0, 0)
    assert chosen.model_weights() == {0: 1.0}
    assert chosen.cost == 2.0


def test_best_point_returns_the_best_prefix() -> None:
    # Trajectory with replacement: A (0.399254), A+B (0.356675),
    # A+B+A (0.361231): the best point is after two picks.
    with trio() as library:
        chosen = forward_greedy(library, 3, replacement=True, best_point=True)
    assert chosen.members == (0, 1)
    assert chosen.method == "greedy_best"


def test_budget_restricts_candidates_and_stops_early_when_nothing_fits() -> None:
    # Costs A 1, B 1, C 1 and budget 2: after A and B nothing new fits.
    with trio() as library:
        assert forward_greedy(library, 3, budget=2.0).members == (0, 1)
        # With replacement, repeats are free: A, B, then A again.
        repeated = forward_greedy(library, 3, budget=2.0, replacement=True)
    assert repeated.members == (0, 1, 0)
    assert repeated.cost == 2.0


def test_budget_changes_the_second_pick() -> None:
    # B costs 5, C costs 1, budget 3: after A, only C fits (A+C, 0.442760).
    with trio((1.0, 5.0, 1.0)) as library:
        chosen = forward_greedy(library, 2, budget=3.0)
    assert chosen.members == (0, 2)
    assert chosen.cost == 2.0


def test_budget_below_every_model() -> None:
    with trio() as library, pytest.raises(BudgetError, match="budget 0.5 is below"):
        forward_greedy(library, 2, budget=0.5)
