"""TPE, Gaussian-process Bayesian optimisation and a genetic algorithm: Optuna.

All three reach Ray Tune through its Optuna searcher, which drives an Optuna
study by ask and tell. The space is given as a define-by-run function, so a
conditional parameter is only suggested when its condition holds.
"""

from __future__ import annotations

import threading
import warnings
from typing import TYPE_CHECKING, Any

import optuna

from deepens.optimizers.translate import OptunaDefineByRun, constant_values
from deepens.space import SearchSpace

if TYPE_CHECKING:
    from deepens.optimizers import OptimizerSetup
    from deepens.search import SearchSettings

_LOCK_TYPES = (type(threading.Lock()), type(threading.RLock()))


class PicklableNSGAIISampler(optuna.samplers.NSGAIISampler):  # type: ignore[misc]
    """Optuna's NSGA-II sampler, made picklable for Ray Tune's checkpoints.

    The sampler guards its population with a thread lock, which Python cannot
    pickle; Ray Tune pickles the searcher (and so the sampler) with every
    experiment checkpoint. Locks are dropped when pickling and made anew
    when unpickling; the algorithm is Optuna's, untouched.
    """

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_deepens_locks"] = [
            name for name, value in state.items() if isinstance(value, _LOCK_TYPES)
        ]
        for name in state["_deepens_locks"]:
            del state[name]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        locks = state.pop("_deepens_locks", [])
        self.__dict__.update(state)
        for name in locks:
            setattr(self, name, threading.Lock())


def population_size(max_trials: int) -> int:
    """The GA's population: about a quarter of the trials, between 4 and 50.

    A population as large as Optuna's default (50) would leave a short search
    with its random first generation only.
    """
    return max(4, min(50, max_trials // 4))


def startup_trials(max_trials: int) -> int:
    """Random trials before TPE or the GP model the results: Optuna's 10 at most.

    About a quarter of the trials, at least 4, so that a short search spends
    most of its trials on the model's proposals.
    """
    return max(4, min(10, max_trials // 4))


def _setup(space: SearchSpace, settings: SearchSettings, sampler: Any) -> Any:
    from ray.tune.search.optuna import OptunaSearch

    from deepens.optimizers import OptimizerSetup

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Ray times the define-by-run call, which includes the sampler fitting its
    # model (a GP takes seconds as trials accumulate), and warns as if training
    # ran there; the time is the optimiser's own work.
    warnings.filterwarnings(
        "ignore", message="Define-by-run function passed", category=UserWarning
    )
    from deepens.trial import METRIC

    # A searcher given its own space is never told the Tuner's metric and mode.
    searcher = OptunaSearch(
        space=OptunaDefineByRun(space), metric=METRIC, mode="min", sampler=sampler
    )
    return OptimizerSetup(constant_values(space), searcher, None)


def setup_tpe(space: SearchSpace, settings: SearchSettings) -> OptimizerSetup:
    """Tree-structured Parzen estimators (``optuna.samplers.TPESampler``)."""
    sampler = optuna.samplers.TPESampler(
        n_startup_trials=startup_trials(settings.max_trials), seed=settings.seed
    )
    return _setup(space, settings, sampler)  # type: ignore[no-any-return]


def setup_gp(space: SearchSpace, settings: SearchSettings) -> OptimizerSetup:
    """Bayesian optimisation with a Gaussian process (``GPSampler``).

    Optuna's GP models the parameters every trial has; a conditional one
    (``cardinality``) is drawn by its independent sampler.
    """
    sampler = optuna.samplers.GPSampler(
        n_startup_trials=startup_trials(settings.max_trials), seed=settings.seed
    )
    return _setup(space, settings, sampler)  # type: ignore[no-any-return]


def setup_ga(space: SearchSpace, settings: SearchSettings) -> OptimizerSetup:
    """A genetic algorithm: NSGA-II with one objective, the validation loss.

    With a single objective NSGA-II's non-dominated sorting is plain ranking,
    leaving an elitist GA with uniform crossover and mutation. It is chosen
    over Nevergrad's evolution strategies because Optuna's define-by-run space
    keeps the space's conditions, which Nevergrad's flat parametrisation lacks.
    """
    sampler = PicklableNSGAIISampler(
        population_size=population_size(settings.max_trials), seed=settings.seed
    )
    return _setup(space, settings, sampler)  # type: ignore[no-any-return]
