"""BOHB: Ray Tune's BOHB searcher (hpbandster, ConfigSpace) and its Hyperband."""

from __future__ import annotations

from typing import TYPE_CHECKING

from deepens.optimizers.translate import constant_values, to_configspace
from deepens.space import SearchSpace

if TYPE_CHECKING:
    from deepens.optimizers import OptimizerSetup
    from deepens.search import SearchSettings


def setup_bohb(space: SearchSpace, settings: SearchSettings) -> OptimizerSetup:
    """Kernel-density proposals (TuneBOHB) inside Hyperband brackets.

    The space reaches hpbandster as a ConfigSpace space, conditions included.
    Like Hyperband, BOHB's scheduler pauses trials, so trials checkpoint.
    """
    from ray.tune.schedulers import HyperBandForBOHB
    from ray.tune.search.bohb import TuneBOHB

    from deepens.optimizers import OptimizerSetup
    from deepens.trial import METRIC

    # A searcher given its own space is never told the Tuner's metric and mode.
    searcher = TuneBOHB(
        space=to_configspace(space, settings.seed),
        metric=METRIC,
        mode="min",
        seed=settings.seed,
        # Paused trials count against a limit; resources bound BOHB instead.
        max_concurrent=0,
    )
    scheduler = HyperBandForBOHB(
        time_attr="epoch",
        max_t=settings.max_epochs,
        reduction_factor=settings.reduction_factor,
    )
    return OptimizerSetup(constant_values(space), searcher, scheduler)
