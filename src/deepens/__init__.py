"""deepens: AutoML that trains a library of deep image classifiers, then builds
the most accurate ensemble for each inference budget from that one library."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from deepens.errors import (
    BudgetError,
    DataError,
    DeepensError,
    LibraryError,
    SearchError,
    SpaceError,
)

if TYPE_CHECKING:
    from deepens.estimator import EnsembleClassifier

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "BudgetError",
    "DataError",
    "DeepensError",
    "EnsembleClassifier",
    "LibraryError",
    "SearchError",
    "SpaceError",
    "__version__",
]


def __getattr__(name: str) -> Any:
    # The estimator pulls in scikit-learn; import it on first use so that
    # `import deepens` stays fast.
    if name == "EnsembleClassifier":
        from deepens.estimator import EnsembleClassifier

        return EnsembleClassifier
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
