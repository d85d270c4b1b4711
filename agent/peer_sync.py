"""Ledger sync between neighbours over the mesh, so that partitions exchange what they
recorded when they meet, before either reaches the backhaul.

When a neighbour appears (`NeighbourUp`: a merge of partitions looks like this), the node
with the smaller id opens a reliable stream to it (`ledger.meshlink.MeshStream` over mesh
payloads) and runs the ledger's sans-I/O `SyncSession` over it, framed like the backhaul
protocol's F_SYNC frames; the neighbour answers as responder. Each session exchanges only
what the other side misses (the ledger's reconciliation). At most one session per peer at a
time, a pause of `min_interval_s` between two with the same peer, and a bound on concurrent
responder sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Coroutine
from typing import Any

from agent.logs import NodeLogger
from agent.recorder import LedgerRecorder
from ledger.backhaul import protocol as p
from ledger.backhaul.exchange import exchange_sync
from ledger.backhaul.mesh import StreamEndpoint
from ledger.errors import LedgerError
from ledger.meshlink import K_DATA, MeshStream, StreamError, is_ledger_payload, parse
from mesh import events as ev

MAX_SESSIONS = 16


class PeerSync:
    """Initiates syncs with new neighbours and answers theirs."""

    def __init__(self, recorder: LedgerRecorder, send_data: Callable[[bytes, bytes], None],
                 own_id: bytes, log: NodeLogger, *,
                 is_backhaul_stream: Callable[[bytes], bool] = lambda sid: False,
                 min_interval_s: float = 30.0, timeout_s: float = 30.0) -> None:
        self.recorder = recorder
        self.send_data = send_data
        self.own_id = own_id
        self.log = log
        self.is_backhaul_stream = is_backhaul_stream
        self.min_interval_s = min_interval_s
        self.timeout_s = timeout_s
        self.endpoints: dict[tuple[bytes, bytes], StreamEndpoint] = {}
        self.last: dict[bytes, float] = {}
        self.results: list[tuple[bytes, str, int]] = []  # (peer, state, blocks received)
        self.counters = {"started": 0, "answered": 0, "complete": 0, "failed": 0,
                         "refused": 0}
        self._tasks: set[asyncio.Task[None]] = set()

    def on_event(self, event: ev.Event) -> bool:
        """Take peer-sync payloads and neighbour arrivals; True when the event was ours."""
        if isinstance(event, ev.DataReceived) and is_ledger_payload(event.payload):
            try:
                sid, kind, seq, _ = parse(event.payload)
            except StreamError:
                return True
            if self.is_backhaul_stream(sid):
                return False
            key = (event.source, sid)
            endpoint = self.endpoints.get(key)
            if endpoint is None:
                if kind != K_DATA or seq != 0 or len(self.endpoints) >= MAX_SESSIONS:
                    self.counters["refused"] += 1
                    return True
                endpoint = self._endpoint(event.source, sid)
                self.counters["answered"] += 1
                self._spawn(self._session(event.source, key, endpoint, initiator=False))
            endpoint.feed(event.payload)
            return True
        if isinstance(event, ev.NeighbourUp) and self.own_id < event.node:
            self.sync_with(event.node)
        return False

    def sync_with(self, peer: bytes, force: bool = False) -> bool:
        """Start a sync with `peer` unless one runs or ran recently; True when started."""
        now = time.monotonic()
        if any(k[0] == peer for k in self.endpoints) or len(self.endpoints) >= MAX_SESSIONS:
            return False
        if not force and now - self.last.get(peer, -1e18) < self.min_interval_s:
            return False
        self.last[peer] = now
        sid = os.urandom(8)
        endpoint = self._endpoint(peer, sid)
        endpoint.stream.open()
        self.counters["started"] += 1
        self._spawn(self._session(peer, (peer, sid), endpoint, initiator=True))
        return True

    def _endpoint(self, peer: bytes, sid: bytes) -> StreamEndpoint:
        endpoint = StreamEndpoint(MeshStream(sid), lambda data: self.send_data(peer, data))
        self.endpoints[(peer, sid)] = endpoint
        return endpoint

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _read(self, endpoint: StreamEndpoint) -> tuple[int, bytes]:
        reader = endpoint.reader
        header = await asyncio.wait_for(reader.readexactly(p.HEADER), self.timeout_s)
        body = await asyncio.wait_for(reader.readexactly(p.frame_length(header)),
                                      self.timeout_s)
        return p.split(body)

    async def _session(self, peer: bytes, key: tuple[bytes, bytes], endpoint: StreamEndpoint,
                       initiator: bool) -> None:
        ledger = self.recorder.ledger
        ledger.flush()
        session = ledger.sync_session(initiator=initiator, peer="mesh:" + peer.hex(),
                                      now=time.time())
        try:
            if initiator:
                endpoint.write(p.frame(p.F_SYNC, session.start(time.time())))
                endpoint.pump()
            await exchange_sync(session, lambda: self._read(endpoint), endpoint.write,
                                endpoint.drain)
            # Let the last frame reach the peer before the stream is reset.
            for _ in range(int(self.timeout_s / 0.05)):
                if endpoint.stream.unsent == 0 and endpoint.stream.get_timer() is None:
                    break
                await asyncio.sleep(0.05)
        except (LedgerError, asyncio.IncompleteReadError, ConnectionError, TimeoutError) as exc:
            session.fail_local(str(exc), time.time())
            self.log.warning("peer_sync_failed", peer=peer.hex(), initiator=initiator,
                             error=f"{type(exc).__name__}: {exc}")
        finally:
            self.endpoints.pop(key, None)
            with contextlib.suppress(StreamError):
                endpoint.stream.reset("done")
            endpoint.pump()
            endpoint.close()
        state = session.state
        self.counters["complete" if state == "complete" else "failed"] += 1
        self.results.append((peer, state, session.stats.blocks_in))
        del self.results[:-20]
        if state == "complete":
            self.log.event("peer_synced", peer=peer.hex(), initiator=initiator,
                           blocks_in=session.stats.blocks_in,
                           blocks_out=session.stats.blocks_out)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
