"""Validation error ``E`` of candidate ensembles, cached per ensemble.

Selection runs many greedy trajectories over one library (every trade-off weight
of every budget), and they share prefixes: the first step is the same for all of
them. The cache maps an ensemble (its pick counts) to the errors of its
candidate extensions, so a shared step is scored once. Scores depend on the
ensemble alone, never on a budget, so the cache is valid across budgets.
"""

from __future__ import annotations

import time
from collections import OrderedDict

import numpy as np

from deepens.selection._backend import ScoringBackend
from deepens.selection.metrics import (
    RESOLUTION,
    cross_entropy_from_sums,
    error_rate_from_counts,
    macro_f1_error_from_counts,
)

# Each entry holds one float64 per pruned model; 4,096 entries of 200 models
# is 6.5 MB.
_CACHE_ENTRIES = 4096


class CandidateEvaluator:
    """Turns a backend's additive statistics into errors for one metric.

    Parameters
    ----------
    backend
        Where the statistics are computed (numpy, torch or sharded).
    metric
        One of :data:`~deepens.selection.metrics.METRICS`.
    num_models
        Number of pruned models ``K``.
    num_samples
        Number of validation samples ``N`` over all shards.
    class_counts
        ``(C,)`` validation samples per class, for macro-F1.
    """

    def __init__(
        self,
        backend: ScoringBackend,
        metric: str,
        num_models: int,
        num_samples: int,
        class_counts: np.ndarray,
    ) -> None:
        self._backend = backend
        self._metric = metric
        self._num_models = num_models
        self._num_samples = num_samples
        self._class_counts = class_counts
        self._cache: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self.resolution = RESOLUTION[metric]
        self.requested = 0
        self.computed = 0
        self.scoring_seconds = 0.0

    def candidate_errors(
        self, counts: np.ndarray, candidates: np.ndarray
    ) -> np.ndarray:
        """Error of ``counts + one pick of c`` for each candidate ``c``.

        Parameters
        ----------
        counts
            ``(K,)`` int64 pick counts of the current ensemble (all zero: empty).
        candidates
            Positions of the candidate models, ascending.

        Returns
        -------
        numpy.ndarray
            ``(len(candidates),)`` errors, lower is better.
        """
        key = counts.tobytes()
        errors = self._cache.pop(key, None)
        if errors is None:
            errors = np.full(self._num_models, np.nan)
        missing = candidates[np.isnan(errors[candidates])]
        if missing.size:
            start = time.perf_counter()
            statistics = self._backend.candidate_statistics(
                self._metric, counts, missing
            )
            errors[missing] = self._errors(statistics, int(counts.sum()) + 1)
            self.scoring_seconds += time.perf_counter() - start
        self._remember(key, errors)
        self.requested += len(candidates)
        self.computed += len(missing)
        return errors[candidates]

    def ensemble_error(self, counts: np.ndarray) -> float:
        """Error of the ensemble given by ``counts`` itself."""
        statistics = self._backend.ensemble_statistics(self._metric, counts)
        return float(self._errors(statistics, int(counts.sum())))

    def _errors(self, statistics: np.ndarray, picks: int) -> np.ndarray:
        if self._metric == "cross_entropy":
            return cross_entropy_from_sums(statistics, picks, self._num_samples)
        if self._metric == "error_rate":
            return error_rate_from_counts(statistics, self._num_samples)
        return macro_f1_error_from_counts(
            statistics[..., 0, :], statistics[..., 1, :], self._class_counts
        )

    def _remember(self, key: bytes, errors: np.ndarray) -> None:
        self._cache[key] = errors
        if len(self._cache) > _CACHE_ENTRIES:
            self._cache.popitem(last=False)
