"""One trial, called directly (no Ray): failures, claims and replays."""

import threading
import time
import weakref

import numpy as np
import pytest
import torch

from deepens import trial as trial_module
from deepens.claims import CLAIMS_FOLDER
from deepens.data import load_dataset
from deepens.library import Library
from deepens.space import SearchSpace
from deepens.trial import TrialFailed, TrialJob, model_id_for, train_trial

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def digits():
    return load_dataset(
        "digits",
        max_train_samples=120,
        max_validation_samples=60,
        max_test_samples=60,
    )


@pytest.fixture
def space():
    document = SearchSpace.load("small").to_dict()
    document["parameters"].update(
        stem_filters=4,
        filter_multiplier=4,
        blocks_stage1=1,
        blocks_stage2=0,
        blocks_stage3=0,
        blocks_stage4=0,
    )
    return SearchSpace.from_dict(document)


@pytest.fixture
def job(digits, space, tmp_path):
    library = Library.create(
        tmp_path / "lib",
        class_names=digits.class_names,
        validation_labels=digits.validation_labels.numpy(),
        test_labels=digits.test_labels.numpy(),
    )
    return TrialJob(
        library_path=str(library.path),
        space=space.to_dict(),
        max_epochs=1,
        search_id="search-test",
        run_id="run-1",
    )


@pytest.fixture
def reports(monkeypatch):
    """What trials report to Ray Tune, by thread."""
    reported = []
    monkeypatch.setattr(
        "ray.tune.report",
        lambda metrics: reported.append((threading.get_ident(), dict(metrics))),
    )
    return reported


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate "
            "memory: you tried to allocate 98765432100 bytes. Error code 12"
        ),
        MemoryError(),
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
    ],
    ids=["cpu-allocator", "memory-error", "cuda"],
)
def test_a_trial_out_of_memory_is_a_failed_entry_and_its_model_is_freed(
    digits, space, job, reports, monkeypatch, tmp_path, error
):
    models = []

    def out_of_memory(model, *args, **kwargs):
        models.append(weakref.ref(model))
        raise error

    monkeypatch.setattr(trial_module, "train_epoch", out_of_memory)
    config = space.sample(np.random.default_rng(0))

    with pytest.raises(TrialFailed, match=type(error).__name__):
        train_trial(config, dataset=digits, job=job)

    (entry,) = Library.open(job.library_path).entries()
    assert entry.status == "failed"
    assert entry.info["reason"].startswith(type(error).__name__)
    assert [a["run"] for a in entry.info["attempts"]] == ["run-1"]
    assert models and models[0]() is None
    assert reports == []
    assert not any((tmp_path / "lib" / CLAIMS_FOLDER).iterdir())


def test_an_error_that_is_not_about_memory_is_not_recorded_as_a_failure(
    digits, space, job, reports, monkeypatch
):
    def broken(*args, **kwargs):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(trial_module, "train_epoch", broken)

    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        train_trial(space.sample(np.random.default_rng(0)), dataset=digits, job=job)

    library = Library.open(job.library_path)
    assert library.entries() == []
    assert not any((library.path / CLAIMS_FOLDER).iterdir())


def test_two_trials_of_one_configuration_at_once_train_it_once(
    digits, space, job, reports, monkeypatch
):
    trainings = []
    train = trial_module._train

    def slow_train(*args, **kwargs):
        trainings.append(threading.get_ident())
        time.sleep(1.5)  # the other trial arrives while this one trains
        train(*args, **kwargs)

    monkeypatch.setattr(trial_module, "_train", slow_train)
    config = space.sample(np.random.default_rng(1))
    threads = [
        threading.Thread(
            target=train_trial, args=(config,), kwargs=dict(dataset=digits, job=job)
        )
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
        time.sleep(0.2)
    for thread in threads:
        thread.join(timeout=120)

    library = Library.open(job.library_path)
    (entry,) = library.entries()
    assert len(trainings) == 1
    assert entry.status == "finished" and len(entry.info["attempts"]) == 1
    assert entry.model_id == model_id_for(space.canonical(config), 0)
    # Both trials reported the one curve: the second replayed the first's entry.
    assert {thread for thread, _ in reports} == {t.ident for t in threads}
    assert len({m["validation_loss"] for _, m in reports}) == 1
    assert not any((library.path / CLAIMS_FOLDER).iterdir())


def test_a_claim_left_by_a_killed_run_of_the_same_search_is_taken_over(
    digits, space, job, reports, tmp_path
):
    config = space.sample(np.random.default_rng(2))
    model_id = model_id_for(space.canonical(config), 0)
    claims = tmp_path / "lib" / CLAIMS_FOLDER
    claims.mkdir()
    # A live process (this one) on this host, but an earlier run of the search.
    (claims / f"{model_id}.json").write_text(
        '{"search": "search-test", "run": "run-0", "hostname": "elsewhere", '
        '"pid": 1, "token": "old"}'
    )

    train_trial(config, dataset=digits, job=job)

    entry = Library.open(job.library_path).get(model_id)
    assert entry.status == "finished"
    assert not any(claims.iterdir())
