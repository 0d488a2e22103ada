"""The result types of ensemble selection."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SelectedEnsemble:
    """One ensemble chosen from a library, with its validation figures.

    Attributes
    ----------
    members
        Indices into the input model list, in pick order. With-replacement
        methods may repeat a model.
    weights
        Average-combiner weight of each entry of ``members`` (``1 / len(members)``
        each; they sum to 1). A model picked twice thus weighs twice: see
        :meth:`model_weights` for the weight per distinct model.
    cost
        Summed cost of the *distinct* members: a repeated model is run once at
        inference, so its cost counts once.
    validation_loss
        Cross-entropy (Eq. M1) of the combined validation probabilities.
    validation_error
        Error rate (Eq. M2) of the combined validation probabilities.
    method
        ``"smobf"``, ``"greedy"``, ``"greedy_replacement"``, ``"greedy_best"`` or
        ``"single"``.
    budget
        The budget it was selected for, or ``None``.
    trade_off
        The SMOBF weight ``w`` that produced it (``None`` for other methods).
    member_names
        Names of ``members`` (same order), when the library's models are named.
    """

    members: tuple[int, ...]
    weights: tuple[float, ...]
    cost: float
    validation_loss: float
    validation_error: float
    method: str
    budget: float | None
    trade_off: float | None
    member_names: tuple[str, ...] = ()

    @property
    def distinct_members(self) -> tuple[int, ...]:
        """The members without repeats, in first-pick order."""
        return tuple(dict.fromkeys(self.members))

    def model_weights(self) -> dict[int, float]:
        """Combiner weight per distinct model: its pick count over all picks."""
        totals: dict[int, float] = {}
        for member, weight in zip(self.members, self.weights, strict=True):
            totals[member] = totals.get(member, 0.0) + weight
        return totals

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary of every field."""
        return {
            "members": list(self.members),
            "member_names": list(self.member_names),
            "weights": list(self.weights),
            "cost": self.cost,
            "validation_loss": self.validation_loss,
            "validation_error": self.validation_error,
            "method": self.method,
            "budget": self.budget,
            "trade_off": self.trade_off,
        }


@dataclass(frozen=True)
class SelectionResult:
    """Everything one call of :func:`~deepens.selection.select_ensembles` found.

    Attributes
    ----------
    ensembles
        The ensemble for each budget, keyed by budget (as a float), in the order
        given; a budget given twice appears once.
    pareto
        The non-dominated ``(cost, validation_loss)`` ensembles among all found,
        cheapest first.
    pruned
        Indices of the library models kept by pruning, ascending.
    candidates
        Every ensemble found (for SMOBF, one per budget and trade-off weight).
    dropped
        Indices of models left out because their predictions are not finite.
    """

    ensembles: dict[float, SelectedEnsemble]
    pareto: list[SelectedEnsemble]
    pruned: tuple[int, ...]
    candidates: list[SelectedEnsemble] = field(default_factory=list)
    dropped: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary; budgets become the keys of ``ensembles``."""
        return {
            "ensembles": {
                repr(budget): ensemble.to_dict()
                for budget, ensemble in self.ensembles.items()
            },
            "pareto": [ensemble.to_dict() for ensemble in self.pareto],
            "pruned": list(self.pruned),
            "candidates": [ensemble.to_dict() for ensemble in self.candidates],
            "dropped": list(self.dropped),
        }
