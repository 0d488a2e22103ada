"""One search space, translated into each optimiser's own terms.

The space (:class:`deepens.space.SearchSpace`) is the single description; this
module turns it into Ray Tune sampling domains, a ConfigSpace configuration
space (BOHB, SMAC) and an Optuna define-by-run function (TPE, GP, GA). Log
scales, integer ranges, categorical choices and conditions carry over, and
values an optimiser hands back become plain Python values again, so that the
same network always gets the same model id.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from deepens.errors import SpaceError
from deepens.space import Parameter, SearchSpace

_logger = logging.getLogger(__name__)


# ---------------------------------------------------------------- Ray Tune
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
            # lograndint's upper bound is exclusive; the space's is inclusive.
            return tune.lograndint(int(low), int(high) + 1)
        return tune.randint(int(low), int(high) + 1)
    if low == high:
        return low
    if parameter.log:
        return tune.loguniform(low, high)
    return tune.uniform(low, high)


def tune_param_space(space: SearchSpace) -> dict[str, Any]:
    """Ray Tune domains for every parameter.

    Ray's random generator samples conditional parameters always;
    :meth:`SearchSpace.canonical` drops them in trials where their condition
    does not hold, so the network trained, and its model id, are the same.
    """
    return {name: tune_domain(p) for name, p in space.parameters.items()}


def _searched(space: SearchSpace) -> dict[str, Parameter]:
    """Parameters an optimiser chooses (fixed ones, and degenerate ranges, excluded)."""
    return {
        name: p
        for name, p in space.parameters.items()
        if p.kind != "fixed" and not (p.kind != "categorical" and p.low == p.high)
    }


def constant_values(space: SearchSpace) -> dict[str, Any]:
    """Fixed parameters plus ranges whose low equals their high.

    Searchers with a space of their own never see these; Ray Tune merges them
    into every configuration a searcher proposes.
    """
    searched = _searched(space)
    out: dict[str, Any] = {}
    for name, p in space.parameters.items():
        if name in searched:
            continue
        if p.kind == "fixed":
            out[name] = p.choices[0]
        else:
            out[name] = int(p.low or 0) if p.kind == "int" else float(p.low or 0)
    return out


def plain_value(parameter: Parameter, value: Any) -> Any:
    """An optimiser's value (numpy scalars, strings) as the space's own type."""
    if parameter.kind == "int":
        return int(round(float(value)))
    if parameter.kind == "float":
        return float(value)
    if parameter.kind == "categorical":
        for choice in parameter.choices:
            if choice == value or str(choice) == str(value):
                return choice
    return value


def plain_config(space: SearchSpace, config: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`plain_value` for every parameter of a proposed configuration."""
    return {
        name: plain_value(space.parameters[name], value)
        if name in space.parameters
        else value
        for name, value in config.items()
    }


# -------------------------------------------------------------- ConfigSpace
def _categorical_choices(parameter: Parameter) -> list[Any]:
    allowed = (str, int, float, bool)
    bad = [c for c in parameter.choices if not isinstance(c, allowed)]
    if bad:
        raise SpaceError(
            f"parameter '{parameter.name}': choices {bad!r} are not numbers or "
            "strings, which this optimiser cannot search"
        )
    return list(parameter.choices)


def to_configspace(space: SearchSpace, seed: int) -> Any:
    """A ConfigSpace ``ConfigurationSpace`` with the space's conditions.

    A condition ``{parent: [values]}`` becomes an ``EqualsCondition`` (one value)
    or an ``InCondition``; several parents are joined with ``AndConjunction``.
    Fixed parameters are left out: Ray Tune adds them to every configuration.
    """
    from ConfigSpace import (
        AndConjunction,
        Categorical,
        ConfigurationSpace,
        EqualsCondition,
        Float,
        InCondition,
        Integer,
    )

    searched = _searched(space)
    configspace = ConfigurationSpace(seed=seed)
    hyperparameters: dict[str, Any] = {}
    for name, p in searched.items():
        if p.kind == "categorical":
            hyperparameters[name] = Categorical(name, _categorical_choices(p))
        elif p.kind == "int":
            bounds = (int(p.low or 0), int(p.high or 0))
            hyperparameters[name] = Integer(name, bounds, log=p.log)
        else:
            bounds_f = (float(p.low or 0), float(p.high or 0))
            hyperparameters[name] = Float(name, bounds_f, log=p.log)
    configspace.add(list(hyperparameters.values()))

    conditions: list[Any] = []
    for name, p in searched.items():
        parts: list[Any] = []
        for parent, allowed in p.condition.items():
            if parent not in hyperparameters:
                # A fixed parent: the space already checked that its one value
                # is allowed, so this part of the condition always holds.
                continue
            child, parent_hp = hyperparameters[name], hyperparameters[parent]
            if len(allowed) == 1:
                parts.append(EqualsCondition(child, parent_hp, allowed[0]))
            else:
                parts.append(InCondition(child, parent_hp, list(allowed)))
        if len(parts) == 1:
            conditions.append(parts[0])
        elif parts:
            conditions.append(AndConjunction(*parts))
    if conditions:
        configspace.add(conditions)
    return configspace


# ------------------------------------------------------------------ Optuna
class OptunaDefineByRun:
    """Optuna's define-by-run form of a space: conditions become ``if`` branches.

    An instance is a module-level object rather than a closure because Ray
    Tune pickles the searcher, and with it this function, for its experiment
    checkpoints.
    """

    def __init__(self, space: SearchSpace) -> None:
        # The space object itself (it pickles): an ad-hoc ensemble's derived
        # space has member-prefixed names that SearchSpace.from_dict refuses.
        self.space = space
        self.searched = _searched(space)
        self.constants = constant_values(space)

    def __call__(self, trial: Any) -> None:
        config: dict[str, Any] = dict(self.constants)
        for name, p in self.space.parameters.items():
            if name not in self.searched or not p.is_active(config):
                continue
            if p.kind == "categorical":
                value = trial.suggest_categorical(name, _categorical_choices(p))
            elif p.kind == "int":
                value = trial.suggest_int(
                    name, int(p.low or 0), int(p.high or 0), log=p.log
                )
            else:
                value = trial.suggest_float(
                    name, float(p.low or 0), float(p.high or 0), log=p.log
                )
            config[name] = value
        # Constants reach the trial through Ray Tune's param_space instead.
        return None
