"""The searches a library has seen, in ``library/searches.json``.

Each search gets its own Ray Tune experiment folder, ``library/tune/<id>``, so a
library extended by several searches keeps each one's Tune state apart. The
record of a search holds what is needed to resume it after its driver was
killed: its settings, its search space, the optimiser seed it used, where its
Tune state is, and whether it completed. A caller may add how it loaded the
data (``origin``), so that ``deepens search --resume`` can load it again.

Layout::

    {"format": 1,
     "searches": [{"id": "search-20260101-120000-1a2b", "tune_folder": "tune/...",
                   "settings": {...}, "space": {...}, "optimizer_seed": 7,
                   "origin": {...}, "started": 1.7e9, "completed": false,
                   "completed_at": null, "runs": ["<run id>", ...]}]}
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deepens.errors import LibraryError, SearchError
from deepens.library import _write_json_atomically

if TYPE_CHECKING:
    from deepens.search import SearchSettings
    from deepens.space import SearchSpace

HISTORY_FILE = "searches.json"
HISTORY_FORMAT = 1


@dataclass
class SearchRecord:
    """One search of a library, as ``searches.json`` records it."""

    id: str
    tune_folder: str
    settings: dict[str, Any]
    space: dict[str, Any]
    optimizer_seed: int
    origin: dict[str, Any] = field(default_factory=dict)
    started: float = 0.0
    completed: bool = False
    completed_at: float | None = None
    runs: list[str] = field(default_factory=list)

    def tune_path(self, library_path: str | os.PathLike[str]) -> Path:
        """The search's Ray Tune experiment folder."""
        return Path(library_path) / self.tune_folder

    def search_settings(self) -> SearchSettings:
        """The recorded settings, to resume with (the Ray address is today's)."""
        from deepens.search import SearchSettings

        names = {f.name for f in fields(SearchSettings)} - {"ray_address"}
        return SearchSettings(**{k: v for k, v in self.settings.items() if k in names})

    def search_space(self) -> SearchSpace:
        """The recorded search space."""
        from deepens.space import SearchSpace

        return SearchSpace.from_dict(self.space)


def new_search_id() -> str:
    """A unique, time-ordered search id."""
    return time.strftime("search-%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:4]


def load_history(library_path: str | os.PathLike[str]) -> list[SearchRecord]:
    """Every search recorded in the library, oldest first (none: empty list).

    Raises
    ------
    LibraryError
        When ``searches.json`` is unreadable or does not describe searches.
    """
    path = Path(library_path) / HISTORY_FILE
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, json.JSONDecodeError) as error:
        raise LibraryError(
            f"{path} is damaged ({error}); the library's models are fine, but its "
            "searches cannot be resumed: move the file away to start a new search"
        ) from None
    try:
        if document.get("format") != HISTORY_FORMAT:
            raise ValueError(f"format {document.get('format')!r} is not supported")
        names = {f.name for f in fields(SearchRecord)}
        return [
            SearchRecord(**{k: v for k, v in record.items() if k in names})
            for record in document["searches"]
        ]
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        raise LibraryError(
            f"{path} does not describe searches ({type(error).__name__}: {error}); "
            "move the file away to start a new search"
        ) from None


def save_history(
    library_path: str | os.PathLike[str], records: list[SearchRecord]
) -> None:
    """Replace ``searches.json`` atomically."""
    document = {
        "format": HISTORY_FORMAT,
        "searches": [asdict(record) for record in records],
    }
    _write_json_atomically(Path(library_path) / HISTORY_FILE, document)


def record_search(
    library_path: str | os.PathLike[str], record: SearchRecord
) -> SearchRecord:
    """Add ``record``, or replace the record with its id; returns it."""
    records = [r for r in load_history(library_path) if r.id != record.id]
    records.append(record)
    records.sort(key=lambda r: (r.started, r.id))
    save_history(library_path, records)
    return record


def unfinished_search(library_path: str | os.PathLike[str]) -> SearchRecord:
    """The latest search of the library that did not complete.

    Raises
    ------
    SearchError
        When the folder holds no library, or its searches all completed.
    LibraryError
        When the record of searches is damaged.
    """
    root = Path(library_path)
    if not (root / "library.json").exists():
        raise SearchError(
            f"nothing to resume in {root}: it holds no deepens library; run the "
            "search without --resume"
        )
    records = load_history(root)
    unfinished = [record for record in records if not record.completed]
    if not unfinished:
        state = "all completed" if records else "none recorded"
        raise SearchError(
            f"nothing to resume in {root}: its searches are {state}; run the search "
            "without --resume to extend the library"
        )
    record = unfinished[-1]
    if not isinstance(record.settings, Mapping) or not isinstance(
        record.space, Mapping
    ):
        raise LibraryError(
            f"{root / HISTORY_FILE}: search {record.id} has no settings or space; "
            "it cannot be resumed"
        )
    return record
