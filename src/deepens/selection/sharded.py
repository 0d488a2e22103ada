"""Selection over validation samples sharded across Ray workers.

When the library's predictions are too large for one process, the samples are
split into contiguous shards, one Ray actor per shard. Each actor holds its slice
of every pruned model's true-class probabilities and full predictions and runs
the ordinary single-process backend on it. Each greedy step, the driver sends
the current ensemble and the candidates to all actors, adds their partial
statistics (fixed-point log sums, counts of correct predictions, per-class
counts) and decides. Every partial statistic is an int64, so the sum is exact
in any order and the sharded run picks exactly the ensembles the single-process
run picks.

The driver still reads the pruned models' arrays once to slice them; with
``np.memmap`` inputs that streams them from disk instead of holding them.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from deepens.selection._backend import ScoringBackend, ShardData, make_local_backend

_logger = logging.getLogger(__name__)


class ShardWorker:
    """One shard's backend; instantiated as a Ray actor by :class:`ShardedBackend`."""

    def __init__(self, data: ShardData, device: str) -> None:
        self._backend: ScoringBackend = make_local_backend(data, device)

    def candidate_statistics(
        self, metric: str, counts: np.ndarray, candidates: np.ndarray
    ) -> np.ndarray:
        """Partial statistics of each candidate ensemble on this shard."""
        return self._backend.candidate_statistics(metric, counts, candidates)

    def ensemble_statistics(self, metric: str, counts: np.ndarray) -> np.ndarray:
        """Partial statistics of the ensemble itself on this shard."""
        return self._backend.ensemble_statistics(metric, counts)


def shard_bounds(num_samples: int, shards: int) -> list[tuple[int, int]]:
    """Split ``range(num_samples)`` into ``shards`` contiguous, near-equal blocks."""
    edges = np.linspace(0, num_samples, shards + 1).round().astype(int)
    starts, stops = edges[:-1], edges[1:]
    return [(int(start), int(stop)) for start, stop in zip(starts, stops, strict=True)]


class ShardedBackend:
    """Sums the partial statistics of one Ray actor per shard of samples.

    Uses the running Ray instance; when none is running, starts a local one
    (quiet: only Ray's errors are logged), which stays up for later calls.
    """

    def __init__(self, data: ShardData, shards: int, device: str) -> None:
        import ray

        if not ray.is_initialized():
            _logger.info("Starting a local Ray instance for sharded selection")
            ray.init(
                include_dashboard=False,
                logging_level=logging.ERROR,
                log_to_driver=False,
            )
        worker_class: Any = ray.remote(ShardWorker)
        self._ray = ray
        self._workers = [
            worker_class.remote(data.sample_block(start, stop), device)
            for start, stop in shard_bounds(data.labels.shape[0], shards)
        ]

    def candidate_statistics(
        self, metric: str, counts: np.ndarray, candidates: np.ndarray
    ) -> np.ndarray:
        """Exact sum over shards of each candidate's partial statistics."""
        parts = self._ray.get(
            [
                worker.candidate_statistics.remote(metric, counts, candidates)
                for worker in self._workers
            ]
        )
        return np.sum(parts, axis=0)

    def ensemble_statistics(self, metric: str, counts: np.ndarray) -> np.ndarray:
        """Exact sum over shards of the ensemble's partial statistics."""
        parts = self._ray.get(
            [
                worker.ensemble_statistics.remote(metric, counts)
                for worker in self._workers
            ]
        )
        return np.sum(parts, axis=0)

    def close(self) -> None:
        """Stop the shard actors (the Ray instance itself is left running)."""
        for worker in self._workers:
            self._ray.kill(worker)
        self._workers = []
