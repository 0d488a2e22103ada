"""Random search and the Hyperband family, all from Ray Tune itself.

Random search is Ray's random variant generator; ASHA and synchronous
Hyperband add Ray's schedulers on top of it, with epochs as the resource.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from deepens.optimizers.translate import tune_param_space
from deepens.space import SearchSpace

if TYPE_CHECKING:
    from deepens.optimizers import OptimizerSetup
    from deepens.search import SearchSettings


def random_searcher(settings: SearchSettings, limit: bool = True) -> Any:
    """Ray Tune's random variant generator, seeded.

    ``limit=False`` leaves the number of trials at once to the resources:
    synchronous Hyperband pauses trials, and a paused trial still counts
    against a generator's limit, so a limit below a bracket's size would keep
    the bracket from ever filling.
    """
    from ray.tune.search import BasicVariantGenerator

    # A SearchGenerator ignores the Tuner's max_concurrent_trials; it takes its own.
    return BasicVariantGenerator(
        random_state=settings.seed,
        max_concurrent=(settings.max_concurrent_trials or 0) if limit else 0,
    )


def setup_random(space: SearchSpace, settings: SearchSettings) -> OptimizerSetup:
    """Random search: every trial trains for ``max_epochs``."""
    from deepens.optimizers import OptimizerSetup

    return OptimizerSetup(tune_param_space(space), random_searcher(settings), None)


def setup_asha(space: SearchSpace, settings: SearchSettings) -> OptimizerSetup:
    """Random proposals stopped early by asynchronous successive halving."""
    from ray.tune.schedulers import ASHAScheduler

    from deepens.optimizers import OptimizerSetup

    scheduler = ASHAScheduler(
        time_attr="epoch",
        max_t=settings.max_epochs,
        grace_period=settings.grace_period,
        reduction_factor=settings.reduction_factor,
    )
    return OptimizerSetup(tune_param_space(space), random_searcher(settings), scheduler)


def setup_hyperband(space: SearchSpace, settings: SearchSettings) -> OptimizerSetup:
    """Random proposals under synchronous Hyperband.

    Hyperband pauses a bracket's trials at each rung until the whole bracket
    has reached it; trials save a checkpoint every epoch so that a paused
    trial continues where it stopped instead of training from scratch.
    """
    from ray.tune.schedulers import HyperBandScheduler

    from deepens.optimizers import OptimizerSetup

    scheduler = HyperBandScheduler(
        time_attr="epoch",
        max_t=settings.max_epochs,
        reduction_factor=settings.reduction_factor,
    )
    return OptimizerSetup(
        tune_param_space(space), random_searcher(settings, limit=False), scheduler
    )
