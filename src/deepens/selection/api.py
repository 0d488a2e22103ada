"""One call from cached predictions to the ensemble for each budget."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from deepens.selection._errors import invalid_setting, one_of
from deepens.selection.ensemble import SelectedEnsemble, SelectionResult
from deepens.selection.greedy import check_ensemble_size, forward_greedy
from deepens.selection.library import (
    PreparedLibrary,
    is_valid_budget,
    prepare_library,
)
from deepens.selection.metrics import METRICS
from deepens.selection.pareto import pareto_front
from deepens.selection.single import best_single
from deepens.selection.smobf import (
    DEFAULT_TRADE_OFFS,
    check_trade_offs,
    smobf_ensembles,
)

METHODS: tuple[str, ...] = (
    "smobf",
    "greedy",
    "greedy_replacement",
    "greedy_best",
    "single",
)
"""Selection methods: SMOBF (Equation 2) and the baselines.

``"greedy"`` is forward greedy without replacement, ``"greedy_replacement"``
with replacement, ``"greedy_best"`` with replacement returning the best point of
the trajectory (all Eq. G1, ``ensemble_size`` picks, within the budget), and
``"single"`` the best single model within the budget (Eq. S1).
"""


def select_ensembles(
    validation_probabilities: Sequence[npt.ArrayLike],
    validation_labels: npt.ArrayLike,
    costs: Sequence[float] | np.ndarray,
    budgets: Sequence[float],
    *,
    method: str = "smobf",
    weights: Sequence[float] = DEFAULT_TRADE_OFFS,
    pruning_fraction: float = 0.2,
    metric: str = "cross_entropy",
    ensemble_size: int = 5,
    model_names: Sequence[str] | None = None,
    model_losses: Sequence[float] | None = None,
    num_classes: int | None = None,
    device: str = "cpu",
    shards: int = 1,
) -> SelectionResult:
    """Select the most accurate ensemble for each inference budget.

    Validates and prunes the library once (SMOBF step 1, see
    :func:`~deepens.selection.prepare_library`), then runs ``method`` for every
    budget: SMOBF minimises the paper's Equation 2 for each trade-off weight and
    keeps the lowest validation cross-entropy; the baselines are forward greedy
    selection (Eq. G1) and the best single model (Eq. S1).

    Parameters
    ----------
    validation_probabilities
        ``M`` arrays ``(N, C)`` of validation class probabilities (float16/32/64,
        possibly ``np.memmap``), one per library model.
    validation_labels
        ``(N,)`` integer labels.
    costs
        ``(M,)`` inference cost per model (seconds).
    budgets
        Positive budgets, same unit as ``costs``.
    method
        One of :data:`METHODS`.
    weights
        SMOBF trade-off weights ``W`` (the ``w`` of Equation 2).
    pruning_fraction
        ``X``: keep the best ``max(1, ceil(X * M))`` models by validation loss.
    metric
        Error metric ``E``: ``"cross_entropy"``, ``"error_rate"`` or
        ``"macro_f1"`` (1 - macro F1, for unbalanced data).
    ensemble_size
        Number of picks for the greedy baselines.
    model_names
        Names for warnings, errors and :attr:`SelectedEnsemble.member_names`.
    model_losses
        Precomputed validation cross-entropies, so pruning reads no predictions.
    num_classes
        Full class list size; classes missing from the labels still count.
    device
        ``"cpu"`` (numpy), ``"cpu-torch"``, ``"cuda"`` or ``"cuda:<index>"``.
    shards
        Split the samples over this many Ray workers (``> 1``); the result is
        identical to a single-process run.

    Returns
    -------
    SelectionResult
        ``ensembles`` (one per budget, in order), ``pareto`` (non-dominated
        ensembles among all found), ``pruned`` (indices kept), ``candidates``
        and ``dropped``.

    Raises
    ------
    BudgetError
        A budget is below every pruned model's cost (the message names the
        cheapest).
    LibraryError
        Predictions of the wrong shape or not probabilities (names the model).
    SelectionError
        An invalid setting (names the parameter, allowed and received values).
    """
    # Settings first, so a typo fails before any prediction is read.
    check_settings(method, weights, metric, ensemble_size, budgets)
    library = prepare_library(
        validation_probabilities,
        validation_labels,
        costs,
        pruning_fraction=pruning_fraction,
        model_names=model_names,
        model_losses=model_losses,
        num_classes=num_classes,
        device=device,
        shards=shards,
    )
    with library:
        return select_from_library(
            library,
            budgets,
            method=method,
            weights=weights,
            metric=metric,
            ensemble_size=ensemble_size,
        )


def select_from_library(
    library: PreparedLibrary,
    budgets: Sequence[float],
    *,
    method: str = "smobf",
    weights: Sequence[float] = DEFAULT_TRADE_OFFS,
    metric: str = "cross_entropy",
    ensemble_size: int = 5,
) -> SelectionResult:
    """Answer budgets on an already prepared library (no validation, no pruning).

    Parameters are as in :func:`select_ensembles`. Scores computed for earlier
    budgets on the same library are reused.

    Returns
    -------
    SelectionResult
        As :func:`select_ensembles`.
    """
    check_settings(method, weights, metric, ensemble_size, budgets)
    # Fail before any work when some budget cannot be met.
    library.check_budget(min(budgets))

    chosen: dict[float, SelectedEnsemble] = {}
    found: list[SelectedEnsemble] = []
    for budget in budgets:
        options = _ensembles_for(
            library, float(budget), method, weights, metric, ensemble_size
        )
        chosen[float(budget)] = min(options, key=lambda option: option.validation_loss)
        found.extend(options)

    return SelectionResult(
        ensembles=chosen,
        pareto=pareto_front(found),
        pruned=library.model_indices,
        candidates=found,
        dropped=library.dropped,
    )


def _ensembles_for(
    library: PreparedLibrary,
    budget: float,
    method: str,
    weights: Sequence[float],
    metric: str,
    ensemble_size: int,
) -> list[SelectedEnsemble]:
    """The ensembles ``method`` finds for one budget (SMOBF: one per weight)."""
    if method == "smobf":
        return smobf_ensembles(library, budget, trade_offs=weights, metric=metric)
    if method == "single":
        return [best_single(library, budget, metric=metric)]
    return [
        forward_greedy(
            library,
            ensemble_size,
            budget=budget,
            replacement=method != "greedy",
            best_point=method == "greedy_best",
            metric=metric,
        )
    ]


def check_settings(
    method: str,
    weights: Sequence[float],
    metric: str,
    ensemble_size: int,
    budgets: Sequence[float],
) -> None:
    """Raise :class:`SelectionError` for the first invalid selection setting."""
    if method not in METHODS:
        raise invalid_setting("method", one_of(METHODS), method)
    if metric not in METRICS:
        raise invalid_setting("metric", one_of(METRICS), metric)
    check_trade_offs(weights)
    check_ensemble_size(ensemble_size)
    budget_list = list(budgets)
    if not budget_list:
        raise invalid_setting("budgets", "a non-empty sequence of budgets", budgets)
    invalid = [budget for budget in budget_list if not is_valid_budget(budget)]
    if invalid:
        raise invalid_setting("budgets", "positive finite numbers", invalid[0])
