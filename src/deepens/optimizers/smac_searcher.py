"""SMAC3 as a Ray Tune searcher, through SMAC's ask/tell interface.

Ray Tune ships no SMAC searcher, so this small adapter asks SMAC's
hyperparameter-optimisation facade (a random forest surrogate with expected
improvement) for each new trial's configuration and tells it each finished
trial's validation loss. SMAC's own objects do not pickle, while Ray Tune
pickles searchers into its experiment checkpoints; the adapter therefore keeps
its state as plain data (the space, the seed and every observation) and builds
a fresh SMAC from it, replaying the observations, after it is unpickled. That
is also how a resumed search continues where it stopped.
"""

from __future__ import annotations

import logging
import math
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray.tune.search import Searcher

from deepens.optimizers.translate import (
    constant_values,
    plain_config,
    to_configspace,
)
from deepens.space import SearchSpace

if TYPE_CHECKING:
    from deepens.optimizers import OptimizerSetup
    from deepens.search import SearchSettings

_logger = logging.getLogger(__name__)

#: The loss SMAC is told for a trial that failed or reported nothing: far above
#: any trained network's cross-entropy, yet finite, which SMAC's surrogate needs.
FAILED_COST = 100.0


class SMACSearch(Searcher):  # type: ignore[misc]
    """Propose configurations with SMAC3 (``smac.HyperparameterOptimizationFacade``).

    Parameters
    ----------
    space : SearchSpace
        The space to search; its conditions become ConfigSpace conditions.
    seed : int
        Seeds SMAC's initial design and its random forest.
    max_trials : int
        The number of trials SMAC plans for (its initial design takes a share).
    """

    def __init__(self, space: SearchSpace, seed: int = 0, max_trials: int = 20) -> None:
        from deepens.trial import METRIC

        super().__init__(metric=METRIC, mode="min")
        # The object itself (it pickles): an ad-hoc ensemble's derived space has
        # member-prefixed names that SearchSpace.from_dict would refuse.
        self.space = space
        self.seed = seed
        self.max_trials = max_trials
        #: (configuration, loss or None) of every finished trial, in order.
        self.observations: list[tuple[dict[str, Any], float | None]] = []
        #: Configurations proposed to running trials, by trial id.
        self.proposed: dict[str, dict[str, Any]] = {}
        self._smac: Any = None
        self._asked: dict[str, Any] = {}

    # Ray Tune pickles searchers; SMAC's facade holds generators and loggers.
    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_smac": None, "_asked": {}}

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict, **spec: Any
    ) -> bool:
        if metric:
            self._metric = metric
        if mode:
            self._mode = mode
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        smac = self._facade()
        info = smac.ask()
        self._asked[trial_id] = info
        config = plain_config(self.space, dict(info.config))
        self.proposed[trial_id] = config
        _logger.debug("SMAC proposes %s for trial %s", config, trial_id)
        return config

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        config = self.proposed.pop(trial_id, None)
        if config is None:
            return
        loss = None if error or not result else result.get(self._metric)
        if loss is not None and not math.isfinite(float(loss)):
            loss = None
        if loss is not None and self._mode == "max":
            loss = -float(loss)
        self.observations.append((config, None if loss is None else float(loss)))
        self._tell(config, loss, self._asked.pop(trial_id, None))

    def save(self, checkpoint_path: str) -> None:
        import pickle

        with open(checkpoint_path, "wb") as file:
            pickle.dump(self.__getstate__(), file)

    def restore(self, checkpoint_path: str) -> None:
        import pickle

        with open(checkpoint_path, "rb") as file:
            self.__dict__.update(pickle.load(file))
        # Trials that were running when the state was saved are proposed again
        # by Ray Tune under their old ids; SMAC learns of them when they end.

    # ------------------------------------------------------------- helpers
    def _facade(self) -> Any:
        if self._smac is not None:
            return self._smac
        from smac import HyperparameterOptimizationFacade, Scenario

        configspace = to_configspace(self.space, self.seed)
        scenario = Scenario(
            configspace,
            deterministic=True,
            n_trials=max(self.max_trials, len(self.observations) + 1),
            seed=self.seed,
            crash_cost=FAILED_COST,
            # SMAC writes its run history here; deepens' library is the record.
            output_directory=Path(tempfile.mkdtemp(prefix="deepens-smac-")),
        )
        self._smac = HyperparameterOptimizationFacade(
            scenario,
            target_function=_never_called,
            overwrite=True,
            logging_level=logging.WARNING,
        )
        for config, loss in self.observations:
            self._tell(config, loss, None)
        return self._smac

    def _tell(self, config: dict[str, Any], loss: float | None, info: Any) -> None:
        from ConfigSpace import Configuration
        from smac.runhistory.dataclasses import TrialInfo, TrialValue
        from smac.runhistory.enumerations import StatusType

        smac = self._facade() if self._smac is None else self._smac
        if info is None:
            configspace = smac.scenario.configspace
            values = {k: v for k, v in config.items() if k in configspace}
            info = TrialInfo(
                config=Configuration(configspace, values=values), seed=self.seed
            )
        if loss is None:
            value = TrialValue(cost=FAILED_COST, status=StatusType.CRASHED)
        else:
            value = TrialValue(cost=float(loss))
        smac.tell(info, value)


def _never_called(config: Any, seed: int = 0) -> float:
    """SMAC's facade wants a target function; Ray Tune's trials are the real one."""
    raise RuntimeError("deepens drives SMAC by ask and tell; it never runs trials")


def setup_smac(space: SearchSpace, settings: SearchSettings) -> OptimizerSetup:
    """SMAC3 proposals; every trial trains for ``max_epochs``."""
    from deepens.optimizers import OptimizerSetup

    to_configspace(space, settings.seed)  # a space SMAC cannot hold fails now
    searcher = SMACSearch(space, seed=settings.seed, max_trials=settings.max_trials)
    return OptimizerSetup(constant_values(space), searcher, None)
