"""The loop that drives a sync session over a stream of backhaul frames.

The backhaul client, the backhaul server and two agents syncing over the mesh all speak the
same F_SYNC frames; only how they read, write and run the session differs, so those are
passed in.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from ledger.backhaul import protocol as p
from ledger.errors import SyncError
from ledger.sync import SyncSession


async def exchange_sync(
    session: SyncSession,
    read: Callable[[], Awaitable[tuple[int, bytes]]],
    write: Callable[[bytes], None],
    drain: Callable[[], Awaitable[None]],
    receive: Callable[[bytes], Awaitable[bytes | None]] | None = None,
) -> None:
    """Answer the peer's F_SYNC frames until `session` ends.

    `receive` defaults to calling `session.receive` in place (the server runs it in a worker
    thread instead). When the session fails on our side, the peer is told why before the
    `SyncError` propagates.
    """
    while session.state == "running":
        kind, payload = await read()
        if kind != p.F_SYNC:
            raise SyncError("malformed", f"frame type {kind} during sync")
        try:
            if receive is None:
                reply = session.receive(payload, time.time())
            else:
                reply = await receive(payload)
        except SyncError:
            if session.error is not None and session.error.reason != "peer_error":
                write(p.frame(p.F_SYNC, session.error_message()))
            raise
        if reply is not None:
            write(p.frame(p.F_SYNC, reply))
            await drain()
