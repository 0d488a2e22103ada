"""Selection around the algorithms: from a library and budgets to ensembles.

This module gathers the library's cached predictions and costs, calls the
selection algorithms of :mod:`deepens.selection` for every budget, scores the
chosen ensembles on the test split and saves them. It never trains or runs a
network except to save ensembles, so a new budget is answered in seconds.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deepens.combiners import MAX_GRID_MEMBERS, best_grid_weights, combine
from deepens.errors import BudgetError, LibraryError
from deepens.library import (
    COST_UNITS,
    AdHocGroup,
    Library,
    LibraryEntry,
    loss_and_error,
)
from deepens.selection import (
    METHODS,
    SelectedEnsemble,
    SelectionError,
    prepare_library,
    select_from_library,
)
from deepens.selection.api import check_settings

_logger = logging.getLogger(__name__)

DEFAULT_METHODS = ("smobf", "greedy")
ADHOC = "adhoc"
"""The method that answers a budget with the best ad-hoc ensemble searched."""
ALL_METHODS = (*METHODS, ADHOC)
COMBINERS = ("average", "weighted", "vote")
"""How a selected ensemble's members are combined: plain average (the default),
average with weights from the grid {1, 2, 4, 8} chosen on validation data, or
majority vote."""


@dataclass
class EnsembleRow:
    """One ensemble found for one budget by one method, scored on test data."""

    method: str
    budget: float
    members: list[str]
    weights: list[float]
    cost: float
    validation_loss: float
    validation_error: float
    test_loss: float | None
    test_error: float | None
    combiner: str = "average"
    saved_to: str | None = None
    ad_hoc: dict[str, str] | None = None
    """For method ``adhoc``: the ensemble's ``group`` id and ``kind``."""

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass
class SelectionReport:
    """Every ensemble found, plus the best single model for comparison."""

    cost_unit: str
    budgets: list[float]
    rows: list[EnsembleRow]
    best_single: dict[str, Any]
    library_size: int
    candidates: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "cost_unit": self.cost_unit,
            "budgets": self.budgets,
            "library_size": self.library_size,
            "best_single_model": self.best_single,
            "ensembles": [row.to_dict() for row in self.rows],
            "models": self.candidates,
            "errors": self.errors,
        }


def usable_entries(library: Library, cost_unit: str) -> list[LibraryEntry]:
    """Entries with validation and test predictions and a known cost."""
    if cost_unit not in COST_UNITS:
        raise LibraryError(
            f"cost unit {cost_unit!r} is unknown; allowed are {COST_UNITS}"
        )
    entries = [
        entry
        for entry in library.entries(("finished", "stopped", "imported"))
        if "validation" in entry.files
        and entry.cost(cost_unit) is not None
        and _readable(entry)
    ]
    if not entries:
        raise LibraryError(
            f"{library.path} has no model with validation predictions and a "
            f"{cost_unit} cost; run 'deepens search' first"
        )
    return entries


def _readable(entry: LibraryEntry) -> bool:
    """Whether the entry's cached predictions open (a crash or a copy can cut them)."""
    try:
        validation = entry.validation_probabilities()
        test = entry.test_probabilities()
    except (OSError, ValueError) as error:
        _logger.warning(
            "skipping model '%s': its predictions cannot be read (%s)",
            entry.model_id,
            error,
        )
        return False
    return validation.ndim == 2 and (test is None or test.ndim == 2)


def default_budgets(
    costs: Sequence[float],
    losses: Sequence[float],
    pruning_fraction: float = 0.2,
    count: int = 4,
) -> list[float]:
    """Budgets from the cheapest model SMOBF keeps to all the models it keeps.

    SMOBF chooses among the best ``pruning_fraction`` of the library, so the
    smallest useful budget is the cheapest of those and the largest is their
    summed cost; budgets in between are spaced geometrically.
    """
    costs_array = np.asarray(costs, dtype=float)
    order = np.argsort(np.asarray(losses, dtype=float), kind="stable")
    kept = costs_array[order[: max(1, math.ceil(pruning_fraction * len(order)))]]
    low = float(kept.min())
    high = max(float(kept.sum()), 4 * low)
    return [float(b) for b in np.geomspace(low, high, count)]


def select(
    library: Library,
    budgets: Sequence[float] | None = None,
    *,
    cost_unit: str = "seconds",
    methods: Sequence[str] = DEFAULT_METHODS,
    ensemble_size: int = 5,
    pruning_fraction: float = 0.2,
    weights: Sequence[float] = (0.1, 0.01, 0.001),
    metric: str = "cross_entropy",
    combiner: str = "average",
    selection_device: str = "cpu",
    shards: int = 1,
    output: str | os.PathLike[str] | None = None,
) -> SelectionReport:
    """Find the ensemble of each method for each budget and score it on test data.

    Parameters
    ----------
    library : Library
        A library with measured models.
    budgets : sequence of float, optional
        In ``cost_unit``; by default four budgets spread from the cheapest model
        to the whole pruned library.
    methods : sequence of str
        Selection methods (see :data:`deepens.selection.METHODS`), or ``adhoc``:
        the ad-hoc ensemble (see :mod:`deepens.adhoc`) with the lowest
        validation loss whose summed member cost fits the budget, combined with
        its recorded weights whatever ``combiner`` says.
    metric : str
        The selection's error metric: cross_entropy, error_rate or macro_f1.
    combiner : str
        One of :data:`COMBINERS`; applied to the members each method selected.
    selection_device : str
        Where candidates are scored: ``"cpu"`` (numpy), ``"cuda"`` (torch).
    shards : int
        Above 1, the validation samples are split over that many Ray workers,
        for predictions too large for one process; the ensembles are the same.
    output : path, optional
        Where to save each ensemble (``ensembles/<method>-<budget>/``).
    """
    if combiner not in COMBINERS:
        raise LibraryError(
            f"combiner {combiner!r} is unknown; allowed are {', '.join(COMBINERS)}"
        )
    entries = usable_entries(library, cost_unit)
    costs = [float(entry.cost(cost_unit)) for entry in entries]  # type: ignore[arg-type]
    losses = [
        entry.validation_loss if entry.validation_loss is not None else math.inf
        for entry in entries
    ]
    kept = max(1, math.ceil(pruning_fraction * len(entries)))
    if kept < min(3, len(entries)):
        _logger.warning(
            "pruning keeps %d of %d models, so ensembles can have at most %d "
            "member(s); raise --pruning-fraction to choose from more",
            kept,
            len(entries),
            kept,
        )
    if budgets is None:
        budgets = default_budgets(costs, losses, pruning_fraction)
    validation = [entry.validation_probabilities() for entry in entries]
    unknown = [method for method in methods if method not in ALL_METHODS]
    if unknown:
        raise SelectionError(
            f"method must be one of {', '.join(map(repr, ALL_METHODS))}; "
            f"received {unknown[0]!r}"
        )
    posthoc = [method for method in methods if method != ADHOC]
    # The settings every method shares (budgets, metric) are checked even when
    # only ad-hoc ensembles are asked for.
    for method in posthoc or METHODS[:1]:
        check_settings(method, weights, metric, ensemble_size, list(budgets))
    adhoc = _adhoc_candidates(library, entries, cost_unit) if ADHOC in methods else []

    rows: list[EnsembleRow] = []
    errors: list[str] = []
    with prepare_library(
        validation,
        library.validation_labels,
        costs,
        pruning_fraction=pruning_fraction,
        model_names=[entry.model_id for entry in entries],
        model_losses=losses,
        num_classes=library.num_classes,
        device=selection_device,
        shards=shards,
    ) as prepared:
        for budget in budgets:
            answerable = bool(posthoc)
            try:
                if posthoc:
                    prepared.check_budget(float(budget))
            except BudgetError as error:
                # One unreachable budget should not cost the user the others.
                errors.append(f"{error} (costs in {cost_unit})")
                answerable = False
            for method in methods:
                if method == ADHOC:
                    row = _adhoc_row(library, adhoc, float(budget), cost_unit, output)
                    if row is None:
                        errors.append(_no_adhoc_message(adhoc, budget, cost_unit))
                    else:
                        rows.append(row)
                    continue
                if not answerable:
                    continue
                chosen = select_from_library(
                    prepared,
                    [float(budget)],
                    method=method,
                    weights=weights,
                    metric=metric,
                    ensemble_size=ensemble_size,
                ).ensembles[float(budget)]
                choice = _Choice(method, float(budget), chosen, combiner, metric)
                rows.append(_row(library, entries, choice, cost_unit, output))
    if not rows:
        raise BudgetError(errors[0] if len(errors) == 1 else "; ".join(errors))
    for message in errors:
        _logger.warning("budget not answered: %s", message)

    candidates = [_describe(e, cost_unit, library.test_labels) for e in entries]
    return SelectionReport(
        cost_unit=cost_unit,
        budgets=[float(b) for b in budgets],
        rows=rows,
        best_single=_best_single(candidates),
        library_size=len(entries),
        candidates=candidates,
        errors=errors,
    )


@dataclass
class _Choice:
    method: str
    budget: float
    chosen: SelectedEnsemble
    combiner: str
    metric: str


def _member_weights(
    library: Library, members: list[LibraryEntry], counts: list[float], choice: _Choice
) -> list[float]:
    """Combiner weights: pick counts, or the validation-best grid weighting."""
    if choice.combiner != "weighted" or len(members) < 2:
        return counts
    if len(members) > MAX_GRID_MEMBERS:
        _logger.warning(
            "%s at budget %g has %d members; the weight grid covers at most %d, "
            "so it keeps the plain average",
            choice.method,
            choice.budget,
            len(members),
            MAX_GRID_MEMBERS,
        )
        return counts
    weights = best_grid_weights(
        [m.validation_probabilities() for m in members],
        library.validation_labels,
        metric=choice.metric,
        num_classes=library.num_classes,
    )
    return [float(w) for w in weights]


def _combined_scores(
    arrays: list[np.ndarray],
    labels: np.ndarray | None,
    weights: list[float],
    rule: str,
    names: list[str],
) -> tuple[float | None, float | None]:
    """Cross-entropy and error of the combined members, or None if not scorable."""
    if labels is None:
        return None, None
    for name, array in zip(names, arrays, strict=True):
        if not np.isfinite(array).all():
            _logger.warning(
                "model '%s' has non-finite test probabilities; its ensembles get no "
                "test score (re-measure it, or remove the model from the library)",
                name,
            )
            return None, None
    combined = combine(arrays, weights=weights, rule=rule)
    return loss_and_error(combined, labels)


def _row(
    library: Library,
    entries: list[LibraryEntry],
    choice: _Choice,
    cost_unit: str,
    output: str | os.PathLike[str] | None,
) -> EnsembleRow:
    # With-replacement methods may pick a model twice: it runs once, weighted by
    # its pick count.
    model_weights = choice.chosen.model_weights()
    members = [entries[i] for i in model_weights]
    member_weights = _member_weights(
        library, members, list(model_weights.values()), choice
    )
    return _scored_row(
        library,
        EnsembleRow(
            method=choice.method,
            budget=float(choice.budget),
            members=[m.model_id for m in members],
            weights=[float(w) for w in member_weights],
            cost=float(choice.chosen.cost),
            validation_loss=float(choice.chosen.validation_loss),
            validation_error=float(choice.chosen.validation_error),
            test_loss=None,
            test_error=None,
            combiner=choice.combiner,
        ),
        members,
        cost_unit,
        output,
    )


def _scored_row(
    library: Library,
    row: EnsembleRow,
    members: list[LibraryEntry],
    cost_unit: str,
    output: str | os.PathLike[str] | None,
) -> EnsembleRow:
    """Score ``row``'s members as combined, on validation and test data; save it."""
    rule = "vote" if row.combiner == "vote" else "average"
    names = row.members

    # Selection scored candidates by averaging; the reported validation figures
    # are those of the ensemble as it will be combined.
    validation_loss, validation_error = _combined_scores(
        [np.asarray(m.validation_probabilities(), dtype=np.float32) for m in members],
        library.validation_labels,
        row.weights,
        rule,
        names,
    )
    if validation_loss is not None and validation_error is not None:
        row.validation_loss, row.validation_error = validation_loss, validation_error
    if all("test" in m.files for m in members):
        row.test_loss, row.test_error = _combined_scores(
            [np.asarray(m.test_probabilities(), dtype=np.float32) for m in members],
            library.test_labels,
            row.weights,
            rule,
            names,
        )
    if output is not None and all(m.has_weights for m in members):
        row.saved_to = str(_save_ensemble(library, row, rule, cost_unit, output))
    return row


@dataclass
class _AdHocCandidate:
    group: AdHocGroup
    members: list[LibraryEntry]
    cost: float


def _adhoc_candidates(
    library: Library, entries: list[LibraryEntry], cost_unit: str
) -> list[_AdHocCandidate]:
    """Recorded ad-hoc ensembles whose members are all usable, best first."""
    usable = {entry.model_id: entry for entry in entries}
    candidates = []
    for group in library.groups(("finished", "stopped")):
        missing = [m for m in group.members if m not in usable]
        if missing or group.validation_loss is None:
            _logger.warning(
                "skipping ad-hoc ensemble '%s': member(s) %s lack predictions or a "
                "%s cost",
                group.group_id,
                ", ".join(missing) or "(none)",
                cost_unit,
            )
            continue
        members = [usable[model_id] for model_id in group.members]
        cost = float(sum(m.cost(cost_unit) or 0.0 for m in members))
        candidates.append(_AdHocCandidate(group, members, cost))
    if not candidates:
        raise LibraryError(
            f"method 'adhoc' needs ad-hoc ensembles, and {library.path} has none "
            "with measured members; build them with 'deepens search --ad-hoc "
            "homogeneous' (or heterogeneous)"
        )
    return sorted(
        candidates,
        key=lambda c: (c.group.validation_loss, c.group.group_id),
    )


def _adhoc_row(
    library: Library,
    candidates: list[_AdHocCandidate],
    budget: float,
    cost_unit: str,
    output: str | os.PathLike[str] | None,
) -> EnsembleRow | None:
    """The best ad-hoc ensemble within ``budget``, or None if none fits."""
    fitting = [candidate for candidate in candidates if candidate.cost <= budget]
    if not fitting:
        return None
    best = fitting[0]
    _logger.debug(
        "budget %g: ad-hoc ensemble %s (validation loss %.4f, cost %g)",
        budget,
        best.group.group_id,
        best.group.validation_loss,
        best.cost,
    )
    row = EnsembleRow(
        method=ADHOC,
        budget=budget,
        members=list(best.group.members),
        weights=[float(w) for w in best.group.weights],
        cost=best.cost,
        validation_loss=float(best.group.validation_loss),  # type: ignore[arg-type]
        validation_error=float(best.group.validation_error or math.nan),
        test_loss=None,
        test_error=None,
        combiner="weighted",
        ad_hoc={"group": best.group.group_id, "kind": best.group.kind},
    )
    return _scored_row(library, row, best.members, cost_unit, output)


def _no_adhoc_message(
    candidates: list[_AdHocCandidate], budget: float, cost_unit: str
) -> str:
    cheapest = min(candidate.cost for candidate in candidates)
    return (
        f"no ad-hoc ensemble fits budget {budget:g}: the cheapest costs "
        f"{cheapest:g} (costs in {cost_unit})"
    )


def ensemble_folder_name(method: str, budget: float, cost_unit: str) -> str:
    """``<method>-<unit>-<budget>``, with the budget in plain digits.

    Folders of different cost units never collide, and the same budget always
    gets the same name whatever its size.
    """
    text = np.format_float_positional(budget, precision=6, trim="-")
    return f"{method}-{cost_unit}-{text}"


def _save_ensemble(
    library: Library,
    row: EnsembleRow,
    rule: str,
    cost_unit: str,
    output: str | os.PathLike[str],
) -> Path:
    from deepens.ensemble import Ensemble

    folder = Path(output) / "ensembles"
    folder /= ensemble_folder_name(row.method, row.budget, cost_unit)
    ensemble = Ensemble.from_library(
        library,
        row.members,
        row.weights,
        combiner=rule,
        cost=row.cost,
        cost_unit=cost_unit,
        info={
            "method": row.method,
            "budget": row.budget,
            "combiner": row.combiner,
            **({"ad_hoc": row.ad_hoc} if row.ad_hoc else {}),
        },
    )
    return ensemble.save(folder)


def _describe(
    entry: LibraryEntry, cost_unit: str, test_labels: np.ndarray | None = None
) -> dict[str, Any]:
    test = entry.test_probabilities()
    test_loss = test_error = None
    if test is not None and test_labels is not None:
        test_loss, test_error = loss_and_error(test, test_labels)
    return {
        "model_id": entry.model_id,
        "status": entry.status,
        "epochs": entry.epochs,
        "cost": entry.cost(cost_unit),
        "parameters": entry.parameters,
        "flops": entry.flops,
        "validation_loss": entry.validation_loss,
        "validation_error": entry.validation_error,
        "test_loss": test_loss,
        "test_error": test_error,
    }


def _best_single(candidates: list[dict[str, Any]]) -> dict[str, Any]:
    """The model with the lowest validation loss (ties: the smallest id)."""
    return min(
        candidates,
        key=lambda m: (m["validation_loss"] or math.inf, m["model_id"]),
    )
