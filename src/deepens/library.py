"""The model library: one folder per trained model, written atomically.

Layout::

    library/
      library.json            classes, input shape, data set name, format version
      labels.npz              validation and test labels, shared by every entry
      models/<model_id>/
        entry.json            the entry's record; written last, so it commits the entry
        weights-<rev>.pt      state dict
        validation-<rev>.npy  class probabilities on the validation split (float16)
        test-<rev>.npy        class probabilities on the test split (float16)
      ad_hoc/<group_id>.json  an ad-hoc ensemble: kind, member ids, weights, loss

Every update writes new files under a fresh revision, then replaces
``entry.json`` in one ``os.replace``, then deletes the previous revision. A crash
at any point leaves either the old entry or the new one, never a mixture, and
readers only ever follow ``entry.json``. An ad-hoc ensemble's record is one
JSON file, replaced whole in the same way; its members are ordinary entries.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np

from deepens.errors import LibraryError

_logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
COST_UNITS = ("seconds", "flops", "parameters")
STATUSES = ("training", "finished", "stopped", "failed", "imported")
GROUP_STATUSES = ("training", "finished", "stopped", "failed")


def _write_json_atomically(path: Path, document: Mapping[str, Any]) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w") as stream:
            json.dump(document, stream, indent=1, sort_keys=True)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _save_array(folder: Path, name: str, array: np.ndarray) -> str:
    """Write ``array`` as float16 under a fresh file name; returns the name."""
    file_name = f"{name}-{uuid.uuid4().hex[:8]}.npy"
    with open(folder / file_name, "wb") as stream:
        np.save(stream, np.asarray(array, dtype=np.float16))
        stream.flush()
        os.fsync(stream.fileno())
    return file_name


@dataclass
class LibraryEntry:
    """One model of the library, as its ``entry.json`` describes it."""

    folder: Path
    model_id: str
    config: dict[str, Any]
    status: str
    learning_curve: list[float] = field(default_factory=list)
    parameters: int | None = None
    flops: int | None = None
    cost_seconds: float | None = None
    validation_loss: float | None = None
    validation_error: float | None = None
    files: dict[str, str] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def epochs(self) -> int:
        """Epochs trained so far (the length of the learning curve)."""
        return len(self.learning_curve)

    @property
    def has_weights(self) -> bool:
        return "weights" in self.files

    @property
    def is_measured(self) -> bool:
        """Whether test probabilities and the cost in seconds are recorded."""
        return "test" in self.files and self.cost_seconds is not None

    def cost(self, unit: str = "seconds") -> float | None:
        """The entry's cost in ``unit`` (seconds, flops or parameters), if known."""
        if unit == "seconds":
            return self.cost_seconds
        if unit == "flops":
            return None if self.flops is None else float(self.flops)
        if unit == "parameters":
            return None if self.parameters is None else float(self.parameters)
        raise LibraryError(f"cost unit {unit!r} is unknown; allowed are {COST_UNITS}")

    def validation_probabilities(self) -> np.ndarray:
        """Validation class probabilities, memory-mapped float16 ``(N, C)``."""
        return self._load_array("validation")

    def test_probabilities(self) -> np.ndarray | None:
        """Test class probabilities, or None before the entry is measured."""
        return self._load_array("test") if "test" in self.files else None

    def weights_path(self) -> Path | None:
        return self.folder / self.files["weights"] if "weights" in self.files else None

    def _load_array(self, kind: str) -> np.ndarray:
        if kind not in self.files:
            raise LibraryError(f"model '{self.model_id}' has no {kind} probabilities")
        return np.load(self.folder / self.files[kind], mmap_mode="r")

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "config": self.config,
            "status": self.status,
            "learning_curve": self.learning_curve,
            "parameters": self.parameters,
            "flops": self.flops,
            "cost_seconds": self.cost_seconds,
            "validation_loss": self.validation_loss,
            "validation_error": self.validation_error,
            "files": self.files,
            "info": self.info,
        }


@dataclass
class AdHocGroup:
    """An ensemble searched as one configuration (see :mod:`deepens.adhoc`).

    Its members are ordinary entries of the same library; the group records
    which ones, with the combiner weights chosen on validation data.

    Attributes
    ----------
    group_id : str
        Stable id from the kind and the member ids.
    kind : str
        ``"homogeneous"`` or ``"heterogeneous"``.
    members : list of str
        Model ids of the members, in member order.
    weights : list of float
        Weighted-average combiner weight of each member (summing to 1).
    status : str
        One of :data:`GROUP_STATUSES`.
    validation_loss, validation_error : float or None
        Of the weighted ensemble after its last epoch.
    learning_curve : list of float
        The ensemble's validation loss after each epoch, as the trial reported it.
    info : dict
        Seeds, the configuration the optimiser proposed, a failure's reason.
    """

    group_id: str
    kind: str
    members: list[str]
    weights: list[float]
    status: str
    validation_loss: float | None = None
    validation_error: float | None = None
    learning_curve: list[float] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def epochs(self) -> int:
        """Epochs the members trained so far."""
        return len(self.learning_curve)

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


class Library:
    """A folder of trained models with cached predictions.

    Use :meth:`create` for a new library and :meth:`open` for an existing one.
    """

    def __init__(self, path: Path, metadata: Mapping[str, Any]) -> None:
        self.path = path
        self.metadata = dict(metadata)
        self._labels: dict[str, np.ndarray] | None = None
        self._warned: set[Path] = set()

    # ----------------------------------------------------------- lifecycle
    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        *,
        class_names: Sequence[str],
        validation_labels: np.ndarray,
        test_labels: np.ndarray | None,
        channels: int | None = None,
        image_size: Sequence[int] | None = None,
        dataset: str = "",
    ) -> Library:
        """Create a library folder, or open it if it holds the same task.

        Raises
        ------
        LibraryError
            If the folder already holds a library for other labels or classes.
        """
        root = Path(path)
        metadata = {
            "format": FORMAT_VERSION,
            "class_names": list(class_names),
            "channels": channels,
            "image_size": list(image_size) if image_size is not None else None,
            "dataset": dataset,
        }
        if (root / "library.json").exists():
            library = cls.open(root)
            library._check_same_task(metadata, validation_labels, test_labels)
            return library

        (root / "models").mkdir(parents=True, exist_ok=True)
        labels: dict[str, Any] = {
            "validation": np.asarray(validation_labels, dtype=np.int64)
        }
        if test_labels is not None:
            labels["test"] = np.asarray(test_labels, dtype=np.int64)
        temporary = root / f".labels-{uuid.uuid4().hex[:8]}.npz"
        np.savez(temporary, **labels)  # type: ignore[arg-type]
        os.replace(temporary, root / "labels.npz")
        metadata["created"] = time.time()
        _write_json_atomically(root / "library.json", metadata)
        _logger.debug("created library at %s", root)
        return cls(root, metadata)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Library:
        """Open an existing library folder (a path or a ``file://`` URI)."""
        root = local_library_path(path)
        try:
            metadata = json.loads((root / "library.json").read_text())
        except FileNotFoundError:
            raise LibraryError(
                f"{root} is not a deepens library (no library.json); run "
                "'deepens search' to build one or check the path"
            ) from None
        except (OSError, json.JSONDecodeError) as error:
            raise LibraryError(f"{root}/library.json is unreadable: {error}") from None
        if metadata.get("format") != FORMAT_VERSION:
            raise LibraryError(
                f"{root}: library format {metadata.get('format')} is not supported "
                f"(this deepens reads format {FORMAT_VERSION})"
            )
        return cls(root, metadata)

    def _check_same_task(
        self,
        metadata: Mapping[str, Any],
        validation_labels: np.ndarray,
        test_labels: np.ndarray | None,
    ) -> None:
        same = (
            self.class_names == list(metadata["class_names"])
            and np.array_equal(self.validation_labels, validation_labels)
            and (
                test_labels is None
                or self.test_labels is None
                or np.array_equal(self.test_labels, test_labels)
            )
        )
        if not same:
            raise LibraryError(
                f"{self.path} already holds a library for other data (classes or "
                "splits differ); choose a new output folder or use the same data "
                "and seed"
            )

    # --------------------------------------------------------------- labels
    @property
    def class_names(self) -> list[str]:
        return list(self.metadata["class_names"])

    @property
    def num_classes(self) -> int:
        return len(self.metadata["class_names"])

    def _load_labels(self) -> dict[str, np.ndarray]:
        if self._labels is None:
            try:
                with np.load(self.path / "labels.npz") as archive:
                    self._labels = {key: archive[key] for key in archive.files}
            except (OSError, ValueError) as error:
                raise LibraryError(
                    f"{self.path}/labels.npz is missing or damaged ({error}); the "
                    "library cannot be used: build it again with 'deepens search'"
                ) from None
        return self._labels

    @property
    def validation_labels(self) -> np.ndarray:
        return self._load_labels()["validation"]

    @property
    def test_labels(self) -> np.ndarray | None:
        return self._load_labels().get("test")

    # -------------------------------------------------------------- entries
    def entry_folder(self, model_id: str) -> Path:
        return self.path / "models" / model_id

    def get(self, model_id: str) -> LibraryEntry | None:
        """The committed entry ``model_id``, or None if there is none."""
        folder = self.entry_folder(model_id)
        try:
            record = json.loads((folder / "entry.json").read_text())
            entry = LibraryEntry(folder=folder, **record)
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError, TypeError) as error:
            if folder not in self._warned:
                self._warned.add(folder)
                _logger.warning("skipping unreadable entry %s: %s", folder, error)
            return None
        return entry

    def entries(self, statuses: Sequence[str] | None = None) -> list[LibraryEntry]:
        """Committed entries, sorted by model id; optionally only some statuses."""
        folder = self.path / "models"
        found = []
        for child in sorted(folder.iterdir()) if folder.exists() else []:
            if child.name.startswith(".") or not child.is_dir():
                continue
            entry = self.get(child.name)
            if entry is not None and (statuses is None or entry.status in statuses):
                found.append(entry)
        return found

    def __len__(self) -> int:
        return len(self.entries())

    # ----------------------------------------------------- ad-hoc ensembles
    def write_group(self, group: AdHocGroup) -> None:
        """Create or replace the record of an ad-hoc ensemble, atomically."""
        if group.status not in GROUP_STATUSES:
            raise LibraryError(
                f"status {group.status!r} is unknown; allowed are {GROUP_STATUSES}"
            )
        folder = self.path / "ad_hoc"
        folder.mkdir(exist_ok=True)
        _write_json_atomically(folder / f"{group.group_id}.json", group.to_dict())

    def get_group(self, group_id: str) -> AdHocGroup | None:
        """The record of ad-hoc ensemble ``group_id``, or None if there is none."""
        path = self.path / "ad_hoc" / f"{group_id}.json"
        try:
            return AdHocGroup(**json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError, TypeError) as error:
            if path not in self._warned:
                self._warned.add(path)
                _logger.warning(
                    "skipping unreadable ad-hoc ensemble %s: %s", path, error
                )
            return None

    def groups(self, statuses: Sequence[str] | None = None) -> list[AdHocGroup]:
        """Recorded ad-hoc ensembles, sorted by id; optionally only some statuses."""
        folder = self.path / "ad_hoc"
        found = []
        for path in sorted(folder.glob("*.json")) if folder.exists() else []:
            if path.name.startswith("."):
                continue
            group = self.get_group(path.stem)
            if group is not None and (statuses is None or group.status in statuses):
                found.append(group)
        return found

    def write(
        self,
        model_id: str,
        *,
        config: Mapping[str, Any],
        status: str,
        learning_curve: Sequence[float] = (),
        state_dict: Mapping[str, Any] | None = None,
        validation_probabilities: np.ndarray | None = None,
        test_probabilities: np.ndarray | None = None,
        **fields: Any,
    ) -> LibraryEntry:
        """Create or update entry ``model_id`` atomically.

        Arrays and weights given here replace the entry's old ones; those not
        given are kept. Extra keyword arguments set :class:`LibraryEntry` fields
        (``parameters``, ``flops``, ``cost_seconds``, ``info``...).
        """
        if status not in STATUSES:
            raise LibraryError(f"status {status!r} is unknown; allowed are {STATUSES}")
        folder = self.entry_folder(model_id)
        folder.mkdir(parents=True, exist_ok=True)
        previous = self.get(model_id)
        record: dict[str, Any] = (
            previous.to_dict() if previous else {"model_id": model_id, "files": {}}
        )
        old_files = dict(record["files"])
        files = dict(old_files)

        if state_dict is not None:
            import torch

            files["weights"] = f"weights-{uuid.uuid4().hex[:8]}.pt"
            with open(folder / files["weights"], "wb") as stream:
                torch.save(dict(state_dict), stream)
                stream.flush()
                os.fsync(stream.fileno())
        if validation_probabilities is not None:
            files["validation"] = _save_array(
                folder, "validation", validation_probabilities
            )
            loss, error = loss_and_error(
                validation_probabilities, self.validation_labels
            )
            record.update(validation_loss=loss, validation_error=error)
        if test_probabilities is not None:
            files["test"] = _save_array(folder, "test", test_probabilities)

        record.update(
            config=dict(config),
            status=status,
            learning_curve=[float(v) for v in learning_curve]
            or record.get("learning_curve", []),
            files=files,
            **fields,
        )
        record.setdefault("info", {})
        _write_json_atomically(folder / "entry.json", record)

        # Only now that entry.json points at the new files are the old ones garbage.
        for kind, name in old_files.items():
            if files.get(kind) != name:
                (folder / name).unlink(missing_ok=True)
        return LibraryEntry(folder=folder, **{k: v for k, v in record.items()})

    def remove(self, model_id: str) -> None:
        """Delete an entry and its files."""
        shutil.rmtree(self.entry_folder(model_id), ignore_errors=True)

    def collect_garbage(self) -> int:
        """Delete files no entry points at (left by a crash); returns the count."""
        removed = 0
        for entry in self.entries():
            keep = set(entry.files.values()) | {"entry.json"}
            for child in entry.folder.iterdir():
                if child.name not in keep:
                    child.unlink(missing_ok=True)
                    removed += 1
        return removed


def local_library_path(location: str | os.PathLike[str]) -> Path:
    """A library location as a local path: a path, or a ``file://`` URI.

    Raises
    ------
    LibraryError
        For any other URI scheme (``s3://``, ``gs://``...): the library lives on
        a file system, not in an object store.
    """
    text = os.fspath(location)
    # pathlib turns "s3://bucket" into "s3:/bucket"; match both. Two letters at
    # least, so that a Windows drive ("C:/") is a path.
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]+):/", text)
    if match is None:
        return Path(text)
    scheme = match.group(1).lower()
    parsed = urlparse(text)
    if scheme == "file" and parsed.netloc in ("", "localhost"):
        return Path(unquote(parsed.path))
    raise LibraryError(
        f"library location {text!r} is a {scheme}:// URI, but a deepens library "
        "must be on a file system every Ray node reads and writes: mount the "
        "storage on each node (NFS, or s3fs / gcsfuse for a bucket) and pass the "
        "mounted path"
    )


def loss_and_error(
    probabilities: np.ndarray, labels: np.ndarray
) -> tuple[float, float]:
    """Cross-entropy and error rate of class probabilities ``(N, C)``.

    The true-class probability is clipped at 1e-7 before the log; predictions
    that are not all finite score an infinite loss and an error rate of 1.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if not np.isfinite(probabilities).all():
        return math.inf, 1.0
    rows = np.arange(len(labels))
    true_class = np.clip(probabilities[rows, labels], 1e-7, 1.0)
    loss = float(-np.log(true_class).mean())
    error = float((probabilities.argmax(axis=1) != labels).mean())
    return loss, error
