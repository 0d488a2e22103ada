"""Exceptions that deepens raises for input it cannot use.

Every error a user can cause derives from :class:`DeepensError`, so the CLI can
print its one-line message and exit non-zero instead of showing a traceback.
Each also derives from the builtin type a Python user would expect to catch.
"""

from __future__ import annotations


class DeepensError(Exception):
    """Base class of all user-facing deepens errors."""


class DataError(DeepensError, ValueError):
    """A data set cannot be read or split; the message names the file or class."""


class SpaceError(DeepensError, ValueError):
    """A search space description is invalid; the message names the parameter."""


class BudgetError(DeepensError, ValueError):
    """No ensemble fits a budget; the message gives the cheapest cost."""


class LibraryError(DeepensError, ValueError):
    """A model library is missing, incomplete or holds invalid predictions."""


class SearchError(DeepensError, ValueError):
    """A search cannot start with the given settings."""
