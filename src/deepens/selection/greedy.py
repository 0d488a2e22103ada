"""Forward greedy ensemble selection with a fixed size (Caruana et al., 2004).

Starting from the empty ensemble, each step adds the model that minimises the
validation error of the averaged ensemble (Eq. G1):

    m* = argmin_m E(mean of P over a + [m], y)

until the ensemble has ``ensemble_size`` picks. Variants:

* without replacement (``"greedy"``): each model at most once;
* with replacement (``"greedy_replacement"``): models may repeat, and each
  model's combiner weight is its pick count over the number of picks;
* best point (``"greedy_best"``, with replacement): the prefix of the trajectory
  with the lowest error is returned instead of the last one (Caruana et al.'s
  rule against overfitting late picks). The shortest prefix within the metric's
  numerical resolution of the lowest error wins
  (:data:`~deepens.selection.metrics.RESOLUTION`).

With a budget, only candidates keeping the distinct members' summed cost within
it are considered, and the search stops early when none fits. Ties between
candidates go to the lowest input index.
"""

from __future__ import annotations

import math

import numpy as np

from deepens.selection._errors import invalid_setting
from deepens.selection._evaluator import CandidateEvaluator
from deepens.selection.ensemble import SelectedEnsemble
from deepens.selection.library import PreparedLibrary, check_budget_value


def greedy_trajectory(
    evaluator: CandidateEvaluator,
    costs: np.ndarray,
    ensemble_size: int,
    budget: float | None,
    replacement: bool,
) -> tuple[list[int], list[float], list[float]]:
    """Run forward greedy selection (Eq. G1) for up to ``ensemble_size`` picks.

    Parameters
    ----------
    evaluator
        Scores candidate ensembles with the metric ``E``.
    costs
        ``(K,)`` costs of the pruned models.
    ensemble_size
        Number of picks to make.
    budget
        Cost limit on the distinct members, or ``None`` for none.
    replacement
        Whether a model may be picked again (a repeat costs nothing more).

    Returns
    -------
    tuple[list[int], list[float], list[float]]
        Picked positions in pick order, the error after each pick and the
        summed distinct-member cost after each pick.
    """
    limit = math.inf if budget is None else budget
    counts = np.zeros(len(costs), dtype=np.int64)
    picks: list[int] = []
    errors_along: list[float] = []
    costs_along: list[float] = []
    ensemble_cost = 0.0

    while len(picks) < ensemble_size:
        added_cost = np.where(counts > 0, 0.0, costs)
        allowed = np.ones(len(costs), bool) if replacement else counts == 0
        candidates = np.flatnonzero(allowed & (ensemble_cost + added_cost <= limit))
        if candidates.size == 0:
            break

        # argmin takes the first minimum: the lowest index wins a tie.
        errors = evaluator.candidate_errors(counts, candidates)
        best = int(np.argmin(errors))
        position = int(candidates[best])

        picks.append(position)
        ensemble_cost += float(added_cost[position])
        counts[position] += 1
        errors_along.append(float(errors[best]))
        costs_along.append(ensemble_cost)

    return picks, errors_along, costs_along


def method_name(replacement: bool, best_point: bool) -> str:
    """The ``method`` label of a greedy variant."""
    if best_point:
        return "greedy_best"
    return "greedy_replacement" if replacement else "greedy"


def forward_greedy(
    library: PreparedLibrary,
    ensemble_size: int = 5,
    *,
    budget: float | None = None,
    replacement: bool = False,
    best_point: bool = False,
    metric: str = "cross_entropy",
) -> SelectedEnsemble:
    """Select an ensemble by forward greedy selection (Caruana et al., Eq. G1).

    Parameters
    ----------
    library
        The pruned library from :func:`~deepens.selection.prepare_library`.
    ensemble_size
        Number of picks; fewer when the budget or (without replacement) the
        library runs out first.
    budget
        Optional cost limit on the distinct members.
    replacement
        Allow repeated picks (weights become pick counts over picks).
    best_point
        Return the best prefix of the trajectory by ``metric`` instead of the
        last one.
    metric
        The error metric ``E`` (one of ``METRICS``).

    Returns
    -------
    SelectedEnsemble
        The ensemble; never empty, never over the budget.

    Raises
    ------
    BudgetError
        No pruned model fits ``budget``.
    """
    check_ensemble_size(ensemble_size)
    check_budget_value(budget)
    if budget is not None:
        library.check_budget(budget)
    evaluator = library.evaluator(metric)

    picks, errors_along, costs_along = greedy_trajectory(
        evaluator, library.costs, ensemble_size, budget, replacement
    )
    length = len(picks)
    if best_point:
        errors = np.asarray(errors_along)
        near_best = errors <= errors.min() + evaluator.resolution
        length = int(np.argmax(near_best)) + 1

    return library.build_ensemble(
        picks[:length],
        costs_along[length - 1],
        method=method_name(replacement, best_point),
        budget=budget,
    )


def check_ensemble_size(ensemble_size: int) -> None:
    """Raise unless ``ensemble_size`` is a positive integer."""
    is_integer = isinstance(ensemble_size, int) and not isinstance(ensemble_size, bool)
    if not (is_integer and ensemble_size >= 1):
        raise invalid_setting("ensemble_size", "a positive integer", ensemble_size)
