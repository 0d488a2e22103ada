"""Ensemble selection: the best ensemble of a model library for each budget.

Works on cached validation class probabilities only; no model is run. The
main entry point is :func:`select_ensembles`; :func:`prepare_library` with
:func:`smobf`, :func:`forward_greedy` and :func:`best_single` answer budgets one
at a time on a library validated and pruned once.
"""

from __future__ import annotations

from deepens.selection._errors import SelectionError
from deepens.selection.api import METHODS, select_ensembles, select_from_library
from deepens.selection.ensemble import SelectedEnsemble, SelectionResult
from deepens.selection.greedy import forward_greedy
from deepens.selection.library import DEVICES, PreparedLibrary, prepare_library
from deepens.selection.metrics import METRICS, PROBABILITY_FLOOR
from deepens.selection.pareto import pareto_front
from deepens.selection.single import best_single
from deepens.selection.smobf import DEFAULT_TRADE_OFFS, smobf, smobf_ensembles

__all__ = [
    "DEFAULT_TRADE_OFFS",
    "DEVICES",
    "METHODS",
    "METRICS",
    "PROBABILITY_FLOOR",
    "PreparedLibrary",
    "SelectedEnsemble",
    "SelectionError",
    "SelectionResult",
    "best_single",
    "forward_greedy",
    "pareto_front",
    "prepare_library",
    "select_ensembles",
    "select_from_library",
    "smobf",
    "smobf_ensembles",
]
