"""Bring your own library: import predictions of networks trained elsewhere.

A manifest (JSON) names the labels and, for every model, its cached class
probabilities and its cost; deepens turns it into a library that ``deepens
select`` ensembles like one it trained itself (without weights, so the
ensembles are reported, not saved for ``deepens predict``)::

    {
      "class_names": ["cat", "dog", "bird"],          (optional)
      "validation_labels": "validation_labels.npy",
      "test_labels": "test_labels.npy",               (optional)
      "models": [
        {"name": "resnet50", "validation": "r50_val.npy", "test": "r50_test.npy",
         "cost": 1.9, "flops": 8.2e9, "parameters": 25600000},
        {"name": "vit-s", "predictions": "vit.npz", "cost": 3.1}
      ]
    }

Paths are relative to the manifest. A ``predictions`` archive holds arrays
``validation`` and, optionally, ``test``. Each model needs at least one cost:
``cost`` (seconds to predict 2,000 images), ``flops`` or ``parameters``.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from deepens.errors import LibraryError
from deepens.library import Library

_logger = logging.getLogger(__name__)

# Rows of float16-rounded probabilities sum to 1 within about 1e-3 per class.
ROW_SUM_TOLERANCE = 1e-2
_SAFE_ID = re.compile(r"[^A-Za-z0-9_.-]+")
MANIFEST_KEYS = ("class_names", "validation_labels", "test_labels", "models")
MODEL_KEYS = (
    "name",
    "validation",
    "test",
    "predictions",
    "cost",
    "flops",
    "parameters",
)


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise LibraryError(f"manifest {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise LibraryError(f"manifest {path} is not readable JSON: {error}") from None
    if not isinstance(document, dict) or not isinstance(document.get("models"), list):
        raise LibraryError(
            f"manifest {path} must be a JSON object with a 'models' list; see "
            "'deepens import --help' for the format"
        )
    if "validation_labels" not in document:
        raise LibraryError(f"manifest {path} lacks 'validation_labels'")
    _check_keys(document, MANIFEST_KEYS, f"manifest {path}")
    return document


def _check_keys(
    document: Mapping[str, Any], allowed: tuple[str, ...], what: str
) -> None:
    """Reject misspelt keys, which would otherwise be silently ignored."""
    unknown = sorted(set(document) - set(allowed))
    if unknown:
        raise LibraryError(
            f"{what}: unknown key(s) {', '.join(unknown)}; allowed keys are "
            f"{', '.join(allowed)}"
        )


def _load_array(base: Path, relative: Any, what: str) -> np.ndarray:
    if not isinstance(relative, str):
        shown = repr(relative)
        shown = shown if len(shown) < 40 else shown[:37] + "..."
        raise LibraryError(
            f"{what}: expected the name of a .npy file next to the manifest, "
            f"got {shown}"
        )
    path = base / relative
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise LibraryError(f"{what}: file {path} does not exist") from None
    except (OSError, ValueError) as error:
        raise LibraryError(f"{what}: cannot read {path} as .npy ({error})") from None
    return np.asarray(array)


def _labels(base: Path, relative: Any, what: str) -> np.ndarray:
    labels = _load_array(base, relative, what)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise LibraryError(
            f"{what}: expected a 1-D integer array, got shape {labels.shape} "
            f"of {labels.dtype}"
        )
    if len(labels) == 0 or labels.min() < 0:
        raise LibraryError(f"{what}: labels must be non-empty and non-negative")
    return labels.astype(np.int64)


def _model_arrays(
    base: Path, model: Mapping[str, Any], name: str
) -> tuple[np.ndarray, np.ndarray | None]:
    if "predictions" in model:
        path = base / str(model["predictions"])
        try:
            with np.load(path, allow_pickle=False) as archive:
                if "validation" not in archive.files:
                    raise LibraryError(
                        f"model '{name}': {path} has arrays {archive.files}; it needs "
                        "'validation' (and optionally 'test')"
                    )
                validation = np.asarray(archive["validation"])
                test = np.asarray(archive["test"]) if "test" in archive.files else None
        except FileNotFoundError:
            raise LibraryError(f"model '{name}': file {path} does not exist") from None
        except (OSError, ValueError) as error:
            raise LibraryError(
                f"model '{name}': cannot read {path} ({error})"
            ) from None
        return validation, test

    if "validation" not in model:
        raise LibraryError(
            f"model '{name}' needs 'validation' (a .npy file) or 'predictions' "
            "(an .npz with arrays validation and test)"
        )
    validation = _load_array(base, model["validation"], f"model '{name}' validation")
    test = (
        _load_array(base, model["test"], f"model '{name}' test")
        if "test" in model
        else None
    )
    return validation, test


def check_probabilities(array: np.ndarray, rows: int, classes: int, what: str) -> bool:
    """Validate an ``(rows, classes)`` probability array; False if not finite.

    Raises
    ------
    LibraryError
        Wrong shape, negative values or rows that do not sum to 1 (logits or
        unnormalised scores saved by mistake).
    """
    if array.shape != (rows, classes):
        raise LibraryError(
            f"{what}: expected shape ({rows}, {classes}) to match the labels and "
            f"classes, got {array.shape}"
        )
    values = array.astype(np.float64)
    if not np.isfinite(values).all():
        return False
    if (values < 0).any():
        raise LibraryError(
            f"{what}: has negative values, so it holds logits or scores, not "
            "probabilities; apply a softmax before exporting"
        )
    sums = values.sum(axis=1)
    worst = float(np.abs(sums - 1).max())
    if worst > ROW_SUM_TOLERANCE:
        raise LibraryError(
            f"{what}: rows must sum to 1 (one differs by {worst:.3g}); these look "
            "like unnormalised scores: apply a softmax before exporting"
        )
    return True


def _costs(model: Mapping[str, Any], name: str) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for key, field, kind in (
        ("cost", "cost_seconds", float),
        ("flops", "flops", int),
        ("parameters", "parameters", int),
    ):
        if model.get(key) is None:
            continue
        value = model[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise LibraryError(
                f"model '{name}': '{key}' must be a positive number, got {value!r}"
            )
        fields[field] = kind(value)
    if not fields:
        raise LibraryError(
            f"model '{name}' has no cost: give 'cost' (seconds to predict 2,000 "
            "images), 'flops' or 'parameters'"
        )
    return fields


def import_predictions(
    manifest: str | os.PathLike[str], library_path: str | os.PathLike[str]
) -> Library:
    """Create (or extend) a library from a manifest of cached predictions.

    Models whose predictions contain NaN or infinity are skipped with a warning
    naming them; every other problem stops the import with an error naming the
    model and file, before anything is written.

    Returns
    -------
    Library
        The library, whose imported entries have status ``"imported"``.
    """
    manifest_path = Path(manifest)
    document = _read_manifest(manifest_path)
    base = manifest_path.parent
    validation_labels = _labels(
        base, document["validation_labels"], "validation_labels"
    )
    test_labels = (
        _labels(base, document["test_labels"], "test_labels")
        if document.get("test_labels") is not None
        else None
    )
    classes = _class_names(document, validation_labels, test_labels)

    # Validate everything first, so a bad model leaves no half-imported library.
    prepared = []
    seen: set[str] = set()
    for position, model in enumerate(document["models"]):
        if not isinstance(model, Mapping):
            raise LibraryError(f"models[{position}] must be an object, got {model!r}")
        name = str(model.get("name", f"model-{position}"))
        _check_keys(model, MODEL_KEYS, f"model '{name}'")
        if _SAFE_ID.sub("-", name) in seen:
            raise LibraryError(
                f"two models are named '{name}'; give every model a distinct name"
            )
        seen.add(_SAFE_ID.sub("-", name))
        validation, test = _model_arrays(base, model, name)
        fields = _costs(model, name)
        finite = check_probabilities(
            validation,
            len(validation_labels),
            len(classes),
            f"model '{name}' validation",
        )
        if test is not None:
            if test_labels is None:
                raise LibraryError(
                    f"model '{name}' has test predictions but the manifest has no "
                    "'test_labels'"
                )
            finite &= check_probabilities(
                test, len(test_labels), len(classes), f"model '{name}' test"
            )
        if not finite:
            _logger.warning("skipping model '%s': its predictions are not finite", name)
            continue
        prepared.append((name, validation, test, fields))

    if not prepared:
        raise LibraryError(f"manifest {manifest_path} holds no usable model")
    library = Library.create(
        library_path,
        class_names=classes,
        validation_labels=validation_labels,
        test_labels=test_labels,
        dataset=f"imported from {manifest_path.name}",
    )
    for name, validation, test, fields in prepared:
        library.write(
            _SAFE_ID.sub("-", name),
            config={"imported": name},
            status="imported",
            validation_probabilities=validation,
            test_probabilities=test,
            info={"source": str(manifest_path), "name": name},
            **fields,
        )
    _logger.info("imported %d model(s) into %s", len(prepared), library.path)
    return library


def _class_names(
    document: Mapping[str, Any], validation: np.ndarray, test: np.ndarray | None
) -> list[str]:
    largest = int(max(validation.max(), test.max() if test is not None else 0))
    names = document.get("class_names")
    if names is None:
        return [str(index) for index in range(largest + 1)]
    if not isinstance(names, list) or len(set(map(str, names))) != len(names):
        raise LibraryError("'class_names' must be a list of distinct names")
    if len(names) <= largest:
        raise LibraryError(
            f"labels go up to {largest} but 'class_names' lists only {len(names)} "
            "classes"
        )
    return [str(name) for name in names]
