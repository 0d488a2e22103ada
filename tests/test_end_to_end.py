"""The main job on a small slice of digits, through the command line."""

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from deepens.cli import app
from deepens.ensemble import Ensemble
from deepens.library import Library

pytestmark = pytest.mark.slow

SLICE = [
    "--data",
    "digits",
    "--max-train-samples",
    "300",
    "--max-validation-samples",
    "150",
    "--max-test-samples",
    "150",
    "--max-trials",
    "4",
    "--max-epochs",
    "2",
    "--max-concurrent",
    "2",
    "--cost-threads",
    "1",
    "--device",
    "cpu",
]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("run")
    result = CliRunner().invoke(app, ["run", "--output", str(output), *SLICE])
    assert result.exit_code == 0, result.output
    return output, result.output


def test_run_fills_a_library_with_measured_models(finished_run):
    output, _ = finished_run

    library = Library.open(output / "library")
    entries = library.entries()

    assert len(entries) == 4
    for entry in entries:
        assert entry.status in ("finished", "stopped")
        assert 1 <= entry.epochs <= 2
        assert entry.cost_seconds > 0 and entry.flops > 0 and entry.parameters > 0
        assert entry.validation_probabilities().shape == (150, 10)
        assert entry.test_probabilities().dtype == np.float16


def test_run_reports_ensembles_within_every_budget(finished_run):
    output, printed = finished_run

    report = json.loads((output / "results.json").read_text())

    assert "Ensembles per budget" in printed and "best single model" in printed
    assert {row["method"] for row in report["ensembles"]} == {"smobf", "greedy"}
    assert len(report["budgets"]) == 4
    for row in report["ensembles"]:
        assert 0 < row["cost"] <= row["budget"] * (1 + 1e-9)
        assert row["members"] and abs(sum(row["weights"]) - 1) < 1e-6
        assert 0 <= row["test_error"] <= 1
    assert (output / "pareto.png").stat().st_size > 10_000


def test_select_answers_a_new_budget_without_training(finished_run):
    output, _ = finished_run
    library = Library.open(output / "library")
    cheapest = min(entry.flops for entry in library.entries())
    before = {e.model_id: e.files for e in library.entries()}

    result = CliRunner().invoke(
        app,
        [
            "select",
            "--output",
            str(output),
            "--cost-unit",
            "flops",
            "--budget",
            str(cheapest * 10),
            "--method",
            "smobf",
        ],
    )

    assert result.exit_code == 0, result.output
    report = json.loads((output / "results.json").read_text())
    assert report["cost_unit"] == "flops" and report["budgets"] == [cheapest * 10]
    assert report["ensembles"][0]["cost"] <= cheapest * 10
    assert {e.model_id: e.files for e in library.entries()} == before


def test_a_budget_below_the_cheapest_model_names_its_cost(finished_run):
    output, _ = finished_run

    result = CliRunner().invoke(
        app,
        [
            "select",
            "--output",
            str(output),
            "--cost-unit",
            "parameters",
            "--budget",
            "1",
        ],
    )

    assert result.exit_code == 2
    assert "cheapest" in result.output and "Traceback" not in result.output


def test_predict_writes_one_csv_row_per_input(finished_run, tmp_path):
    output, _ = finished_run
    ensemble_folder = sorted((output / "ensembles").iterdir())[-1]
    rng = np.random.default_rng(0)
    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, x=rng.integers(0, 256, (7, 8, 8), dtype=np.uint8))
    target = tmp_path / "predictions.csv"

    result = CliRunner().invoke(
        app,
        [
            "predict",
            str(ensemble_folder),
            str(inputs),
            "--output",
            str(target),
            "--device",
            "cpu",
        ],
    )

    assert result.exit_code == 0, result.output
    rows = list(csv.reader(target.open()))
    assert rows[0][:2] == ["input", "predicted_class"] and len(rows) == 8
    probabilities = np.array([[float(v) for v in row[2:]] for row in rows[1:]])
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-4)
    ensemble = Ensemble.load(ensemble_folder)
    assert [row[1] for row in rows[1:]] == [
        ensemble.class_names[i] for i in probabilities.argmax(axis=1)
    ]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["run", "--data", "/no/such/folder"], "/no/such/folder"),
        (["run", "--optimizer", "gradient-descent"], "optimizer 'gradient-descent'"),
        (["run", "--max-trials", "0"], "max_trials"),
        (["run", "--space", "nope.json"], "nope.json"),
        (["select", "--output", "/no/such/run"], "not a deepens library"),
        (["predict", "/no/such/ensemble", "x.png"], "not a saved ensemble"),
    ],
)
def test_bad_input_gets_a_one_line_error_not_a_traceback(arguments, message, tmp_path):
    result = CliRunner().invoke(
        app,
        [*arguments, "--output", str(tmp_path / "out")]
        if arguments[0] == "run"
        else arguments,
    )

    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def _copy_run(finished_run, tmp_path):
    import shutil

    output, _ = finished_run
    copy = tmp_path / "copy"
    shutil.copytree(output, copy)
    return copy


@pytest.mark.parametrize("damage", ["delete", "truncate", "text"])
def test_a_damaged_ensemble_gets_a_one_line_error(finished_run, tmp_path, damage):
    copy = _copy_run(finished_run, tmp_path)
    folder = sorted((copy / "ensembles").iterdir())[-1]
    weights = sorted((folder / "members").iterdir())[0]
    if damage == "delete":
        weights.unlink()
    elif damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:100])
    else:
        weights.write_text("not weights")
    inputs = tmp_path / "x.npz"
    np.savez(inputs, x=np.zeros((2, 8, 8), dtype=np.uint8))

    result = CliRunner().invoke(
        app,
        [
            "predict",
            str(folder),
            str(inputs),
            "-o",
            str(tmp_path / "p.csv"),
            "--device",
            "cpu",
        ],
    )

    assert result.exit_code == 2, result.output
    assert weights.stem in result.output and "Traceback" not in result.output


def test_select_skips_a_model_whose_predictions_are_cut(finished_run, tmp_path):
    copy = _copy_run(finished_run, tmp_path)
    entry = Library.open(copy / "library").entries()[0]
    array = entry.folder / entry.files["validation"]
    array.write_bytes(array.read_bytes()[:90])

    result = CliRunner().invoke(
        app,
        [
            "select",
            "--output",
            str(copy),
            "--cost-unit",
            "flops",
            "--pruning-fraction",
            "1",
        ],
    )

    assert result.exit_code == 0, result.output
    assert f"skipping model '{entry.model_id}'" in result.output
    report = json.loads((copy / "results.json").read_text())
    assert report["library_size"] == 3


def test_select_on_a_library_without_labels_says_so(finished_run, tmp_path):
    copy = _copy_run(finished_run, tmp_path)
    (copy / "library" / "labels.npz").unlink()

    result = CliRunner().invoke(app, ["select", "--output", str(copy)])

    assert result.exit_code == 2 and "labels.npz is missing" in result.output


def test_predict_into_a_folder_is_refused(finished_run, tmp_path):
    output, _ = finished_run
    folder = sorted((output / "ensembles").iterdir())[-1]

    result = CliRunner().invoke(
        app, ["predict", str(folder), str(folder), "-o", str(tmp_path)]
    )

    assert result.exit_code == 2 and "is a folder" in result.output


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["members"][0].update(weight="a"), "could not convert"),
        (lambda d: d.update(members=[]), "lists no members"),
        (lambda d: d.update(combiner="median"), "combiner 'median'"),
        (lambda d: d.update(format=2), "format 2"),
        (
            lambda d: d["members"][0].update(model_id="../../etc/passwd"),
            "not a plain file name",
        ),
    ],
)
def test_a_hand_edited_ensemble_json_is_refused(finished_run, tmp_path, edit, message):
    copy = _copy_run(finished_run, tmp_path)
    folder = sorted((copy / "ensembles").iterdir())[-1]
    document = json.loads((folder / "ensemble.json").read_text())
    edit(document)
    (folder / "ensemble.json").write_text(json.dumps(document))

    result = CliRunner().invoke(
        app, ["predict", str(folder), str(folder), "-o", str(tmp_path / "p.csv")]
    )

    assert result.exit_code == 2, result.output
    assert "ensemble.json is damaged" in result.output and message in result.output
