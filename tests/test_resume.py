"""Resuming a search whose driver was killed, and what --resume refuses."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from sessions import kill_session
from typer.testing import CliRunner

from deepens.claims import CLAIMS_FOLDER
from deepens.cli import app
from deepens.errors import SearchError
from deepens.history import SearchRecord, load_history, record_search
from deepens.library import Library

SOURCE = Path(__file__).resolve().parents[1] / "src"
DATA = [
    "--data",
    "digits",
    "--max-train-samples",
    "300",
    "--max-validation-samples",
    "100",
    "--max-test-samples",
    "100",
]


def _deepens(*args: str) -> subprocess.Popen:
    environment = {**os.environ, "PYTHONPATH": str(SOURCE)}
    environment.pop("RAY_ADDRESS", None)
    return subprocess.Popen(
        [sys.executable, "-m", "deepens.cli", *args],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _finished(library_path: Path) -> list:
    if not (library_path / "library.json").exists():
        return []
    return Library.open(library_path).entries(("finished",))


@pytest.mark.slow
def test_a_killed_search_resumes_without_training_any_model_twice(tmp_path):
    output = tmp_path / "run"
    library_path = output / "library"
    search = [
        "search",
        "--output",
        str(output),
        *DATA,
        "--optimizer",
        "random",
        "--max-trials",
        "6",
        "--max-epochs",
        "2",
        "--max-concurrent",
        "2",
        "--device",
        "cpu",
    ]
    first = _deepens(*search)
    try:
        deadline = time.monotonic() + 240
        while len(_finished(library_path)) < 2:
            assert first.poll() is None, first.communicate()[0]
            assert time.monotonic() < deadline, "the search trained nothing in time"
            time.sleep(0.2)
        os.killpg(first.pid, signal.SIGKILL)
    finally:
        kill_session(first.pid)
        first.communicate()
    before = {entry.model_id: entry for entry in _finished(library_path)}
    assert 2 <= len(before) < 6
    assert not load_history(library_path)[0].completed

    second = _deepens("search", "--output", str(output), "--resume", "--device", "cpu")
    try:
        printed, _ = second.communicate(timeout=400)
    finally:
        kill_session(second.pid)

    assert second.returncode == 0, printed
    library = Library.open(library_path)
    entries = library.entries()
    assert len(entries) == 6 and {e.status for e in entries} == {"finished"}
    (record,) = load_history(library_path)
    assert record.completed and len(record.runs) == 2
    for entry in entries:
        runs = [attempt["run"] for attempt in entry.info["attempts"]]
        assert len(runs) == len(set(runs)), f"{entry.model_id} trained twice in a run"
        assert entry.info["search"] == record.id and entry.is_measured
    for model_id, entry in before.items():
        # Finished before the kill: replayed, never trained again.
        assert library.get(model_id).info["attempts"] == entry.info["attempts"]
        assert library.get(model_id).files["weights"] == entry.files["weights"]
    assert not any((library_path / CLAIMS_FOLDER).iterdir())


@pytest.mark.slow
def test_ctrl_c_stops_the_search_unfinished_so_it_can_be_resumed(tmp_path):
    output = tmp_path / "run"
    library_path = output / "library"
    first = _deepens(
        "run",
        "--output",
        str(output),
        *DATA,
        "--optimizer",
        "random",
        "--max-trials",
        "8",
        "--max-epochs",
        "2",
        "--max-concurrent",
        "2",
        "--device",
        "cpu",
    )
    try:
        deadline = time.monotonic() + 240
        while len(_finished(library_path)) < 1:
            assert first.poll() is None, first.communicate()[0]
            assert time.monotonic() < deadline, "the search trained nothing in time"
            time.sleep(0.2)
        first.send_signal(signal.SIGINT)  # what Ctrl-C sends the driver
        printed, _ = first.communicate(timeout=120)
    finally:
        kill_session(first.pid)

    assert first.returncode == 130, printed
    assert "interrupted" in printed and "--resume" in printed
    assert "Traceback" not in printed
    (record,) = load_history(library_path)
    assert not record.completed
    # Stopped before measuring and selecting: nothing half-built was reported.
    assert not (output / "results.json").exists()


@pytest.fixture
def unfinished_library(tmp_path):
    """A run folder whose library records one search that never completed."""
    library = Library.create(
        tmp_path / "run" / "library",
        class_names=[str(c) for c in range(10)],
        validation_labels=np.arange(10),
        test_labels=np.arange(10),
    )
    from deepens.search import SearchSettings
    from deepens.space import SearchSpace

    settings = SearchSettings(optimizer="random", max_trials=6, max_epochs=2)
    record = SearchRecord(
        id="search-20260101-000000-abcd",
        tune_folder="tune/search-20260101-000000-abcd",
        settings=vars(settings),
        space=SearchSpace.load("small").to_dict(),
        optimizer_seed=0,
        origin={"data": "digits", "max_train_samples": 300},
        started=time.time(),
    )
    record_search(library.path, record)
    return library, record


def _cli(*args):
    return CliRunner().invoke(app, list(args))


def test_resume_where_there_is_no_library_names_the_folder(tmp_path):
    result = _cli("search", "--resume", "--output", str(tmp_path / "empty"))

    assert result.exit_code == 2
    assert "nothing to resume in" in result.output
    assert "empty" in result.output and "Traceback" not in result.output


def test_resume_after_every_search_completed_says_so(unfinished_library):
    library, record = unfinished_library
    record.completed = True
    record_search(library.path, record)

    result = _cli("run", "--resume", "--output", str(library.path.parent))

    assert result.exit_code == 2
    assert "searches are all completed" in result.output


def test_resume_with_a_damaged_record_of_searches_fails_clearly(unfinished_library):
    library, _ = unfinished_library
    (library.path / "searches.json").write_text('{"format": 1, "searches": [')

    result = _cli("search", "--resume", "--output", str(library.path.parent))

    assert result.exit_code == 2
    assert "searches.json is damaged" in result.output


def test_resume_refuses_an_option_that_would_change_the_search(unfinished_library):
    library, record = unfinished_library

    result = _cli(
        "search", "--resume", "--output", str(library.path.parent), "--max-trials", "9"
    )

    assert result.exit_code == 2
    assert f"--max-trials 9 differs from search {record.id}" in result.output


def _library_with(dataset, path, record):
    """A library of ``dataset`` that records ``record``, with its Tune folder."""
    library = Library.create(
        path,
        class_names=dataset.class_names,
        validation_labels=dataset.validation_labels.numpy(),
        test_labels=dataset.test_labels.numpy(),
    )
    record_search(library.path, record)
    record.tune_path(library.path).mkdir(parents=True)
    return library.path


@pytest.mark.slow
def test_run_search_resume_refuses_other_settings_and_a_damaged_tune_state(
    unfinished_library,
):
    from deepens.data import load_dataset
    from deepens.search import run_search

    library, record = unfinished_library
    dataset = load_dataset(
        "digits", max_train_samples=50, max_validation_samples=10, max_test_samples=10
    )
    space, settings = record.search_space(), record.search_settings()
    # The fixture's labels are not these; the check of settings comes first.
    settings.max_epochs = 3
    with pytest.raises(SearchError, match=r"max_epochs \(--max-epochs\) 3"):
        run_search(dataset, space, library.path, settings, resume=True)

    other = _library_with(dataset, library.path.parent.parent / "other", record)
    (record.tune_path(other) / "tuner.pkl").write_bytes(b"not a pickle")
    with pytest.raises(SearchError, match="cannot be restored"):
        run_search(dataset, space, other, record.search_settings(), resume=True)


def test_an_object_store_output_is_refused_before_anything(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    result = _cli("search", "--output", "s3://bucket/run")

    assert result.exit_code == 2
    assert "s3:// URI" in result.output and "mount the storage" in result.output
    assert list(tmp_path.iterdir()) == []


def test_resume_takes_an_ad_hoc_search_settings_from_its_record(unfinished_library):
    library, record = unfinished_library
    record.settings.update(ad_hoc="homogeneous", ad_hoc_members=2)
    record_search(library.path, record)

    result = _cli(
        "search",
        "--resume",
        "--output",
        str(library.path.parent),
        "--ad-hoc-members",
        "3",
    )

    assert result.exit_code == 2
    assert f"--ad-hoc-members 3 differs from search {record.id}" in result.output
    assert "(2)" in result.output
