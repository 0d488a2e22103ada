"""Hyperparameter optimisers, each from its own package, set up for Ray Tune.

An optimiser is a searcher (which configuration to try next) and a scheduler
(when to stop or pause a running trial). Each name below is one of the eight
ways the paper builds a library; the table says which package does the work.

========== ======================================= =============================
name       searcher                                scheduler
========== ======================================= =============================
random     Ray Tune random generator               none (every trial to the end)
asha       Ray Tune random generator               Ray Tune ASHA
hyperband  Ray Tune random generator               Ray Tune synchronous Hyperband
bohb       Ray Tune TuneBOHB (hpbandster)          Ray Tune HyperBandForBOHB
tpe        Optuna TPESampler via Ray's OptunaSearch none
gp         Optuna GPSampler via Ray's OptunaSearch  none
ga         Optuna NSGA-II (one objective)           none
smac       SMAC3 by ask/tell (SMACSearch)           none
========== ======================================= =============================
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from deepens.errors import SearchError
from deepens.optimizers.translate import tune_domain, tune_param_space
from deepens.space import SearchSpace

if TYPE_CHECKING:
    from deepens.search import SearchSettings

__all__ = [
    "OPTIMIZERS",
    "OptimizerInfo",
    "OptimizerSetup",
    "check_space",
    "make_optimizer_setup",
    "tune_domain",
    "tune_param_space",
]

_logger = logging.getLogger(__name__)


@dataclass
class OptimizerSetup:
    """What Ray Tune's Tuner needs from an optimiser.

    Attributes
    ----------
    param_space : dict
        The Tuner's param_space: sampling domains for Ray's own generator, or
        only the constants where the searcher holds the space itself.
    searcher, scheduler
        Ray Tune objects; a scheduler of None means first in, first out.
    """

    param_space: dict[str, Any]
    searcher: Any
    scheduler: Any


@dataclass(frozen=True)
class OptimizerInfo:
    """One optimiser: what it is, what it needs and how it is set up."""

    name: str
    description: str
    package: str
    setup: Callable[[SearchSpace, SearchSettings], OptimizerSetup]
    uses_schedule: bool = False
    supports_conditions: bool = True
    #: The scheduler pauses trials and resumes them later: trials checkpoint
    #: every epoch, and no limit on trials at once applies (a paused trial
    #: would hold a place); the resources per trial bound them.
    pauses_trials: bool = False


def _lazy(module: str, function: str) -> Callable[..., OptimizerSetup]:
    """Import an optimiser's module only when it is used (each pulls a package)."""

    def setup(space: SearchSpace, settings: SearchSettings) -> OptimizerSetup:
        import importlib

        factory = getattr(importlib.import_module(module), function)
        return factory(space, settings)  # type: ignore[no-any-return]

    return setup


_NATIVE = "deepens.optimizers.ray_native"
_OPTUNA = "deepens.optimizers.optuna_samplers"

OPTIMIZERS: dict[str, OptimizerInfo] = {
    info.name: info
    for info in (
        OptimizerInfo(
            "asha",
            "random proposals, asynchronous successive halving",
            "Ray Tune",
            _lazy(_NATIVE, "setup_asha"),
            uses_schedule=True,
        ),
        OptimizerInfo(
            "random",
            "random search, every trial trained to max_epochs",
            "Ray Tune",
            _lazy(_NATIVE, "setup_random"),
        ),
        OptimizerInfo(
            "hyperband",
            "random proposals, synchronous Hyperband",
            "Ray Tune",
            _lazy(_NATIVE, "setup_hyperband"),
            uses_schedule=True,
            pauses_trials=True,
        ),
        OptimizerInfo(
            "bohb",
            "kernel-density Bayesian optimisation in Hyperband brackets",
            "Ray Tune, hpbandster, ConfigSpace",
            _lazy("deepens.optimizers.bohb", "setup_bohb"),
            uses_schedule=True,
            pauses_trials=True,
        ),
        OptimizerInfo(
            "tpe",
            "tree-structured Parzen estimators",
            "Optuna (via Ray Tune)",
            _lazy(_OPTUNA, "setup_tpe"),
        ),
        OptimizerInfo(
            "gp",
            "Bayesian optimisation with a Gaussian process",
            "Optuna (via Ray Tune)",
            _lazy(_OPTUNA, "setup_gp"),
        ),
        OptimizerInfo(
            "ga",
            "genetic algorithm (NSGA-II, one objective)",
            "Optuna (via Ray Tune)",
            _lazy(_OPTUNA, "setup_ga"),
        ),
        OptimizerInfo(
            "smac",
            "SMAC: random-forest Bayesian optimisation",
            "smac (SMAC3)",
            _lazy("deepens.optimizers.smac_searcher", "setup_smac"),
        ),
    )
}
"""Every optimiser by name; ``asha`` is the default."""


def check_space(info: OptimizerInfo, space: SearchSpace) -> None:
    """Refuse, before any trial, a space the optimiser cannot express.

    Raises
    ------
    SearchError
        Naming the first conditional parameter, when the optimiser has no way
        to express conditions.
    """
    conditional = space.conditional_parameters()
    if conditional and not info.supports_conditions:
        name = conditional[0]
        condition = space.parameters[name].condition
        raise SearchError(
            f"optimizer {info.name!r} cannot express conditions, but parameter "
            f"'{name}' exists only when {condition}; remove the condition from "
            "the space (make the parameter always active) or choose another "
            "optimizer"
        )


def make_optimizer_setup(
    space: SearchSpace, settings: SearchSettings
) -> OptimizerSetup:
    """The searcher and scheduler for ``settings.optimizer``.

    Raises
    ------
    SearchError
        For an unknown optimiser name or a space it cannot express, before
        anything starts.
    """
    try:
        info = OPTIMIZERS[settings.optimizer]
    except KeyError:
        raise SearchError(
            f"optimizer {settings.optimizer!r} is unknown; choose one of "
            f"{', '.join(OPTIMIZERS)}"
        ) from None
    check_space(info, space)
    _logger.debug("optimizer %s: %s (%s)", info.name, info.description, info.package)
    return info.setup(space, settings)
