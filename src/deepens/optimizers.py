"""Hyperparameter optimisers, each from its own package, set up for Ray Tune.

An optimiser is a searcher (which configuration to try next) and a scheduler
(when to stop a running trial). Each name maps to the pair the paper compares.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from deepens.errors import SearchError
from deepens.space import Parameter, SearchSpace

if TYPE_CHECKING:
    from deepens.search import SearchSettings

_logger = logging.getLogger(__name__)


@dataclass
class OptimizerSetup:
    """What Ray Tune's Tuner needs from an optimiser."""

    param_space: dict[str, Any]
    searcher: Any
    scheduler: Any


def tune_domain(parameter: Parameter) -> Any:
    """The Ray Tune sampling domain of one parameter."""
    from ray import tune

    if parameter.kind == "fixed":
        return parameter.choices[0]
    if parameter.kind == "categorical":
        return tune.choice(list(parameter.choices))
    low, high = float(parameter.low or 0), float(parameter.high or 0)
    if parameter.kind == "int":
        if low == high:
            return int(low)
        if parameter.log:
            return tune.lograndint(int(low), int(high) + 1)
        return tune.randint(int(low), int(high) + 1)
    if low == high:
        return low
    if parameter.log:
        return tune.loguniform(low, high)
    return tune.uniform(low, high)


def tune_param_space(space: SearchSpace) -> dict[str, Any]:
    """Ray Tune domains for every parameter.

    Conditional parameters are sampled always; :meth:`SearchSpace.canonical`
    drops them in trials where their condition does not hold, so the network
    trained is the same.
    """
    return {name: tune_domain(p) for name, p in space.parameters.items()}


def _asha(settings: SearchSettings) -> Any:
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(
        time_attr="epoch",
        max_t=settings.max_epochs,
        grace_period=settings.grace_period,
        reduction_factor=settings.reduction_factor,
    )


def _random_searcher(settings: SearchSettings) -> Any:
    from ray.tune.search import BasicVariantGenerator

    # A SearchGenerator ignores the Tuner's max_concurrent_trials; it takes its own.
    return BasicVariantGenerator(
        random_state=settings.seed,
        max_concurrent=settings.max_concurrent_trials or 0,
    )


def _setup_random(space: SearchSpace, settings: SearchSettings) -> OptimizerSetup:
    return OptimizerSetup(tune_param_space(space), _random_searcher(settings), None)


def _setup_asha(space: SearchSpace, settings: SearchSettings) -> OptimizerSetup:
    return OptimizerSetup(
        tune_param_space(space), _random_searcher(settings), _asha(settings)
    )


OPTIMIZERS: dict[str, Callable[[SearchSpace, SearchSettings], OptimizerSetup]] = {
    "asha": _setup_asha,
    "random": _setup_random,
}
"""Optimiser names and how each is set up."""


def make_optimizer_setup(
    space: SearchSpace, settings: SearchSettings
) -> OptimizerSetup:
    """The searcher and scheduler for ``settings.optimizer``.

    Raises
    ------
    SearchError
        For an unknown optimiser name, before anything starts.
    """
    try:
        factory = OPTIMIZERS[settings.optimizer]
    except KeyError:
        raise SearchError(
            f"optimizer {settings.optimizer!r} is unknown; choose one of "
            f"{', '.join(OPTIMIZERS)}"
        ) from None
    return factory(space, settings)
