"""The error raised for selection settings that cannot be used."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from deepens.errors import DeepensError


class SelectionError(DeepensError, ValueError):
    """A selection setting is invalid.

    The message names the parameter, the allowed values and the value received.
    """


def invalid_setting(parameter: str, allowed: str, received: object) -> SelectionError:
    """Build the error for ``parameter`` holding ``received`` instead of ``allowed``."""
    if isinstance(received, np.generic):
        # numpy 2 writes np.float64(0.0); the user typed 0.0.
        received = received.item()
    return SelectionError(f"{parameter} must be {allowed}; received {received!r}")


def one_of(choices: Iterable[str]) -> str:
    """Describe a closed set of string choices for an error message."""
    return "one of " + ", ".join(repr(choice) for choice in choices)
