"""What survives a restart besides the key and the ledger: the floor of the message counter.

Peers reject control and data frames whose per-originator counter is not above what they
have seen (anti-replay), so a restarted node must never reuse a counter. The core counts up
from `counter_start`; the agent starts it at max(wall clock in microseconds, the saved
floor). The wall clock alone is not enough on a Raspberry Pi without a real-time clock
(fake-hwclock may set the time back at boot), so the floor is saved: every `save()` writes
start + frames transmitted so far (an upper bound of the counters used) + a margin that
covers a crash between two saves.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

CRASH_MARGIN = 10_000_000
"""Counters a node may use between two saves (30 s apart) and still be safe after a crash."""


class StateError(Exception):
    """The state file exists but is not ours (corrupt or from another tool)."""


class AgentState:
    """The state file `<state_dir>/agent-state.json`."""

    def __init__(self, state_dir: str | Path) -> None:
        self.path = Path(state_dir) / "agent-state.json"
        self.counter_start = 0
        self.restarts = 0

    def load(self) -> None:
        """Read the saved floor (none yet is fine) and choose this run's counter start."""
        floor = 0
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text())
                floor = int(data["counter_floor"])
                self.restarts = int(data.get("restarts", 0)) + 1
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise StateError(f"{self.path} is unreadable or corrupt: {exc}") from exc
        self.counter_start = max(time.time_ns() // 1000, floor)

    def save(self, frames_sent: int, margin: int = CRASH_MARGIN) -> None:
        """Atomically record the floor for the next start (fsync'd: power may fail any time)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {"counter_floor": self.counter_start + frames_sent + margin,
                "restarts": self.restarts}
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, json.dumps(data).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
