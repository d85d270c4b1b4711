"""Reaching the backhaul through a gateway over the mesh (asyncio edge).

A device without a line runs the very same backhaul protocol (`client.sync_over`) over a
`MeshStream` addressed to the mesh's BACKHAUL id; the gateway's `GatewayRelay` opens one TCP
(or TLS) connection to the backhaul per device stream and pipes bytes both ways. The gateway
sees only signed blocks and the device's signed handshake: the backhaul authenticates the
device end to end, and the device checks the backhaul's key, so a gateway cannot pose as
either.

Wiring in the agent (sketch):
    device:   client = MeshSyncClient(ledger, lambda p: node.send_data(BACKHAUL, p, now()))
              DataReceived with is_ledger_payload(payload) -> client.on_payload(payload)
              await client.sync(backhaul_key=...)
    gateway:  relay = GatewayRelay(host, port, lambda dest, p: node.send_data(dest, p, now()))
              BackhaulData with is_ledger_payload(payload) -> relay.on_backhaul_data(src, payload)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ledger.backhaul import protocol as p
from ledger.backhaul.client import SyncResult, sync_over
from ledger.ledger import Ledger
from ledger.meshlink import K_DATA, MeshStream, StreamConfig, StreamError, parse
from ledger.sync import SyncConfig

if TYPE_CHECKING:
    import ssl  # annotations only: the agent loads OpenSSL only when it uses TLS

log = logging.getLogger("manet.ledger.mesh")
HIGH_WATER = 64 * 1024


class StreamEndpoint:
    """Binds a `MeshStream` to the event loop: a StreamReader for incoming bytes, a writer
    interface for outgoing ones, and the stream's one retransmission timer."""

    def __init__(self, stream: MeshStream, send: Callable[[bytes], None]) -> None:
        self.stream = stream
        self.send = send
        self.loop = asyncio.get_running_loop()
        self.reader = asyncio.StreamReader(limit=p.MAX_FRAME_BYTES)
        self._timer: asyncio.TimerHandle | None = None
        self._writable = asyncio.Event()
        self._writable.set()
        self.closed = False

    def feed(self, payload: bytes) -> None:
        """A payload of this stream arrived from the mesh."""
        with contextlib.suppress(StreamError):  # failed now: pump tells the reader and the peer
            self.stream.receive(payload, self.loop.time())
        self.pump()

    def pump(self) -> None:
        now = self.loop.time()
        data = self.stream.read()
        if data and not self.reader.at_eof():
            self.reader.feed_data(data)
        for payload in self.stream.datagrams_to_send(now):
            self.send(payload)
        if self.stream.failed:
            if self._timer is not None:
                self._timer.cancel()
            if self.reader.exception() is None and not self.reader.at_eof():
                self.reader.set_exception(ConnectionResetError(str(self.stream.error)))
            self._writable.set()
            return
        if self.stream.unsent <= HIGH_WATER:
            self._writable.set()
        deadline = self.stream.get_timer()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if deadline is not None:
            self._timer = self.loop.call_at(deadline, self._on_timer, deadline)

    def _on_timer(self, deadline: float) -> None:
        self._timer = None
        self.stream.handle_timer(max(deadline, self.loop.time()))
        self.pump()

    # --- the writer interface of `client.sync_over`
    def write(self, data: bytes) -> None:
        if self.stream.failed:
            raise ConnectionResetError(str(self.stream.error))
        self.stream.write(data)
        if self.stream.unsent > HIGH_WATER:
            self._writable.clear()
        self.pump()

    async def drain(self) -> None:
        await self._writable.wait()
        if self.stream.failed:
            raise ConnectionResetError(str(self.stream.error))

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.closed = True

    async def wait_closed(self) -> None:
        return None


class MeshSyncClient:
    """A device's sync with the backhaul through whichever gateway the mesh picks."""

    def __init__(self, ledger: Ledger, send: Callable[[bytes], None], *,
                 config: StreamConfig | None = None) -> None:
        self.ledger = ledger
        self.send = send
        self.config = config
        self.endpoint: StreamEndpoint | None = None
        self._one_at_a_time = asyncio.Lock()

    def on_payload(self, payload: bytes) -> None:
        """A ledger payload from the mesh (DataReceived from the gateway)."""
        if self.endpoint is not None:
            self.endpoint.feed(payload)

    async def sync(self, *, backhaul_key: bytes | None = None, timeout: float = 60.0,
                   proofs_for: Sequence[bytes] | None = None,
                   config: SyncConfig | None = None) -> SyncResult:
        """Sync once; a call made while another runs waits for it (one stream at a time)."""
        async with self._one_at_a_time:
            stream = MeshStream(os.urandom(8), config=self.config)
            stream.open()
            endpoint = self.endpoint = StreamEndpoint(stream, self.send)
            endpoint.pump()
            try:
                return await sync_over(self.ledger, endpoint.reader, endpoint,
                                       backhaul_key=backhaul_key, timeout=timeout,
                                       proofs_for=proofs_for, config=config)
            finally:
                endpoint.stream.reset("done")
                endpoint.pump()
                endpoint.close()
                self.endpoint = None


class GatewayRelay:
    """On a gateway: one backhaul connection per device stream, bytes piped both ways.

    Bounded: at most `max_streams` devices at once; a stream whose first payload is not its
    first data chunk is ignored (a stale stream after the gateway restarted).
    """

    def __init__(self, host: str, port: int, send: Callable[[bytes, bytes], None], *,
                 ssl_context: ssl.SSLContext | None = None, max_streams: int = 64,
                 config: StreamConfig | None = None) -> None:
        self.host, self.port = host, port
        self.send = send
        self.ssl_context = ssl_context
        self.max_streams = max_streams
        self.config = config
        self.streams: dict[tuple[bytes, bytes], StreamEndpoint] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.counters = {"opened": 0, "refused": 0, "malformed": 0, "failed": 0}

    def on_backhaul_data(self, source: bytes, payload: bytes) -> None:
        try:
            stream_id, kind, seq, _ = parse(payload)
        except StreamError:
            self.counters["malformed"] += 1
            return
        key = (source, stream_id)
        endpoint = self.streams.get(key)
        if endpoint is None:
            if kind != K_DATA or seq != 0 or len(self.streams) >= self.max_streams:
                self.counters["refused"] += 1
                return
            endpoint = StreamEndpoint(MeshStream(stream_id, config=self.config),
                                      lambda data: self.send(source, data))
            self.streams[key] = endpoint
            self.counters["opened"] += 1
            task = asyncio.get_running_loop().create_task(self._pipe(key, endpoint))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        endpoint.feed(payload)

    async def close(self) -> None:
        """Stop relaying: cancel every device's pipe and wait until each has cleaned up."""
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _pipe(self, key: tuple[bytes, bytes], endpoint: StreamEndpoint) -> None:
        writer: asyncio.StreamWriter | None = None
        copies: list[asyncio.Future[None]] = []
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port,
                                                           ssl=self.ssl_context)
            copies = [asyncio.ensure_future(self._copy(endpoint.reader, writer)),
                      asyncio.ensure_future(self._copy_down(reader, endpoint))]
            await asyncio.wait(copies, return_when=asyncio.FIRST_COMPLETED)
        except (OSError, ConnectionError) as exc:
            self.counters["failed"] += 1
            log.info("relay for %s failed: %r", key[0].hex(), exc)
        finally:
            # Also when this pipe is cancelled: stop both copies and collect how they ended,
            # or a copy left running fails later with nobody to retrieve its exception.
            for task in copies:
                task.cancel()
            for outcome in await asyncio.gather(*copies, return_exceptions=True):
                if isinstance(outcome, Exception) and not isinstance(outcome, OSError):
                    log.warning("relay for %s: copy failed: %r", key[0].hex(), outcome)
            endpoint.stream.reset("relay closed")
            endpoint.pump()
            endpoint.close()
            self.streams.pop(key, None)
            if writer is not None:
                writer.close()
                with contextlib.suppress(ConnectionError, OSError):
                    await writer.wait_closed()

    @staticmethod
    async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()

    @staticmethod
    async def _copy_down(reader: asyncio.StreamReader, endpoint: StreamEndpoint) -> None:
        while data := await reader.read(65536):
            endpoint.write(data)
            await endpoint.drain()
        # The backhaul hung up: let the device read what is still in flight, then give it a
        # moment to hang up itself. Our reset could overtake its reading of the last frame:
        # a reset makes the device's reader drop what it holds unread.
        rto = endpoint.stream.config.rto_s
        while endpoint.stream.unsent and not endpoint.stream.failed:
            await asyncio.sleep(rto / 4)
        deadline = asyncio.get_running_loop().time() + 4 * rto
        while not endpoint.stream.failed and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(rto / 4)
