"""The best single model under a budget: the baseline every ensemble must beat.

Implements ``m* = argmin_{m : c[m] <= B} E(P[m], y)`` over the pruned library
(Eq. S1); the lowest input index wins a tie.
"""

from __future__ import annotations

import numpy as np

from deepens.selection.ensemble import SelectedEnsemble
from deepens.selection.library import PreparedLibrary, check_budget_value


def best_single(
    library: PreparedLibrary,
    budget: float | None = None,
    *,
    metric: str = "cross_entropy",
) -> SelectedEnsemble:
    """Select the single pruned model with the lowest error within the budget.

    Parameters
    ----------
    library
        The pruned library from :func:`~deepens.selection.prepare_library`.
    budget
        Cost limit, or ``None`` for none.
    metric
        The error metric ``E`` of Eq. S1 (one of ``METRICS``).

    Returns
    -------
    SelectedEnsemble
        A one-member ensemble with method ``"single"``.

    Raises
    ------
    BudgetError
        No pruned model fits ``budget``.
    """
    check_budget_value(budget)
    if budget is not None:
        library.check_budget(budget)
    evaluator = library.evaluator(metric)
    costs = library.costs
    within = np.ones(len(costs), bool) if budget is None else costs <= budget
    candidates = np.flatnonzero(within)

    empty = np.zeros(len(costs), dtype=np.int64)
    errors = evaluator.candidate_errors(empty, candidates)
    position = int(candidates[int(np.argmin(errors))])

    return library.build_ensemble(
        [position], float(costs[position]), method="single", budget=budget
    )
