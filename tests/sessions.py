"""Processes a test starts in their own session, and how to be sure they end.

A killed Ray driver leaves Ray processes behind unless their whole session is
killed: they may leave the driver's process group, never its session.
"""

import os
import signal
import time
from pathlib import Path


def session_processes(session: int) -> list[int]:
    """Live processes of a session (zombies, already dead, are left out)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def kill_session(session: int) -> None:
    """SIGKILL every process of a session the test started; wait until gone."""
    alive = session_processes(session)
    for _ in range(50):
        if not alive:
            return
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
        alive = session_processes(session)
    raise AssertionError(f"processes {alive} of session {session} survived SIGKILL")
