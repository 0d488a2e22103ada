from pathlib import Path

import numpy as np
import pytest
import torch

from deepens import library as library_module
from deepens.errors import LibraryError
from deepens.library import Library, local_library_path


@pytest.fixture
def library(tmp_path):
    return Library.create(
        tmp_path / "lib",
        class_names=["a", "b"],
        validation_labels=np.array([0, 1, 1]),
        test_labels=np.array([1, 0]),
        channels=1,
        image_size=(4, 4),
    )


def _probabilities():
    return np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])


def test_entry_round_trip_with_float16_predictions_and_scores(library):
    library.write(
        "m1",
        config={"x": 1},
        status="finished",
        learning_curve=[0.7, 0.5],
        state_dict={"w": torch.ones(2)},
        validation_probabilities=_probabilities(),
        parameters=10,
        flops=99,
    )

    entry = Library.open(library.path).get("m1")

    assert entry.validation_probabilities().dtype == np.float16
    assert entry.epochs == 2 and entry.parameters == 10 and entry.cost("flops") == 99
    # True-class probabilities 0.9, 0.8, 0.5; the 0.5/0.5 row's argmax is class 0.
    assert entry.validation_loss == pytest.approx(
        -np.mean(np.log([0.9, 0.8, 0.5])), rel=1e-3
    )
    assert entry.validation_error == pytest.approx(1 / 3)
    assert entry.cost("seconds") is None and not entry.is_measured


def test_update_keeps_unchanged_files_and_removes_replaced_ones(library):
    library.write(
        "m1",
        config={},
        status="training",
        state_dict={"w": torch.ones(1)},
        validation_probabilities=_probabilities(),
    )
    first = library.get("m1")

    library.write(
        "m1",
        config={},
        status="finished",
        test_probabilities=np.array([[0.1, 0.9], [0.6, 0.4]]),
        cost_seconds=0.5,
    )
    second = library.get("m1")

    assert second.files["weights"] == first.files["weights"]
    assert second.files["validation"] == first.files["validation"]
    assert second.is_measured and second.status == "finished"
    assert sorted(p.name for p in second.folder.iterdir()) == sorted(
        ["entry.json", *second.files.values()]
    )


def test_a_crash_while_committing_leaves_the_previous_entry(library, monkeypatch):
    library.write(
        "m1",
        config={"v": 1},
        status="training",
        validation_probabilities=_probabilities(),
    )

    def crash(path, document):
        raise OSError("disk full")

    monkeypatch.setattr(library_module, "_write_json_atomically", crash)
    with pytest.raises(OSError):
        library.write(
            "m1",
            config={"v": 2},
            status="finished",
            validation_probabilities=_probabilities() * 0 + 0.5,
        )
    monkeypatch.undo()

    entry = library.get("m1")
    assert entry.config == {"v": 1} and entry.status == "training"
    np.testing.assert_allclose(
        entry.validation_probabilities(), _probabilities(), atol=1e-3
    )
    assert library.collect_garbage() == 1  # the orphaned new array


def test_half_written_entry_is_invisible(library):
    folder = library.entry_folder("ghost")
    folder.mkdir(parents=True)
    (folder / "validation-1234.npy").write_bytes(b"partial")

    assert library.get("ghost") is None and library.entries() == []


def test_reopening_for_other_data_is_refused(library):
    with pytest.raises(LibraryError, match="already holds a library for other data"):
        Library.create(
            library.path,
            class_names=["a", "b"],
            validation_labels=np.array([1, 1, 1]),
            test_labels=None,
        )


def test_opening_a_folder_that_is_not_a_library(tmp_path):
    with pytest.raises(LibraryError, match="not a deepens library"):
        Library.open(tmp_path)


def test_unknown_cost_unit_and_status(library):
    entry = library.write("m1", config={}, status="finished")

    with pytest.raises(LibraryError, match="cost unit 'watts'"):
        entry.cost("watts")
    with pytest.raises(LibraryError, match="status 'done'"):
        library.write("m1", config={}, status="done")


@pytest.mark.parametrize(
    ("location", "path"),
    [
        ("/shared/runs/lib", "/shared/runs/lib"),
        ("relative/lib", "relative/lib"),
        ("file:///shared/runs/my%20lib", "/shared/runs/my lib"),
        ("file://localhost/shared/lib", "/shared/lib"),
        (Path("file:///shared/lib"), "/shared/lib"),  # pathlib drops a slash
    ],
)
def test_a_library_location_is_a_path_or_a_file_uri(location, path):
    assert local_library_path(location) == Path(path)


@pytest.mark.parametrize(
    "location", ["s3://bucket/lib", "gs://bucket/lib", Path("s3://bucket/lib")]
)
def test_an_object_store_library_location_says_to_mount_it(location):
    with pytest.raises(LibraryError, match=r"is a (s3|gs):// URI.*mount the storage"):
        local_library_path(location)
