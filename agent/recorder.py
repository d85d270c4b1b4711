"""Records the mesh's history in the node's ledger: each routing/line event becomes a
transaction (through `Ledger.record_event`), batched into signed blocks.

The ledger batches like a protocol core: `get_timer()` says when the pending batch must be
signed; this class keeps that one timer on the loop. The ledger's clock is the wall clock
(block timestamps are milliseconds since the epoch), unlike the mesh core's monotonic clock,
so the timer is armed with `call_later(deadline - time.time())`. `close()` signs what is
pending and closes the database: that is the SIGTERM flush.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from ledger import Ledger
from ledger.errors import LedgerError
from mesh.events import Event
from mesh.identity import Identity


class LedgerRecorder:
    """Owns the Ledger of one agent and its batching timer."""

    def __init__(self, path: str | Path, identity: Identity, loop: asyncio.AbstractEventLoop,
                 on_block: Callable[[int, int], None] | None = None,
                 on_error: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.ledger = Ledger.open(path, identity)
        self.loop = loop
        self.on_block = on_block
        self.on_error = on_error
        self.clock = clock
        self.recorded = 0
        self.errors = 0
        self._timer: asyncio.TimerHandle | None = None
        self._deadline: float | None = None

    def record(self, event: Event) -> None:
        """Append the event's transaction (events that are not history are skipped)."""
        try:
            if self.ledger.record_event(event, self.clock()):
                self.recorded += 1
        except LedgerError as exc:  # e.g. a schema mismatch: keep the mesh running
            self.errors += 1
            if self.on_error is not None:
                self.on_error(str(exc))
        self._arm()

    def _arm(self) -> None:
        deadline = self.ledger.get_timer()
        if deadline == self._deadline and self._timer is not None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._deadline = deadline
        if deadline is not None:
            self._timer = self.loop.call_later(max(0.0, deadline - self.clock()), self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._deadline = None
        try:
            block = self.ledger.handle_timer(self.clock())
        except LedgerError as exc:
            self.errors += 1
            if self.on_error is not None:
                self.on_error(str(exc))
            block = None
        if block is not None and self.on_block is not None:
            self.on_block(block.height, len(block.txs))
        self._arm()

    def height(self) -> int:
        return self.ledger.height()

    def sync_lag_s(self) -> float | None:
        return self.ledger.sync_lag_s(self.clock())

    def close(self) -> None:
        """Sign what is pending (durably) and close the database."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        block = self.ledger.flush(self.clock())
        self.ledger.close()
        if block is not None and self.on_block is not None:
            self.on_block(block.height, len(block.txs))
