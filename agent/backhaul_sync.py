"""Syncing the node's ledger with the backhaul: directly when this node has a line, through a
gateway over the mesh when it has not; and, on a gateway, relaying other nodes' syncs.

Uses the ledger's backhaul protocol (`ledger.backhaul`): `sync_with_backhaul` over TCP, and
`MeshSyncClient` / `GatewayRelay` over a reliable stream of mesh payloads to BACKHAUL (the
gateway sees only signed blocks; the backhaul authenticates the device end to end). A sync
runs every `interval_s`, and at once when this node's line comes back or a gateway appears.

Through a gateway a device only uploads: the mesh is the scarce link while lines are down,
and fetching the fleet's feeds through it cost 13 times the mesh bytes of uploading alone in
the simulator's quick demo (docs/sim-radio.md, "Ledgers"). Neighbours still exchange feeds
(agent/peer_sync.py), and a device fetches what it lacks once its own line is back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from agent.config import BackhaulSection, ConfigError
from agent.logs import NodeLogger
from agent.recorder import LedgerRecorder
from ledger.backhaul.client import SyncResult, sync_with_backhaul
from ledger.backhaul.mesh import GatewayRelay, MeshSyncClient
from ledger.errors import LedgerError
from ledger.meshlink import is_ledger_payload
from ledger.sync import SyncConfig
from mesh import events as ev
from mesh.frames import BACKHAUL
from mesh.line import LineStatus

if TYPE_CHECKING:
    import ssl

UPLOAD_ONLY = SyncConfig(fetch=False)


def tls_context(cafile: str) -> ssl.SSLContext:
    """A client context that trusts `cafile` only and checks the backhaul's host name."""
    import ssl  # here: an agent without TLS does not load OpenSSL (agent/launch.py)

    try:
        return ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("backhaul.tls_ca", f"cannot load {cafile}: {exc}") from exc


class BackhaulSync:
    """Owns the periodic sync task and the gateway relay of one agent."""

    def __init__(self, section: BackhaulSection, recorder: LedgerRecorder,
                 send_data: Callable[[bytes, bytes], None],
                 line: Callable[[], LineStatus], has_gateway: Callable[[], bool],
                 log: NodeLogger) -> None:
        self.section = section
        self.recorder = recorder
        self.send_data = send_data
        self.line = line
        self.has_gateway = has_gateway
        self.log = log
        self.key = bytes.fromhex(section.key) if section.key else None
        self.tls = tls_context(section.tls_ca) if section.tls_ca else None
        self.client = MeshSyncClient(recorder.ledger, lambda p: send_data(BACKHAUL, p))
        self.relay = GatewayRelay(section.host, section.port, send_data, ssl_context=self.tls)
        self.results: list[SyncResult] = []
        self.failures = 0
        self._wake = asyncio.Event()
        self._one_at_a_time = asyncio.Lock()  # MeshSyncClient holds one stream at a time
        self._task: asyncio.Task[None] | None = None

    def on_event(self, event: ev.Event) -> bool:
        """Take ledger payloads and line/gateway changes; True when the event was ours."""
        if isinstance(event, ev.DataReceived) and is_ledger_payload(event.payload):
            self.client.on_payload(event.payload)
            return True
        if isinstance(event, ev.BackhaulData) and is_ledger_payload(event.payload):
            self.relay.on_backhaul_data(event.source, event.payload)
            return True
        if ((isinstance(event, ev.LineStatusChanged) and event.new.is_gateway)
                or (isinstance(event, ev.GatewayChanged) and event.new is not None)):
            self._wake.set()
        return False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.section.interval_s)
            self._wake.clear()
            await self.sync_once()

    async def sync_once(self) -> SyncResult | None:
        """One sync by the best way available now; None when the backhaul is out of reach."""
        async with self._one_at_a_time:
            return await self._sync()

    async def _sync(self) -> SyncResult | None:
        self.recorder.ledger.flush()
        s = self.section
        try:
            if self.line().is_gateway:
                way = "direct"
                result = await sync_with_backhaul(self.recorder.ledger, s.host, s.port,
                                                  backhaul_key=self.key, timeout=s.timeout_s,
                                                  ssl_context=self.tls)
            elif self.has_gateway():
                way = "mesh"
                result = await self.client.sync(backhaul_key=self.key, timeout=s.timeout_s,
                                                config=UPLOAD_ONLY)
            else:
                return None
        except (LedgerError, OSError, TimeoutError) as exc:
            self.failures += 1
            self.log.warning("ledger_sync_failed", error=f"{type(exc).__name__}: {exc}")
            return None
        self.results.append(result)
        del self.results[:-10]
        self.log.event("ledger_synced", way=way, state=result.state,
                       finalized=result.finalized, seconds=round(result.seconds, 3),
                       error=result.error or "")
        return result

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.relay.close()
