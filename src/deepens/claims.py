"""Claims: which trial is training which model, so no model trains twice.

Two trials can propose the same canonical configuration (the same model id) at
the same time: a searcher repeating itself, or a resumed search restarting a
trial whose model another trial already took. The first to create
``library/claims/<model_id>.json`` (``O_CREAT | O_EXCL``, atomic on local file
systems and on NFS) trains it; the others wait for the claim to go and then
replay the entry it left.

A claim records who holds it: the search and the driver run, the host and the
process, and it is kept fresh by a heartbeat (its modification time). A claim
is stale, and is taken over, when

- it belongs to an earlier run of the search now running (the driver that made
  it was killed, and this run resumes that search),
- its process is gone (same host only), or
- its heartbeat is older than :data:`STALE_AFTER_S` (a process on another host
  that died without releasing it).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_logger = logging.getLogger(__name__)

CLAIMS_FOLDER = "claims"
HEARTBEAT_S = 10.0
STALE_AFTER_S = 120.0
POLL_S = 0.5


@dataclass(frozen=True)
class Claimant:
    """Who claims a model: the search, its driver run, and where it trains."""

    search_id: str
    run_id: str
    hostname: str
    pid: int

    @classmethod
    def here(cls, search_id: str, run_id: str) -> Claimant:
        """The claimant for the current process."""
        return cls(search_id, run_id, socket.gethostname(), os.getpid())


def claim_path(library_path: str | os.PathLike[str], model_id: str) -> Path:
    """Where the claim of ``model_id`` lives."""
    return Path(library_path) / CLAIMS_FOLDER / f"{model_id}.json"


class ModelClaim:
    """The right to train one model, held by one trial at a time.

    Use :meth:`acquire` (which waits while a live trial holds the claim) and
    :meth:`release`, or the claim as a context manager after acquiring it.
    """

    def __init__(
        self, library_path: str | os.PathLike[str], model_id: str, claimant: Claimant
    ) -> None:
        self.path = claim_path(library_path, model_id)
        self.model_id = model_id
        self.claimant = claimant
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def acquire(self, timeout_s: float | None = None) -> bool:
        """Take the claim, waiting while a live trial holds it.

        Returns False when ``timeout_s`` passes first.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        waited = False
        while True:
            if self._try_create():
                self._start_heartbeat()
                return True
            holder = read_claim(self.path)
            if self._is_stale(holder):
                self._take_over(holder or {})
                continue
            if not waited:
                _logger.debug(
                    "model %s is being trained by %s; waiting for it",
                    self.model_id,
                    holder,
                )
                waited = True
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(POLL_S)

    def release(self) -> None:
        """Give the claim up (only if this claim still holds it)."""
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=HEARTBEAT_S)
            self._heartbeat = None
        holder = read_claim(self.path)
        if holder is not None and holder.get("token") == self.token:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> ModelClaim:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    # ------------------------------------------------------------ internals
    def _record(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "token": self.token,
            "search": self.claimant.search_id,
            "run": self.claimant.run_id,
            "hostname": self.claimant.hostname,
            "pid": self.claimant.pid,
            "claimed_at": time.time(),
        }

    def _try_create(self) -> bool:
        try:
            handle = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(handle, "w") as stream:
            json.dump(self._record(), stream)
        return True

    def _is_stale(self, holder: dict[str, Any] | None) -> bool:
        # None: the claim is being written, or its writer died half-way; only
        # its age can tell.
        holder = holder or {}
        if (
            holder.get("search") == self.claimant.search_id
            and holder.get("run") != self.claimant.run_id
        ):
            return True
        if holder.get("hostname") == self.claimant.hostname and not _process_alive(
            int(holder.get("pid", -1))
        ):
            return True
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return False
        return age > STALE_AFTER_S

    def _take_over(self, stale: dict[str, Any]) -> None:
        """Move a stale claim out of the way, then let :meth:`acquire` retry.

        Two waiters may judge the same claim stale; renaming it to a unique name
        lets one of them win. If the claim renamed turns out to be a fresh one
        (another waiter took over in between), it is put back.
        """
        aside = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        moved = read_claim(aside)
        if moved is not None and moved.get("token") != stale.get("token"):
            try:
                os.link(aside, self.path)
            except FileExistsError:
                _logger.warning("claim of model %s was contended", self.model_id)
        else:
            _logger.info(
                "taking over model %s from a stale claim (run %s, %s pid %s)",
                self.model_id,
                stale.get("run"),
                stale.get("hostname"),
                stale.get("pid"),
            )
        aside.unlink(missing_ok=True)

    def _start_heartbeat(self) -> None:
        def beat() -> None:
            while not self._stop.wait(HEARTBEAT_S):
                try:
                    os.utime(self.path)
                except FileNotFoundError:
                    return

        self._heartbeat = threading.Thread(
            target=beat, name=f"claim-{self.model_id}", daemon=True
        )
        self._heartbeat.start()


def read_claim(path: Path) -> dict[str, Any] | None:
    """A claim's record, or None when there is none (or it is being written)."""
    try:
        record = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


def remove_claims_of_run(library_path: str | os.PathLike[str], run_id: str) -> int:
    """Delete the claims a finished run left (trials Ray ended abruptly)."""
    folder = Path(library_path) / CLAIMS_FOLDER
    removed = 0
    for path in folder.glob("*.json") if folder.exists() else []:
        holder = read_claim(path)
        if holder is not None and holder.get("run") == run_id:
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def _process_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
