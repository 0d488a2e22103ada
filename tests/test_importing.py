import json

import numpy as np
import pytest
from typer.testing import CliRunner

from deepens.cli import app
from deepens.errors import LibraryError
from deepens.importing import import_predictions
from deepens.library import Library
from deepens.workflow import select


def _softmax(logits):
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


@pytest.fixture
def manifest(tmp_path):
    rng = np.random.default_rng(0)
    validation = rng.integers(0, 3, 60)
    test = rng.integers(0, 3, 40)
    np.save(tmp_path / "val_labels.npy", validation)
    np.save(tmp_path / "test_labels.npy", test)
    models = []
    for index, cost in enumerate([1.0, 2.0, 0.5]):
        val = _softmax(rng.normal(size=(60, 3)) + 3 * np.eye(3)[validation])
        tst = _softmax(rng.normal(size=(40, 3)) + 3 * np.eye(3)[test])
        if index == 2:
            np.savez(tmp_path / "m2.npz", validation=val, test=tst)
            models.append(
                {"name": "m2", "predictions": "m2.npz", "flops": 5e6, "cost": cost}
            )
        else:
            np.save(tmp_path / f"m{index}_val.npy", val.astype(np.float32))
            np.save(tmp_path / f"m{index}_test.npy", tst)
            models.append(
                {
                    "name": f"m{index}",
                    "validation": f"m{index}_val.npy",
                    "test": f"m{index}_test.npy",
                    "cost": cost,
                }
            )
    document = {
        "class_names": ["a", "b", "c"],
        "validation_labels": "val_labels.npy",
        "test_labels": "test_labels.npy",
        "models": models,
    }
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(document))
    return path


def _rewrite(path, change):
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


def test_imported_models_are_selected_like_trained_ones(manifest, tmp_path):
    library = import_predictions(manifest, tmp_path / "lib")

    report = select(library, [1.6], methods=["smobf"], pruning_fraction=1.0)

    assert sorted(e.model_id for e in library.entries()) == ["m0", "m1", "m2"]
    assert {e.status for e in library.entries()} == {"imported"}
    row = report.rows[0]
    assert row.cost <= 1.6 and row.test_error is not None and row.saved_to is None
    assert library.class_names == ["a", "b", "c"]


def test_logits_saved_by_mistake_are_rejected_naming_the_model(manifest, tmp_path):
    np.save(
        manifest.parent / "m0_val.npy", np.random.default_rng(1).normal(size=(60, 3))
    )

    with pytest.raises(LibraryError, match="model 'm0' validation.*softmax"):
        import_predictions(manifest, tmp_path / "lib")
    assert not (tmp_path / "lib").exists()


def test_non_finite_predictions_skip_the_model_with_a_warning(
    manifest, tmp_path, caplog
):
    values = np.load(manifest.parent / "m1_val.npy")
    values[3, 1] = np.nan
    np.save(manifest.parent / "m1_val.npy", values)

    library = import_predictions(manifest, tmp_path / "lib")

    assert sorted(e.model_id for e in library.entries()) == ["m0", "m2"]
    assert "skipping model 'm1'" in caplog.text


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["models"][0].pop("cost"), "model 'm0' has no cost"),
        (lambda d: d["models"][0].update(cost=-1), "'cost' must be a positive number"),
        (lambda d: d["models"][1].update(validation="missing.npy"), "missing.npy"),
        (lambda d: d.update(class_names=["a", "b"]), "lists only 2 classes"),
        (lambda d: d.pop("validation_labels"), "lacks 'validation_labels'"),
        (
            lambda d: d["models"][0].update(test="m1_val.npy"),
            r"expected shape \(40, 3\)",
        ),
    ],
)
def test_manifest_mistakes_name_the_problem(manifest, tmp_path, change, message):
    _rewrite(manifest, change)

    with pytest.raises(LibraryError, match=message):
        import_predictions(manifest, tmp_path / "lib")


def test_import_then_select_from_the_command_line(manifest, tmp_path):
    output = tmp_path / "run"
    runner = CliRunner()

    imported = runner.invoke(app, ["import", str(manifest), "--output", str(output)])
    selected = runner.invoke(
        app, ["select", "--output", str(output), "--budget", "2", "--method", "smobf"]
    )

    assert imported.exit_code == 0, imported.output
    assert selected.exit_code == 0, selected.output
    report = json.loads((output / "results.json").read_text())
    assert report["ensembles"][0]["cost"] <= 2
    assert Library.open(output / "library").test_labels is not None


def test_duplicate_names_and_misspelt_keys_are_errors(manifest, tmp_path):
    _rewrite(manifest, lambda d: d["models"][1].update(name="m0"))
    with pytest.raises(LibraryError, match="two models are named 'm0'"):
        import_predictions(manifest, tmp_path / "lib")

    _rewrite(manifest, lambda d: d["models"][1].update(name="m1", cots=2))
    with pytest.raises(LibraryError, match="unknown key.*cots"):
        import_predictions(manifest, tmp_path / "lib")
