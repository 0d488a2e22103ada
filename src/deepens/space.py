"""The hyperparameter search space, as data.

A space is a JSON document: a name, a description and a mapping from parameter
name to a domain. Domains are ``float`` and ``int`` ranges (optionally on a log
scale), ``categorical`` choices, or a plain JSON value for a fixed setting. A
domain may carry a ``condition`` such as ``{"block_type": ["next"]}``: the
parameter then exists only when that other parameter takes one of the listed
values. Two presets ship with deepens: ``paper`` (the paper's Table 3) and
``small`` (the same shape, sized for a CPU); ``deepens space show small`` prints
one to copy and edit.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, cast

import numpy as np

from deepens.errors import SpaceError

PRESETS = ("paper", "small")
KINDS = ("float", "int", "categorical", "fixed")

#: Every parameter the model builder, the optimiser and the augmentation read.
REQUIRED = (
    "learning_rate",
    "batch_size",
    "l2",
    "block_type",
    "activation",
    "stem_filters",
    "filter_multiplier",
    "blocks_stage1",
    "blocks_stage2",
    "blocks_stage3",
    "blocks_stage4",
    "zoom",
    "translation",
    "shear",
    "channel_shift",
    "rotation",
)
BLOCK_TYPES = ("v1", "v2", "next")
ACTIVATIONS = ("tanh", "relu", "elu")


@dataclass(frozen=True)
class Parameter:
    """One dimension of the search space.

    Attributes
    ----------
    name : str
        The parameter's name, as the model builder reads it.
    kind : str
        ``"float"``, ``"int"``, ``"categorical"`` or ``"fixed"``.
    low, high : float or None
        Inclusive bounds of a numeric range.
    log : bool
        Whether a numeric range is searched on a log scale.
    choices : tuple
        The values of a categorical parameter, or the one value of a fixed one.
    condition : dict
        ``{other_parameter: allowed_values}``; empty when always active.
    """

    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()
    condition: dict[str, tuple[Any, ...]] = field(default_factory=dict)

    def is_active(self, config: Mapping[str, Any]) -> bool:
        """Whether this parameter exists for the given (partial) configuration."""
        return all(
            config.get(other) in allowed for other, allowed in self.condition.items()
        )

    def sample(self, rng: np.random.Generator) -> Any:
        """Draw one value uniformly (log-uniformly where ``log``)."""
        if self.kind == "fixed":
            return self.choices[0]
        if self.kind == "categorical":
            return self.choices[int(rng.integers(len(self.choices)))]
        low, high = float(self.low), float(self.high)  # type: ignore[arg-type]
        if self.kind == "int":
            if self.log:
                value = math.exp(rng.uniform(math.log(low), math.log(high + 1)))
                return int(min(math.floor(value), high))
            return int(rng.integers(int(low), int(high) + 1))
        if self.log:
            return float(math.exp(rng.uniform(math.log(low), math.log(high))))
        return float(rng.uniform(low, high))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of this domain."""
        if self.kind == "fixed":
            return {"type": "fixed", "value": self.choices[0]}
        out: dict[str, Any] = {"type": self.kind}
        if self.kind == "categorical":
            out["choices"] = list(self.choices)
        else:
            out.update(low=self.low, high=self.high)
            if self.log:
                out["log"] = True
        if self.condition:
            out["condition"] = {k: list(v) for k, v in self.condition.items()}
        return out


class SearchSpace:
    """A named, declarative search space that every optimiser translates.

    Parameters
    ----------
    name : str
        A label for reports.
    parameters : mapping of str to Parameter
        The dimensions, in the order they are sampled.
    description : str
        Free text.
    """

    def __init__(
        self, name: str, parameters: Mapping[str, Parameter], description: str = ""
    ) -> None:
        self.name = name
        self.description = description
        self.parameters = dict(parameters)
        self._check_conditions()

    # ----------------------------------------------------------- construction
    @classmethod
    def from_dict(
        cls, document: Mapping[str, Any], source: str = "space"
    ) -> SearchSpace:
        """Build a space from its JSON form, validating every domain."""
        if not isinstance(document, Mapping) or "parameters" not in document:
            raise SpaceError(
                f"{source}: a space is a JSON object with a 'parameters' mapping; "
                "run 'deepens space show small' for an example"
            )
        raw = document["parameters"]
        if not isinstance(raw, Mapping) or not raw:
            raise SpaceError(f"{source}: 'parameters' must be a non-empty mapping")

        parameters = {
            name: _parse_domain(name, domain, source) for name, domain in raw.items()
        }
        missing = [name for name in REQUIRED if name not in parameters]
        if missing:
            raise SpaceError(
                f"{source}: missing parameter(s) {', '.join(missing)}; every space "
                f"needs {', '.join(REQUIRED)} (a typo in a name also shows up here)"
            )
        unknown = [
            name for name in parameters if name not in REQUIRED + ("cardinality",)
        ]
        if unknown:
            raise SpaceError(
                f"{source}: unknown parameter(s) {', '.join(unknown)}; "
                f"known parameters are {', '.join(REQUIRED + ('cardinality',))}"
            )
        space = cls(
            str(document.get("name", source)),
            parameters,
            document.get("description", ""),
        )
        space._check_values()
        return space

    @classmethod
    def load(cls, name_or_path: str | os.PathLike[str]) -> SearchSpace:
        """Load a preset by name (``paper``, ``small``) or a space from a JSON file."""
        text = str(name_or_path)
        if text in PRESETS:
            document = json.loads(
                resources.files("deepens.presets").joinpath(f"{text}.json").read_text()
            )
            return cls.from_dict(document, source=f"preset '{text}'")

        path = Path(text)
        if not path.is_file():
            raise SpaceError(
                f"search space '{text}' is neither a preset ({', '.join(PRESETS)}) "
                "nor an existing JSON file"
            )
        try:
            document = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise SpaceError(
                f"{path}: not a readable JSON space file ({error})"
            ) from None
        return cls.from_dict(document, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, which :meth:`from_dict` reads back."""
        return {
            "name": self.name,
            "description": self.description,
            "parameters": {name: p.to_dict() for name, p in self.parameters.items()},
        }

    # ------------------------------------------------------------------ use
    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        """Draw one configuration; inactive conditional parameters are left out."""
        config: dict[str, Any] = {}
        for name, parameter in self.parameters.items():
            if parameter.is_active(config):
                config[name] = parameter.sample(rng)
        return config

    def canonical(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """Keep only the space's active parameters, rounding integer ones.

        Optimisers that cannot express conditions propose every parameter; the
        canonical form drops the inactive ones so that two proposals that train
        the same network compare equal.
        """
        out: dict[str, Any] = {}
        for name, parameter in self.parameters.items():
            if not parameter.is_active(out):
                continue
            if name not in config:
                raise SpaceError(f"configuration lacks active parameter '{name}'")
            value = config[name]
            if parameter.kind == "int":
                value = int(round(float(value)))
            elif parameter.kind == "float":
                value = float(value)
            out[name] = value
        return out

    def conditional_parameters(self) -> list[str]:
        """Names of parameters that exist only under a condition."""
        return [name for name, p in self.parameters.items() if p.condition]

    # ----------------------------------------------------------- validation
    def _check_conditions(self) -> None:
        names = list(self.parameters)
        for position, (name, parameter) in enumerate(self.parameters.items()):
            for other, allowed in parameter.condition.items():
                if other not in self.parameters or names.index(other) > position:
                    raise SpaceError(
                        f"parameter '{name}': its condition names '{other}', "
                        "which must be a parameter listed before it"
                    )
                domain = self.parameters[other]
                if domain.kind not in ("categorical", "fixed"):
                    raise SpaceError(
                        f"parameter '{name}': a condition may only name a categorical "
                        f"parameter, and '{other}' is {domain.kind}"
                    )
                bad = [value for value in allowed if value not in domain.choices]
                if bad:
                    raise SpaceError(
                        f"parameter '{name}': condition value(s) {bad} are not choices "
                        f"of '{other}' ({list(domain.choices)})"
                    )

    def _check_values(self) -> None:
        """Domain-specific checks: values the model builder can actually use."""
        checks = {
            "block_type": set(BLOCK_TYPES),
            "activation": set(ACTIVATIONS),
        }
        for name, allowed in checks.items():
            bad = [c for c in self.parameters[name].choices if c not in allowed]
            if bad:
                raise SpaceError(
                    f"parameter '{name}': unknown value(s) {bad}; allowed are "
                    f"{sorted(allowed)}"
                )
        minimums = {
            "learning_rate": 0.0,
            "batch_size": 1,
            "l2": 0.0,
            "stem_filters": 1,
            "filter_multiplier": 1,
            "blocks_stage1": 1,
            "blocks_stage2": 0,
            "blocks_stage3": 0,
            "blocks_stage4": 0,
            "cardinality": 1,
        }
        for name, minimum in minimums.items():
            parameter = self.parameters.get(name)
            if parameter is None:
                continue
            lowest = (
                parameter.low
                if parameter.kind in ("float", "int")
                else min(parameter.choices)
            )
            if (
                lowest is None
                or lowest < minimum
                or (name == "learning_rate" and lowest <= 0)
            ):
                raise SpaceError(
                    f"parameter '{name}': values must be at least {minimum}"
                    f"{' and positive' if name == 'learning_rate' else ''}; "
                    f"got {lowest}"
                )


def _parse_domain(name: str, domain: Any, source: str) -> Parameter:
    if not isinstance(domain, Mapping):
        return Parameter(name, "fixed", choices=(domain,))

    kind = domain.get("type")
    if kind not in KINDS:
        raise SpaceError(
            f"{source}: parameter '{name}' has type {kind!r}; allowed types are "
            f"{', '.join(KINDS)}"
        )
    condition = _parse_condition(name, domain.get("condition"), source)

    if kind == "fixed":
        if "value" not in domain:
            raise SpaceError(f"{source}: fixed parameter '{name}' needs a 'value'")
        return Parameter(name, "fixed", choices=(domain["value"],), condition=condition)
    if kind == "categorical":
        choices = domain.get("choices")
        if not isinstance(choices, list) or not choices:
            raise SpaceError(
                f"{source}: categorical parameter '{name}' needs a non-empty "
                "'choices' list"
            )
        return Parameter(name, kind, choices=tuple(choices), condition=condition)

    raw_low, raw_high = domain.get("low"), domain.get("high")
    if not all(
        isinstance(v, int | float) and not isinstance(v, bool)
        for v in (raw_low, raw_high)
    ):
        raise SpaceError(
            f"{source}: {kind} parameter '{name}' needs numeric 'low' and 'high'; "
            f"got low={raw_low!r}, high={raw_high!r}"
        )
    low, high = float(cast(float, raw_low)), float(cast(float, raw_high))
    if low > high:
        raise SpaceError(
            f"{source}: parameter '{name}' has low {low} above high {high}; swap them"
        )
    if kind == "int" and (int(low) != low or int(high) != high):
        raise SpaceError(
            f"{source}: int parameter '{name}' needs whole-number bounds; "
            f"got {low} and {high}"
        )
    log = bool(domain.get("log", False))
    if log and low <= 0:
        raise SpaceError(
            f"{source}: parameter '{name}' is on a log scale, so 'low' must be "
            f"positive; got {low}"
        )
    extra = set(domain) - {"type", "low", "high", "log", "condition"}
    if extra:
        raise SpaceError(
            f"{source}: parameter '{name}' has unknown key(s) {sorted(extra)}; "
            "allowed keys are type, low, high, log, condition"
        )
    if kind == "int":
        return Parameter(
            name, kind, low=int(low), high=int(high), log=log, condition=condition
        )
    return Parameter(name, kind, low=low, high=high, log=log, condition=condition)


def _parse_condition(name: str, raw: Any, source: str) -> dict[str, tuple[Any, ...]]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping) or not all(
        isinstance(v, list) for v in raw.values()
    ):
        raise SpaceError(
            f"{source}: parameter '{name}': a condition is a mapping from a "
            'parameter to a list of values, e.g. {"block_type": ["next"]}'
        )
    return {other: tuple(values) for other, values in raw.items()}
