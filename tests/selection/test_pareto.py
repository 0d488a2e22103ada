"""The cost/loss Pareto front."""

from __future__ import annotations

from deepens.selection import SelectedEnsemble, pareto_front


def ensemble(cost: float, loss: float, member: int) -> SelectedEnsemble:
    return SelectedEnsemble(
        members=(member,),
        weights=(1.0,),
        cost=cost,
        validation_loss=loss,
        validation_error=0.0,
        method="single",
        budget=None,
        trade_off=None,
    )


def test_front_drops_dominated_and_duplicate_ensembles() -> None:
    found = [
        ensemble(2.0, 0.45, 0),  # dominated by (2.0, 0.40): same cost, worse loss
        ensemble(1.0, 0.50, 1),
        ensemble(3.0, 0.40, 2),  # dominated by (2.0, 0.40): same loss, dearer
        ensemble(2.0, 0.40, 3),
        ensemble(0.5, 0.90, 4),
        ensemble(1.0, 0.50, 5),  # equal to member 1's: the first is kept
    ]
    front = pareto_front(found)
    assert [(e.cost, e.validation_loss, e.members) for e in front] == [
        (0.5, 0.90, (4,)),
        (1.0, 0.50, (1,)),
        (2.0, 0.40, (3,)),
    ]


def test_empty_input_gives_an_empty_front() -> None:
    assert pareto_front([]) == []
