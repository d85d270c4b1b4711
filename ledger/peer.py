"""Ledger traffic over the mesh, for the agent: one object that routes every ledger payload.

    host = LedgerMeshHost(ledger, send=lambda dest, payload: node.send_data(dest, payload, now()))
    on DataReceived(source, payload) with is_ledger_payload(payload):
        host.on_payload(source, payload)
    await host.sync_peer(neighbour_id)          # sync with a neighbour we met
    await host.sync_backhaul(backhaul_key=KEY)  # reach the backhaul through a gateway

Neighbours' syncs arrive as new streams and are answered by a responder `SyncSession`
(at most `max_peers` at once). Our own streams (to a neighbour, or to the BACKHAUL id through
whichever gateway the mesh picks) are matched by their stream id. Sync messages travel in the
backhaul protocol's frames (`F_SYNC`) over a `MeshStream`, so one framing serves both paths.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Sequence

from ledger.backhaul import protocol as p
from ledger.backhaul.client import SyncResult, sync_over
from ledger.backhaul.mesh import StreamEndpoint
from ledger.errors import AuthError, SyncError
from ledger.ledger import Ledger
from ledger.meshlink import K_DATA, MeshStream, StreamConfig, StreamError, parse
from ledger.sync import SyncConfig, SyncSession, SyncStats
from mesh.frames import BACKHAUL

log = logging.getLogger("manet.ledger.peer")


class LedgerMeshHost:
    """Serves neighbours' syncs and runs ours, over mesh payloads."""

    def __init__(self, ledger: Ledger, send: Callable[[bytes, bytes], None], *,
                 stream_config: StreamConfig | None = None,
                 sync_config: SyncConfig | None = None, max_peers: int = 8,
                 timeout: float = 60.0) -> None:
        self.ledger = ledger
        self.send = send
        self.stream_config = stream_config
        self.sync_config = sync_config
        self.max_peers = max_peers
        self.timeout = timeout
        self._mine: dict[bytes, StreamEndpoint] = {}
        self._served: dict[tuple[bytes, bytes], StreamEndpoint] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.counters = {"served": 0, "refused": 0, "malformed": 0, "cut": 0}

    def on_payload(self, source: bytes, payload: bytes) -> None:
        try:
            stream_id, kind, seq, _ = parse(payload)
        except StreamError:
            self.counters["malformed"] += 1
            return
        endpoint = self._mine.get(stream_id)
        if endpoint is None:
            endpoint = self._served.get((source, stream_id))
        if endpoint is None:
            if kind != K_DATA or seq != 0 or len(self._served) >= self.max_peers:
                self.counters["refused"] += 1
                return
            endpoint = StreamEndpoint(MeshStream(stream_id, config=self.stream_config),
                                      lambda data: self.send(source, data))
            self._served[(source, stream_id)] = endpoint
            task = asyncio.get_running_loop().create_task(self._serve(source, stream_id,
                                                                      endpoint))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        endpoint.feed(payload)

    def _open(self, dest: bytes) -> tuple[bytes, StreamEndpoint]:
        stream_id = os.urandom(8)
        stream = MeshStream(stream_id, config=self.stream_config)
        stream.open()
        endpoint = StreamEndpoint(stream, lambda data: self.send(dest, data))
        self._mine[stream_id] = endpoint
        endpoint.pump()
        return stream_id, endpoint

    def _close(self, endpoint: StreamEndpoint, reason: str) -> None:
        endpoint.stream.reset(reason)
        endpoint.pump()
        endpoint.close()

    async def sync_backhaul(self, *, backhaul_key: bytes | None = None,
                            proofs_for: Sequence[bytes] | None = None) -> SyncResult:
        """Sync with the backhaul through a gateway (our line is down)."""
        stream_id, endpoint = self._open(BACKHAUL)
        try:
            return await sync_over(self.ledger, endpoint.reader, endpoint,
                                   backhaul_key=backhaul_key, timeout=self.timeout,
                                   proofs_for=proofs_for, config=self.sync_config)
        finally:
            self._close(endpoint, "done")
            self._mine.pop(stream_id, None)

    async def sync_peer(self, peer: bytes) -> SyncStats:
        """Sync with a neighbour (initiator). Raises `SyncError` when either side cut it."""
        stream_id, endpoint = self._open(peer)
        session = self.ledger.sync_session(initiator=True, peer=peer.hex(), now=time.time(),
                                           config=self.sync_config)
        try:
            endpoint.write(p.frame(p.F_SYNC, session.start(time.time())))
            await self._converse(session, endpoint)
            await self._settle(endpoint)
            return session.stats
        finally:
            self._close(endpoint, "done")
            self._mine.pop(stream_id, None)

    async def _serve(self, source: bytes, stream_id: bytes, endpoint: StreamEndpoint) -> None:
        self.counters["served"] += 1
        session = self.ledger.sync_session(initiator=False, peer=source.hex(),
                                           now=time.time(), config=self.sync_config)
        try:
            await self._converse(session, endpoint)
            await self._settle(endpoint)
        except SyncError as exc:
            self.counters["cut"] += 1
            log.info("neighbour %s cut: %s", source.hex(), exc)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError, AuthError) as exc:
            log.info("neighbour %s sync ended: %r", source.hex(), exc)
        finally:
            self._close(endpoint, "done")
            self._served.pop((source, stream_id), None)

    async def _settle(self, endpoint: StreamEndpoint) -> None:
        """Let our last message reach the peer before the stream is torn down."""
        deadline = time.monotonic() + self.timeout
        while endpoint.stream.unsent and not endpoint.stream.failed:
            if time.monotonic() > deadline:
                return
            await asyncio.sleep(0.01)

    async def _converse(self, session: SyncSession, endpoint: StreamEndpoint) -> None:
        """Exchange F_SYNC frames until the session completes; raise on a cut."""
        while session.state == "running":
            header = await asyncio.wait_for(endpoint.reader.readexactly(p.HEADER), self.timeout)
            body = await asyncio.wait_for(endpoint.reader.readexactly(p.frame_length(header)),
                                          self.timeout)
            kind, payload = p.split(body)
            if kind != p.F_SYNC:
                raise SyncError("malformed", f"frame type {kind} in a peer sync")
            try:
                reply = session.receive(payload, time.time())
            except SyncError:
                if session.error is not None and session.error.reason != "peer_error":
                    with contextlib.suppress(ConnectionError):
                        endpoint.write(p.frame(p.F_SYNC, session.error_message()))
                raise
            if reply is not None:
                endpoint.write(p.frame(p.F_SYNC, reply))
                await endpoint.drain()
