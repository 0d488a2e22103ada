"""deepens: AutoML that trains a library of deep image classifiers, then builds
the most accurate ensemble for each inference budget from that one library."""

from __future__ import annotations

import logging

from deepens.errors import (
    BudgetError,
    DataError,
    DeepensError,
    LibraryError,
    SearchError,
    SpaceError,
)

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "BudgetError",
    "DataError",
    "DeepensError",
    "LibraryError",
    "SearchError",
    "SpaceError",
    "__version__",
]
