"""The search on Ray Tune, on a small slice of digits."""

import time

import numpy as np
import pytest
from ray.tune import Tuner
from spaces import tiny_space

from deepens.errors import SearchError
from deepens.history import load_history
from deepens.library import Library
from deepens.search import SearchSettings, run_search
from deepens.space import SearchSpace

pytestmark = pytest.mark.slow


def test_diverging_trials_are_recorded_as_failed_and_the_search_goes_on(
    digits, tmp_path
):
    # A learning rate of 1e30 makes the loss NaN within the first batches.
    space = tiny_space(learning_rate={"type": "categorical", "choices": [1e30, 0.005]})
    settings = SearchSettings(
        max_trials=6, max_epochs=1, max_concurrent_trials=2, seed=3
    )

    summary = run_search(digits, space, tmp_path / "lib", settings)

    entries = Library.open(tmp_path / "lib").entries()
    failed = [e for e in entries if e.status == "failed"]
    trained = [e for e in entries if e.status == "finished"]
    assert failed and trained
    assert summary.trials_failed == len(failed)
    assert all("TrainingDiverged" in e.info["reason"] for e in failed)
    assert all(e.config["learning_rate"] == 1e30 for e in failed)
    assert all(e.config["learning_rate"] == 0.005 for e in trained)


def test_searching_again_extends_the_library_with_new_models(digits, tmp_path):
    settings = SearchSettings(max_trials=2, max_epochs=1, max_concurrent_trials=2)
    run_search(digits, tiny_space(), tmp_path / "lib", settings)
    library = Library.open(tmp_path / "lib")
    before = {e.model_id: e.files for e in library.entries()}

    run_search(digits, tiny_space(), tmp_path / "lib", settings)

    after = {e.model_id: e.files for e in library.entries()}
    assert len(before) == 2 and len(after) == 4
    assert {k: after[k] for k in before} == before
    # Each search has its own Tune experiment and is recorded as completed.
    first, second = load_history(tmp_path / "lib")
    assert first.completed and second.completed
    assert first.tune_folder != second.tune_folder
    assert first.optimizer_seed != second.optimizer_seed
    assert Tuner.can_restore(str(first.tune_path(tmp_path / "lib")))


def test_a_configuration_already_in_the_library_is_not_trained_again(digits, tmp_path):
    # Every parameter fixed: each search proposes the one configuration.
    config = tiny_space().sample(np.random.default_rng(0))
    config.update(block_type="next", cardinality=2)
    document = tiny_space().to_dict()
    document["parameters"] = {
        k: {"type": "fixed", "value": v} for k, v in config.items()
    }
    document["parameters"]["cardinality"]["condition"] = {"block_type": ["next"]}
    space = SearchSpace.from_dict(document)
    # Two trials of the one configuration at once: one trains, one replays.
    settings = SearchSettings(max_trials=2, max_epochs=1, max_concurrent_trials=2)
    first = run_search(digits, space, tmp_path / "lib", settings)
    library = Library.open(tmp_path / "lib")
    before = {e.model_id: e.files for e in library.entries()}

    summary = run_search(digits, space, tmp_path / "lib", settings)

    assert len(before) == 1 and first.trials_finished == summary.trials_finished == 2
    assert {e.model_id: e.files for e in library.entries()} == before
    (entry,) = library.entries()
    assert len(entry.info["attempts"]) == 1 and entry.info["node_id"]


def test_more_cpus_per_trial_than_the_cluster_has_fails_before_any_trial(
    digits, tmp_path
):
    settings = SearchSettings(max_trials=1, max_epochs=1, cpus_per_trial=64)

    with pytest.raises(
        SearchError,
        match=r"cpus_per_trial=64 \(--cpus-per-trial\) but the Ray cluster has",
    ):
        run_search(digits, tiny_space(), tmp_path / "lib", settings)


def test_a_gpu_request_without_a_gpu_fails_before_any_trial(digits, tmp_path):
    settings = SearchSettings(max_trials=1, max_epochs=1, gpus_per_trial=1)

    with pytest.raises(
        SearchError,
        match=r"gpus_per_trial=1 \(--gpus-per-trial\) but the Ray cluster has 0",
    ):
        run_search(digits, tiny_space(), tmp_path / "lib", settings)
    assert not (tmp_path / "lib").exists()  # nothing written


def test_a_batch_size_above_the_training_set_fails_before_anything(digits, tmp_path):
    space = tiny_space(batch_size={"type": "int", "low": 500, "high": 600})

    with pytest.raises(SearchError, match="exceeds the training set"):
        run_search(digits, space, tmp_path / "lib", SearchSettings(max_trials=1))
    assert not (tmp_path / "lib").exists()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"max_trials": 0}, r"max_trials \(--max-trials\) must be a whole number >= 1"),
        ({"grace_period": 5, "max_epochs": 2}, "grace_period"),
        ({"reduction_factor": 1}, "reduction_factor"),
        ({"optimizer": "gpp"}, "optimizer 'gpp' is unknown"),
        ({"time_budget_s": -1}, "time_budget_s"),
        ({"time_budget_s": 0}, r"time_budget_s \(--time-budget\) must be > 0; got 0"),
        ({"max_concurrent_trials": 0}, r"\(--max-concurrent\) must be >= 1; got 0"),
        ({"ad_hoc_members": 3}, "no ad-hoc search was asked for"),
        ({"cpus_per_trial": 0}, "cpus_per_trial"),
    ],
)
def test_invalid_settings_name_the_setting(settings, message):
    with pytest.raises(SearchError, match=message):
        SearchSettings(**settings).validate()


def test_an_unreachable_cluster_address_fails_fast_naming_it():
    import socket

    # A port nothing listens on: bind one, then close it.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    from deepens.search import _check_reachable

    started = time.monotonic()
    with pytest.raises(
        SearchError, match=f"cannot reach the Ray cluster at 127.0.0.1:{port}"
    ):
        _check_reachable(f"127.0.0.1:{port}")
    assert time.monotonic() - started < 10
    _check_reachable("auto")  # left to Ray
