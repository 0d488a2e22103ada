"""A saved ensemble: its members' networks and the rule that combines them.

An ensemble folder is self-contained (it copies its members' weights), so it
can be shipped and used with ``deepens predict`` without the library::

    ensemble/
      ensemble.json        members, weights, combiner, classes, input shape, cost
      members/<model_id>.pt
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepens.combiners import combine
from deepens.errors import LibraryError
from deepens.library import Library
from deepens.models import load_model
from deepens.training import predict_probabilities


@dataclass
class Member:
    """One network of an ensemble."""

    model_id: str
    config: dict[str, Any]
    weight: float


# Member ids become file names under members/; nothing may lead outside it.
_MODEL_ID = re.compile(r"^[A-Za-z0-9_.-]+$")


def _member(record: Any) -> Member:
    member = Member(
        model_id=str(record["model_id"]),
        config=dict(record["config"]),
        weight=float(record["weight"]),
    )
    if not _MODEL_ID.match(member.model_id) or member.model_id.strip(".") == "":
        raise ValueError(f"member id {member.model_id!r} is not a plain file name")
    if not (member.weight >= 0 and math.isfinite(member.weight)):
        raise ValueError(f"member '{member.model_id}' has weight {member.weight}")
    return member


def _check_document(
    document: dict[str, Any], members: list[Member], combiner: str
) -> None:
    if document.get("format", 1) != 1:
        raise ValueError(f"format {document.get('format')!r} is not 1")
    if not members:
        raise ValueError("it lists no members")
    if combiner not in ("average", "vote"):
        raise ValueError(f"combiner {combiner!r} is not 'average' or 'vote'")
    if sum(m.weight for m in members) <= 0:
        raise ValueError("the members' weights sum to zero")


@dataclass
class Ensemble:
    """Networks whose class probabilities are combined into one prediction.

    Attributes
    ----------
    members : list of Member
        The networks and their combiner weights (summing to 1).
    class_names : list of str
        Output classes, in column order.
    channels : int
        1 (grayscale) or 3 (colour) input channels.
    image_size : tuple of int
        Input ``(height, width)``; other sizes are resized by the input loader.
    combiner : str
        ``"average"`` (weighted by the members' weights) or ``"vote"``.
    cost : float or None
        Summed cost of the members, in ``cost_unit``.
    """

    members: list[Member]
    class_names: list[str]
    channels: int
    image_size: tuple[int, int]
    combiner: str = "average"
    cost: float | None = None
    cost_unit: str = "seconds"
    info: dict[str, Any] = field(default_factory=dict)
    folder: Path | None = None

    @classmethod
    def from_library(
        cls,
        library: Library,
        model_ids: Sequence[str],
        weights: Sequence[float],
        *,
        combiner: str = "average",
        cost: float | None = None,
        cost_unit: str = "seconds",
        info: Mapping[str, Any] | None = None,
    ) -> Ensemble:
        """An ensemble of library entries (not yet saved)."""
        members = []
        for model_id, weight in zip(model_ids, weights, strict=True):
            entry = library.get(model_id)
            if entry is None or not entry.has_weights:
                raise LibraryError(
                    f"model '{model_id}' has no weights in {library.path}"
                )
            members.append(Member(model_id, entry.config, float(weight)))
        ensemble = cls(
            members=members,
            class_names=library.class_names,
            channels=int(library.metadata["channels"]),
            image_size=tuple(library.metadata["image_size"]),  # type: ignore[arg-type]
            combiner=combiner,
            cost=cost,
            cost_unit=cost_unit,
            info=dict(info or {}),
        )
        ensemble._library = library
        return ensemble

    _library: Library | None = None

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write a self-contained ensemble folder and return its path."""
        target = Path(folder)
        (target / "members").mkdir(parents=True, exist_ok=True)
        for member in self.members:
            source = self._weights_source(member.model_id)
            shutil.copyfile(source, target / "members" / f"{member.model_id}.pt")
        document = {
            "format": 1,
            "members": [vars(m) for m in self.members],
            "class_names": self.class_names,
            "channels": self.channels,
            "image_size": list(self.image_size),
            "combiner": self.combiner,
            "cost": self.cost,
            "cost_unit": self.cost_unit,
            "info": self.info,
        }
        temporary = target / ".ensemble.json.tmp"
        temporary.write_text(json.dumps(document, indent=1))
        os.replace(temporary, target / "ensemble.json")
        self.folder = target
        return target

    def _weights_source(self, model_id: str) -> Path:
        if self.folder is not None:
            return self.folder / "members" / f"{model_id}.pt"
        entry = self._library.get(model_id) if self._library else None
        path = entry.weights_path() if entry else None
        if path is None:
            raise LibraryError(f"model '{model_id}': weights not found")
        return path

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> Ensemble:
        """Read an ensemble folder written by :meth:`save`."""
        root = Path(folder)
        try:
            document = json.loads((root / "ensemble.json").read_text())
        except FileNotFoundError:
            raise LibraryError(
                f"{root} is not a saved ensemble (no ensemble.json); 'deepens run' and "
                "'deepens select' write them under <output>/ensembles/"
            ) from None
        except (OSError, json.JSONDecodeError) as error:
            raise LibraryError(f"{root}/ensemble.json is unreadable: {error}") from None
        try:
            members = [_member(m) for m in document["members"]]
            class_names = [str(name) for name in document["class_names"]]
            channels = int(document["channels"])
            image_size = (
                int(document["image_size"][0]),
                int(document["image_size"][1]),
            )
            combiner = str(document.get("combiner", "average"))
            _check_document(document, members, combiner)
        except (KeyError, TypeError, ValueError, IndexError) as error:
            raise LibraryError(
                f"{root}/ensemble.json is damaged ({type(error).__name__}: {error}); "
                "save the ensemble again with 'deepens select'"
            ) from None
        return cls(
            members=members,
            class_names=class_names,
            channels=channels,
            image_size=image_size,
            combiner=combiner,
            cost=document.get("cost"),
            cost_unit=document.get("cost_unit", "seconds"),
            info=document.get("info", {}),
            folder=root,
        )

    def predict_proba(
        self, images: torch.Tensor, *, device: torch.device | str = "cpu"
    ) -> np.ndarray:
        """Combined class probabilities ``(N, C)`` for uint8 images ``(N, C, H, W)``."""
        expected = (self.channels, *self.image_size)
        if tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"images must have shape (N, {', '.join(map(str, expected))}); "
                f"got {tuple(images.shape)}"
            )
        outputs = []
        for member in self.members:
            model = self._load_member(member, device)
            outputs.append(predict_probabilities(model, images, device=device))
        weights = [m.weight for m in self.members]
        return combine(outputs, weights=weights, rule=self.combiner)

    def _load_member(
        self, member: Member, device: torch.device | str
    ) -> torch.nn.Module:
        path = self._weights_source(member.model_id)
        try:
            return load_model(
                member.config,
                path,
                in_channels=self.channels,
                num_classes=len(self.class_names),
                image_size=max(self.image_size),
                device=device,
            )
        except FileNotFoundError:
            raise LibraryError(
                f"member '{member.model_id}' of the ensemble has no weights file "
                f"({path}); the ensemble folder is incomplete: save it again with "
                "'deepens select'"
            ) from None
        except (
            OSError,
            RuntimeError,
            ValueError,
            KeyError,
            EOFError,
            pickle.UnpicklingError,
        ) as error:
            # torch reports truncated archives, foreign pickles and shape
            # mismatches with long multi-line messages; the first line says enough.
            first_line = str(error).strip().splitlines()[0] if str(error) else ""
            raise LibraryError(
                f"member '{member.model_id}' of the ensemble cannot be loaded from "
                f"{path} ({type(error).__name__}: {first_line}); the weights or "
                "ensemble.json are damaged: save the ensemble again with "
                "'deepens select'"
            ) from None

    def predict(
        self, images: torch.Tensor, *, device: torch.device | str = "cpu"
    ) -> np.ndarray:
        """Predicted class index per image."""
        return self.predict_proba(images, device=device).argmax(axis=1)
