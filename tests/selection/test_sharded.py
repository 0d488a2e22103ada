"""Samples sharded over Ray workers give exactly the single-process answers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from selection_helpers import random_library

from deepens.selection import METHODS, METRICS, prepare_library, select_from_library
from deepens.selection.sharded import shard_bounds

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_shard_bounds_cover_every_sample_once() -> None:
    assert shard_bounds(7, 3) == [(0, 2), (2, 5), (5, 7)]
    assert shard_bounds(4, 1) == [(0, 4)]


@pytest.mark.usefixtures("local_ray")
def test_two_shards_pick_exactly_the_single_process_ensembles() -> None:
    # 101 samples split 50 / 51; every method and metric, several budgets.
    predictions, labels, costs = random_library(16, 101, 5, seed=11)
    budgets = [1.0, 4.0, 20.0]
    with (
        prepare_library(predictions, labels, costs, pruning_fraction=0.5) as single,
        prepare_library(
            predictions, labels, costs, pruning_fraction=0.5, shards=2
        ) as sharded,
    ):
        for method in METHODS:
            for metric in METRICS:
                expected = select_from_library(
                    single, budgets, method=method, metric=metric
                )
                found = select_from_library(
                    sharded, budgets, method=method, metric=metric
                )
                # Equal dataclasses: same members, weights, cost and the very
                # same validation loss and error bits.
                assert found.ensembles == expected.ensembles, (method, metric)
                assert found.pareto == expected.pareto
