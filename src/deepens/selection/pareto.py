"""The cost/loss Pareto front of a set of ensembles."""

from __future__ import annotations

from collections.abc import Iterable

from deepens.selection.ensemble import SelectedEnsemble


def pareto_front(ensembles: Iterable[SelectedEnsemble]) -> list[SelectedEnsemble]:
    """Keep the ensembles no other ensemble beats on both cost and loss.

    An ensemble is dominated when another costs no more and has no higher
    validation cross-entropy, and is strictly better in one of the two. Of
    ensembles with equal cost and loss, the first in input order is kept.

    Parameters
    ----------
    ensembles
        Any ensembles, e.g. those found for several budgets and trade-offs.

    Returns
    -------
    list[SelectedEnsemble]
        The non-dominated ensembles, cheapest first (so losses strictly fall).
    """
    # A stable sort by (cost, loss) keeps input order among exact duplicates.
    ordered = sorted(
        ensembles, key=lambda ensemble: (ensemble.cost, ensemble.validation_loss)
    )
    front: list[SelectedEnsemble] = []
    for ensemble in ordered:
        if not front or ensemble.validation_loss < front[-1].validation_loss:
            front.append(ensemble)
    return front
