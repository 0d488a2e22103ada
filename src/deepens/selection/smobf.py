"""SMOBF: scalarised multi-objective forward greedy selection under a budget.

For each trade-off weight ``w`` in ``W``, a forward greedy search grows an
ensemble ``a`` from empty by the model that minimises the paper's Equation 2:

    score(a') = (1 - w) * E(mean of P over a', y) + w * C(a') / B + penalty(a')

where ``C(a')`` is the summed cost, ``B`` the budget, ``E`` the validation error
metric and ``penalty(a')`` is 0 when ``C(a') <= B`` and infinite otherwise. The
empty ensemble scores ``+inf``; the search stops when no candidate fits the
budget or the best candidate does not score lower than the current ensemble.
"Lower" means lower by more than the metric's numerical resolution
(:data:`~deepens.selection.metrics.RESOLUTION`: ``1e-6`` for cross-entropy,
whose float32 logs make mathematically equal scores, such as adding a duplicate
of a member, differ by rounding; 0 for the count-based metrics). Of the
ensembles found (one per ``w``), the one with the lowest validation
cross-entropy wins.

Ties are broken deterministically: among candidates with equal scores the model
with the lowest input index is picked; among weights with equal cross-entropy
the earlier weight in ``W`` wins.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np

from deepens.selection._errors import invalid_setting
from deepens.selection._evaluator import CandidateEvaluator
from deepens.selection.ensemble import SelectedEnsemble
from deepens.selection.library import PreparedLibrary, check_budget_value

DEFAULT_TRADE_OFFS: tuple[float, ...] = (0.1, 0.01, 0.001)
"""The trade-off weights ``W`` of the product spec."""


def smobf_scores(
    errors: np.ndarray,
    ensemble_costs: np.ndarray,
    budget: float,
    trade_off: float,
) -> np.ndarray:
    """The SMOBF score of candidate ensembles (the paper's Equation 2).

    Parameters
    ----------
    errors
        Validation error ``E`` of each candidate ensemble.
    ensemble_costs
        Summed cost ``C(a')`` of each candidate ensemble.
    budget
        The budget ``B``.
    trade_off
        The weight ``w``.

    Returns
    -------
    numpy.ndarray
        ``(1 - w) E + w C / B``, or ``+inf`` where ``C > B`` (the penalty).
    """
    scores = (1.0 - trade_off) * errors + trade_off * ensemble_costs / budget
    return np.where(ensemble_costs <= budget, scores, np.inf)


def smobf_trajectory(
    evaluator: CandidateEvaluator,
    costs: np.ndarray,
    budget: float,
    trade_off: float,
) -> tuple[list[int], float]:
    """Grow one ensemble by Equation 2 for one weight ``w`` (SMOBF step 2).

    Parameters
    ----------
    evaluator
        Scores candidate ensembles with the metric ``E``.
    costs
        ``(K,)`` costs of the pruned models.
    budget
        The budget ``B``.
    trade_off
        The weight ``w``.

    Returns
    -------
    tuple[list[int], float]
        The picked model positions in pick order (empty when nothing fits) and
        their summed cost, accumulated in pick order exactly as compared with
        the budget.
    """
    counts = np.zeros(len(costs), dtype=np.int64)
    picks: list[int] = []
    ensemble_cost = 0.0
    current_score = math.inf

    while True:
        # Over-budget candidates score +inf (the penalty), so only the others
        # are worth scoring; the ascending order makes argmin pick the lowest
        # index on ties.
        candidates = np.flatnonzero((counts == 0) & (ensemble_cost + costs <= budget))
        if candidates.size == 0:
            break
        errors = evaluator.candidate_errors(counts, candidates)
        scores = smobf_scores(
            errors, ensemble_cost + costs[candidates], budget, trade_off
        )

        best = int(np.argmin(scores))
        if not scores[best] < current_score - evaluator.resolution:
            break

        position = int(candidates[best])
        picks.append(position)
        counts[position] = 1
        ensemble_cost += float(costs[position])
        current_score = float(scores[best])

    return picks, ensemble_cost


def check_trade_offs(trade_offs: Sequence[float]) -> tuple[float, ...]:
    """Raise unless ``trade_offs`` is a non-empty sequence of numbers in [0, 1]."""
    values = tuple(trade_offs)
    valid = bool(values) and all(
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and 0 <= value <= 1
        for value in values
    )
    if not valid:
        raise invalid_setting(
            "weights", "a non-empty sequence of trade-off weights in [0, 1]", trade_offs
        )
    return tuple(float(value) for value in values)


def smobf_ensembles(
    library: PreparedLibrary,
    budget: float,
    *,
    trade_offs: Sequence[float] = DEFAULT_TRADE_OFFS,
    metric: str = "cross_entropy",
) -> list[SelectedEnsemble]:
    """The ensemble SMOBF finds for each weight ``w`` (Equation 2), in order.

    Parameters
    ----------
    library
        The pruned library (SMOBF step 1 done by
        :func:`~deepens.selection.library.prepare_library`).
    budget
        The budget ``B``; at least the cheapest pruned model's cost.
    trade_offs
        The weights ``W``.
    metric
        The error metric ``E``.

    Returns
    -------
    list[SelectedEnsemble]
        One ensemble per weight, never empty, never over the budget.

    Raises
    ------
    BudgetError
        No pruned model fits ``budget``.
    """
    weights = check_trade_offs(trade_offs)
    check_budget_value(budget)
    library.check_budget(budget)
    evaluator = library.evaluator(metric)
    ensembles = []
    for trade_off in weights:
        picks, cost = smobf_trajectory(evaluator, library.costs, budget, trade_off)
        ensembles.append(
            library.build_ensemble(
                picks, cost, method="smobf", budget=budget, trade_off=trade_off
            )
        )
    return ensembles


def smobf(
    library: PreparedLibrary,
    budget: float,
    *,
    trade_offs: Sequence[float] = DEFAULT_TRADE_OFFS,
    metric: str = "cross_entropy",
) -> SelectedEnsemble:
    """Select the SMOBF ensemble for one budget (Equation 2, steps 2 and 3).

    Runs :func:`smobf_trajectory` for every weight ``w`` and returns the
    resulting ensemble with the lowest validation cross-entropy (Eq. M1); the
    earlier weight wins a tie.

    Parameters
    ----------
    library
        The pruned library from :func:`~deepens.selection.prepare_library`.
    budget
        The budget ``B`` (same unit as the costs).
    trade_offs
        The trade-off weights ``W``.
    metric
        The error metric ``E`` of Equation 2 (one of ``METRICS``).

    Returns
    -------
    SelectedEnsemble
        The chosen ensemble; its ``trade_off`` is the winning ``w``.

    Raises
    ------
    BudgetError
        No pruned model fits ``budget``.
    """
    ensembles = smobf_ensembles(library, budget, trade_offs=trade_offs, metric=metric)
    return min(ensembles, key=lambda ensemble: ensemble.validation_loss)
