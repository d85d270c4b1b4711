"""The agent process: one asyncio loop owning the mesh core, its links, discovery, the line
monitor, the control socket, metrics and the ledger recorder.

Start-up order: state (counter floor) -> core -> links -> control socket -> line monitor ->
discovery -> metrics. Shutdown (SIGTERM/SIGINT) runs it backwards after leaving the mesh:
a gateway first announces its line as down (HELLO + RERR to the nodes that use it) so that
they switch to another gateway at once instead of after HELLO loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import random
import signal
import time
from collections import deque
from collections.abc import Callable, Coroutine, Hashable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.blast import BLAST_PREFIX, Blast
from agent.config import AgentConfig, ConfigError
from agent.control import CommandError, ControlServer
from agent.driver import CoreDriver
from agent.line_monitor import LineMonitor
from agent.logs import NodeLogger
from agent.memory import SETTLE_AFTER_S, settle
from agent.metrics import MetricsServer, Snapshot
from agent.state import AgentState
from agent.transports import TransportError
from agent.transports.udp import interface_addresses, open_udp_link
from mesh import events as ev
from mesh.config import BLE, BLE_MIN, WIFI, LinkProfile, MeshConfig
from mesh.frames import BACKHAUL
from mesh.identity import Identity
from mesh.line import LINE_DOWN, LineStatus
from mesh.node import MeshNode, PayloadTooLarge

if TYPE_CHECKING:
    from agent.backhaul_sync import BackhaulSync
    from agent.discovery import Discovery, Peer
    from agent.module_host import ModuleHost
    from agent.peer_sync import PeerSync
    from agent.recorder import LedgerRecorder

BLE_LINK_OVERHEAD = 4
"""ATT header + notification tag (agent.transports.ble.LINK_OVERHEAD, not imported here so
that bleak loads only when BLE is on)."""
PER_PACKET = (ev.DataReceived, ev.BackhaulData, ev.DataDropped)
PING = b"\x00manet-ping"
PONG = b"\x00manet-pong"
INBOX_SIZE = 100
STATE_SAVE_S = 30.0
MEASURED_HOP_FLOOR_S = 0.002
"""Floor of the measured per-hop time on IP links (see Agent.mesh_config)."""


@dataclass(frozen=True, slots=True)
class BleEnvironment:
    """What the BLE link runs on: our peripheral role and bleak's backends and arguments
    (bumble emulation in tests; BlueZ on a Raspberry Pi)."""

    peripheral: Any
    bleak_kwargs: dict[str, Any]
    scanner_backend: Any = None
    client_backend: Any = None


@dataclass(frozen=True, slots=True)
class Received:
    """An application payload that reached this agent (or, on a gateway, the backhaul)."""

    source: str
    payload_hex: str
    hops: int
    backhaul: bool
    time: float


def parse_dest(text: Any) -> bytes:
    """A destination from the control API: a 16-hex-digit node id or "backhaul"."""
    if text == "backhaul":
        return BACKHAUL
    try:
        dest = bytes.fromhex(str(text))
    except ValueError as exc:
        raise CommandError(f"dest must be a node id in hex or 'backhaul', got {text!r}") from exc
    if len(dest) != 8:
        raise CommandError("a node id is 16 hex digits")
    return dest


def event_fields(event: ev.Event) -> dict[str, Any]:
    """Flat, loggable fields of a core event (node ids as hex, line status compact)."""
    fields: dict[str, Any] = {}
    for key, value in asdict(event).items():
        if key in ("time", "payload"):
            continue
        if key == "node":
            key = "peer"  # "node" is this agent's id on every line
        if isinstance(value, bytes):
            fields[key] = value.hex()
        elif isinstance(value, tuple):
            fields[key] = ",".join(v.hex() if isinstance(v, bytes) else str(v) for v in value)
        elif isinstance(value, dict):  # a LineStatus, flattened by asdict
            fields[key] = line_text(LineStatus(**value))
        else:
            fields[key] = value
    if isinstance(event, ev.DataReceived | ev.BackhaulData):
        fields["bytes"] = len(event.payload)
    return fields


def line_text(line: LineStatus) -> str:
    if not line.connected:
        return "down"
    state = "gateway" if line.is_gateway else "no-backhaul"
    return f"{state}/{line.technology}/{line.signal_dbm}dBm/{line.rtt_ms}ms"


def event_name(event: ev.Event) -> str:
    name = type(event).__name__
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


class Agent:
    """One running agent. `await agent.start()`, then `await agent.stop()` (or `run()`)."""

    def __init__(self, config: AgentConfig, identity: Identity,
                 log: NodeLogger | None = None, ble: BleEnvironment | None = None) -> None:
        if not (config.udp or config.sim.enabled or config.ble.enabled
                or config.wifi_direct.enabled):
            raise ConfigError("udp", "no link configured: add a [[udp]] table or enable "
                                     "[sim], [ble] or [wifi_direct]")
        self.ble_env = ble
        self.p2p: Any = None
        self.config = config
        self.identity = identity
        self.node_hex = identity.node_id.hex()
        self.log = log or NodeLogger(self.node_hex)
        self.state = AgentState(config.node.state_dir)
        self.links: dict[str, Any] = {}
        self.inbox: deque[Received] = deque(maxlen=INBOX_SIZE)
        self.app_rx = {"packets": 0, "bytes": 0, "first": 0.0, "last": 0.0}
        self.listeners: list[Callable[[ev.Event], None]] = []
        self.peers_seen = 0
        self.started = 0.0
        self.start_wall = 0.0
        self._pings: dict[bytes, asyncio.Future[float]] = {}
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.node: MeshNode | None = None
        self.driver: CoreDriver | None = None
        self.monitor: LineMonitor | None = None
        self.discovery: Discovery | None = None
        self.control: ControlServer | None = None
        self.metrics: MetricsServer | None = None
        self.ledger: LedgerRecorder | None = None
        self.backhaul: BackhaulSync | None = None
        self.peer_sync: PeerSync | None = None
        self.modules: ModuleHost | None = None
        self.blast: Blast | None = None

    # ----------------------------------------------------------------- life cycle

    def mesh_config(self) -> MeshConfig:
        """[mesh] as written, with the link-dependent default of `min_node_traversal_s`.

        On IP links (UDP on Ethernet, veth, Wi-Fi; Wi-Fi Direct) ring searches wait for the
        hop time measured from HELLO echoes (RTT + 4 RTTVAR, as TCP's RTO), floored at
        MEASURED_HOP_FLOOR_S, instead of RFC 3561's 40 ms per hop: a route over 4 hops is
        found in tens of milliseconds instead of 0.65 s. The estimate grows with queueing, and
        a ring that was waited for too briefly costs one more RREQ at a larger TTL, not a
        lost route. BLE and the simulated medium keep RFC timing, which the simulator's
        contended shared-channel runs favoured (2-7 points more delivered).
        """
        mesh = self.config.mesh
        ip_only = (bool(self.config.udp) or self.config.wifi_direct.enabled) and not (
            self.config.ble.enabled or self.config.sim.enabled)
        if ip_only and "min_node_traversal_s" not in self.config.mesh_keys:
            mesh = dataclasses.replace(mesh, min_node_traversal_s=MEASURED_HOP_FLOOR_S)
        return mesh

    def profiles(self) -> dict[str, LinkProfile]:
        profiles = {
            u.iface: LinkProfile(name="udp", mtu=u.mtu, bitrate_bps=u.bitrate_bps,
                                 node_traversal_s=WIFI.node_traversal_s, range_m=WIFI.range_m)
            for u in self.config.udp
        }
        if self.config.ble.enabled:
            b = self.config.ble
            base = BLE if b.att_mtu > 23 else BLE_MIN
            profiles[b.name] = dataclasses.replace(base, mtu=b.att_mtu - BLE_LINK_OVERHEAD)
        if self.config.wifi_direct.enabled:
            w = self.config.wifi_direct
            profiles[w.name] = dataclasses.replace(WIFI, mtu=w.mtu)
        if self.config.sim.enabled:
            s = self.config.sim
            profiles[s.name] = LinkProfile(name="sim", mtu=s.mtu, bitrate_bps=WIFI.bitrate_bps,
                                           node_traversal_s=WIFI.node_traversal_s,
                                           range_m=WIFI.range_m)
        return profiles

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.started = loop.time()
        self.start_wall = time.time()
        self.state.load()
        for udp in self.config.udp:
            self.links[udp.iface] = await open_udp_link(udp, self._deliver, self._held)
        profiles = self.profiles()
        if self.config.sim.enabled:
            from agent.transports.sim import open_sim_link

            sim = await open_sim_link(self.config.sim, self.identity.node_id, self._deliver)
            self.links[sim.iface] = sim
            if sim.client.mtu and sim.client.mtu < profiles[sim.iface].mtu:
                profiles[sim.iface] = dataclasses.replace(profiles[sim.iface],
                                                          mtu=sim.client.mtu)
        if self.config.ble.enabled:
            self.links[self.config.ble.name] = self._ble_link()
        if self.config.wifi_direct.enabled:
            await self._start_wifi_direct()
        seed = self.config.node.seed
        rng = random.Random(seed if seed is not None else int.from_bytes(os.urandom(8)))
        self.node = MeshNode(identity=self.identity, rng=rng, now=loop.time(),
                             interfaces=profiles, line=LINE_DOWN,
                             config=self.mesh_config(), counter_start=self.state.counter_start)
        self.driver = CoreDriver(self.node, loop, on_error=self._link_error)
        if self.config.ledger.enabled:
            from agent.recorder import LedgerRecorder

            path = self.config.ledger.path or str(Path(self.config.node.state_dir) /
                                                  "ledger.sqlite")
            self.ledger = LedgerRecorder(
                path, self.identity, loop,
                on_block=lambda h, n: self.log.event("ledger_block", height=h, txs=n),
                on_error=lambda m: self.log.error("ledger_error", error=m))
            self.driver.listeners.append(self.ledger.record)
            if self.config.ledger.peer_sync:
                from agent.peer_sync import PeerSync

                self.peer_sync = PeerSync(
                    self.ledger, self.driver.send_data, self.identity.node_id, self.log,
                    is_backhaul_stream=self._is_backhaul_stream,
                    min_interval_s=self.config.ledger.peer_sync_interval_s)
            if self.config.backhaul.host:
                from agent.backhaul_sync import BackhaulSync

                node = self.node
                self.backhaul = BackhaulSync(
                    self.config.backhaul, self.ledger, self.driver.send_data,
                    line=lambda: node.line, has_gateway=lambda: node.gateway is not None,
                    log=self.log)
        self._start_modules()
        self.driver.listeners.append(self._on_event)
        for name, link in self.links.items():
            self.driver.add_link(name, link)
        if self.config.ble.enabled:
            await self.links[self.config.ble.name].start()
        self.control = ControlServer(self.config.control.socket, self._handlers())
        await self.control.start()
        self.monitor = LineMonitor(self.config.line, self._on_line,
                                   on_error=lambda m: self.log.warning("line_source_error",
                                                                       error=m))
        await self.monitor.check()
        self.monitor.start()
        if self.config.discovery.enabled and self.config.udp:
            # mDNS probing and announcing take about a second: do not hold the mesh for it.
            self._spawn(self._start_discovery())
        if self.config.metrics.enabled:
            m = self.config.metrics
            self.metrics = MetricsServer(m.address, m.port, self.snapshot)
            await self.metrics.start()
        self._spawn(self._save_state_periodically())
        if self.backhaul is not None:
            self.backhaul.start()
        self.driver.flush()
        self.log.event("agent_started", links=",".join(self.links), restarts=self.state.restarts,
                       startup_ms=round((loop.time() - self.started) * 1000, 1))

    def _start_modules(self) -> None:
        """The module host (power interchange, charging sessions), recording in our ledger."""
        from agent.module_host import ModuleHost

        assert self.node is not None and self.driver is not None
        recorder = self.ledger

        def record(rec: dict[str, Any]) -> None:
            from agent.modules.records import record as append
            from ledger.errors import LedgerError

            try:
                if recorder is not None:
                    append(recorder.ledger, rec, time.time())
            except LedgerError as exc:
                self.log.error("ledger_error", error=str(exc), record=rec.get("type"))

        self.modules = ModuleHost(self.config.interchange, self.identity, self.driver.send_data,
                                  self.driver.loop, self.log,
                                  self.node.config.max_payload_bytes,
                                  record if recorder is not None else None)

    def _ble_link(self) -> Any:
        from agent.transports.ble import BleLink

        b = self.config.ble
        env = self.ble_env
        if env is None:  # a real adapter: BlueZ for both roles (tests pass bumble instead)
            from agent.transports.ble import RX_UUID, SERVICE_UUID, TAG_UUID, TX_UUID
            from agent.transports.ble_bluez import BluezPeripheral

            env = BleEnvironment(
                peripheral=BluezPeripheral(SERVICE_UUID, RX_UUID, TX_UUID, TAG_UUID,
                                           adapter=b.adapter),
                bleak_kwargs={"bluez": {"adapter": b.adapter}})
        return BleLink(iface=b.name, node_id=self.identity.node_id, deliver=self._deliver,
                       peripheral=env.peripheral, att_mtu=b.att_mtu,
                       connect_timeout_s=b.connect_timeout_s, retry_s=b.retry_s,
                       bleak_kwargs=env.bleak_kwargs, scanner_backend=env.scanner_backend,
                       client_backend=env.client_backend)

    async def _start_wifi_direct(self) -> None:
        from agent.config import UdpSection
        from agent.wifi_direct import P2PManager, WifiDirectLink, WpaError

        w = self.config.wifi_direct
        link = WifiDirectLink(iface=w.name, udp=UdpSection(interface="", port=w.port,
                                                           mtu=w.mtu),
                              deliver=self._deliver)
        self.links[w.name] = link
        self.p2p = P2PManager(ctrl_dir=w.ctrl_dir, interface=w.interface, role=w.role,
                              on_group=link.group_started, on_group_removed=link.group_removed,
                              on_log=lambda name, fields: self.log.event(name, **fields),
                              go_intent=w.go_intent)
        try:
            await self.p2p.start()
        except WpaError as exc:
            raise TransportError(str(exc)) from exc

    async def _start_discovery(self) -> None:
        from agent.discovery import Discovery  # zeroconf costs memory: load it only when used

        addresses: list[str] = []
        for udp in self.config.udp:
            v4, _ = interface_addresses(udp.interface)
            addresses += v4
        if not addresses:
            self.log.warning("discovery_disabled", reason="no IPv4 address on the UDP links")
            return
        d = self.config.discovery
        self.discovery = Discovery(node_id=self.node_hex, name=self.config.node.name,
                                   service_type=d.service_type, port=self.config.udp[0].port,
                                   addresses=addresses, interfaces=d.interfaces or addresses,
                                   on_peer=self._on_peer)
        self.discovery.line = self.monitor.status if self.monitor else LINE_DOWN
        await self.discovery.start()
        self.log.event("discovery_started", service=d.service_type,
                       addresses=",".join(addresses))

    async def stop(self) -> None:
        """Leave the mesh, flush the ledger, close everything; safe to call twice."""
        if self.driver is None:  # start() failed before the core existed: close what opened
            for link in self.links.values():
                if hasattr(link, "close_async"):
                    await link.close_async()
                else:
                    link.close()
            self.links.clear()
            if self.p2p is not None:
                await self.p2p.stop()
                self.p2p = None
            return
        if self.driver.closed:
            return
        self.log.event("agent_stopping")
        if self.node is not None and self.node.line.is_gateway:
            self.driver.set_line(LINE_DOWN)  # tell users of this gateway to switch now
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.monitor is not None:
            await self.monitor.stop()
        if self.backhaul is not None:
            await self.backhaul.stop()
        if self.peer_sync is not None:
            await self.peer_sync.stop()
        if self.metrics is not None:
            await self.metrics.stop()
        if self.modules is not None:
            self.modules.close()
        if self.discovery is not None:
            await self.discovery.stop()
        if self.control is not None:
            await self.control.stop()
        self.driver.close()
        if self.ledger is not None:
            self.ledger.close()  # after the last events: the gateway's own line-down is kept
        if self.p2p is not None:
            await self.p2p.stop()
        for link in self.links.values():
            if hasattr(link, "close_async"):
                await link.close_async()
            else:
                link.close()
        self._save_state()
        for fut in self._pings.values():
            if not fut.done():
                fut.cancel()
        self.log.event("agent_stopped")

    async def run(self) -> None:
        """Start, serve until SIGTERM or SIGINT, stop."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        try:
            await self.start()
            self._spawn(self._settle_memory())  # process-wide, so here and not in start()
            await self._stopping.wait()
        finally:
            await self.stop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            self.log.error("background_task_failed", error=f"{type(exc).__name__}: {exc}")

    def request_stop(self) -> None:
        self._stopping.set()

    def _frames_sent(self) -> int:
        if self.node is None:
            return 0
        return sum(v for k, v in self.node.stats.items()
                   if k.startswith("tx_") and k not in ("tx_bytes", "tx_frag"))

    def _save_state(self) -> None:
        try:
            self.state.save(self._frames_sent())
        except OSError as exc:
            self.log.error("state_save_failed", error=exc.strerror or str(exc))

    async def _settle_memory(self) -> None:
        await asyncio.sleep(SETTLE_AFTER_S)
        settle()

    async def _save_state_periodically(self) -> None:
        while True:
            self._save_state()
            await asyncio.sleep(STATE_SAVE_S)

    # ----------------------------------------------------------------- callbacks

    def _deliver(self, data: bytes, iface: str, link_src: Hashable) -> None:
        if self.driver is not None:  # frames heard while the core is being built are lost
            self.driver.datagram_received(data, iface, link_src)

    def _held(self) -> contextlib.AbstractContextManager[object]:
        """A burst of frames from one link: the core's output is flushed once, at the end."""
        return self.driver.held() if self.driver is not None else contextlib.nullcontext()

    def _link_error(self, iface: str, exc: BaseException) -> None:
        self.log.debug("link_error", iface=iface, error=str(exc))

    def _on_line(self, status: LineStatus) -> None:
        self.log.event("line_observed", line=line_text(status))
        if self.driver is not None:
            self.driver.set_line(status)
        if self.discovery is not None:
            self._spawn(self.discovery.update_line(status))
        if self.config.ble.enabled and self.config.ble.name in self.links:
            self._spawn(self.links[self.config.ble.name].update_line(status))

    def _on_peer(self, node_id: str, peer: Peer | None) -> None:
        if peer is None:
            self.log.event("peer_gone", peer=node_id)
            return
        self.peers_seen += 1
        self.log.event("peer_discovered", peer=node_id, addresses=",".join(peer.addresses),
                       gateway=peer.gateway, line="up" if peer.line_up else "down")

    def _is_backhaul_stream(self, sid: bytes) -> bool:
        endpoint = self.backhaul.client.endpoint if self.backhaul is not None else None
        return endpoint is not None and endpoint.stream.stream_id == sid

    def _on_event(self, event: ev.Event) -> None:
        if self.peer_sync is not None and self.peer_sync.on_event(event):
            return
        if self.backhaul is not None and self.backhaul.on_event(event):
            return
        if self.modules is not None and self.modules.on_event(event):
            return
        if isinstance(event, ev.DataReceived) and event.payload.startswith((PING, PONG)):
            self._on_ping(event)
            return
        if (isinstance(event, ev.DataReceived) and event.payload.startswith(BLAST_PREFIX)
                and self._blast().on_payload(event.source, event.payload)):
            return
        # Per-packet events go to debug: at info they would flood journald under load.
        level = logging.DEBUG if isinstance(event, PER_PACKET) else logging.INFO
        if self.log.logger.isEnabledFor(level):  # fields cost ~10 us: not for every packet
            self.log.event(event_name(event), level, **event_fields(event))
        if isinstance(event, ev.DataReceived | ev.BackhaulData):
            self.inbox.append(Received(event.source.hex(), event.payload[:64].hex(), event.hops,
                                       isinstance(event, ev.BackhaulData), event.time))
            rx = self.app_rx
            if rx["packets"] == 0:
                rx["first"] = event.time
            rx["packets"] += 1
            rx["bytes"] += len(event.payload)
            rx["last"] = event.time
        for listener in self.listeners:
            listener(event)

    def _on_ping(self, event: ev.DataReceived) -> None:
        body = event.payload[len(PING):]
        if event.payload.startswith(PING):
            if self.driver is not None:
                self.driver.send_data(event.source, PONG + body)
            return
        fut = self._pings.pop(body, None)
        if fut is not None and not fut.done():
            fut.set_result(asyncio.get_running_loop().time())

    # ----------------------------------------------------------------- control API

    def _handlers(self) -> dict[str, Any]:
        return {"status": self._cmd_status, "routes": self._cmd_routes,
                "neighbours": self._cmd_neighbours, "peers": self._cmd_peers,
                "inbox": self._cmd_inbox, "send": self._cmd_send, "ping": self._cmd_ping,
                "blast": self._cmd_blast, "rx_reset": self._cmd_rx_reset,
                "ledger": self._cmd_ledger,
                "sync": self._cmd_sync, "stop": self._cmd_stop,
                **(self.modules.handlers() if self.modules is not None else {})}

    def status(self) -> dict[str, Any]:
        assert self.node is not None and self.driver is not None
        node = self.node
        gw = node.gateway
        now = self.driver.now()
        return {
            "node_id": self.node_hex,
            "name": self.config.node.name,
            "uptime_s": round(now - self.started, 3),
            "line": asdict(node.line),
            "is_gateway": node.line.is_gateway,
            "gateway": None if gw is None else {"node": gw.node.hex(),
                                                "next_hop": gw.next_hop.hex(),
                                                "hops": gw.hops, "score": round(gw.score, 3)},
            "neighbours": len(node.neighbours()),
            "node_traversal_ms": round(node.node_traversal_s * 1000, 3),
            "routes": sum(1 for r in node.routes(now) if r.valid),
            "links": {name: {"tx": link.tx, "rx": link.rx,
                             **{k: getattr(link, k) for k in ("tx_calls", "rx_calls")
                                if hasattr(link, k)}}
                      for name, link in self.links.items()},
            "peers": len(self.discovery.peers) if self.discovery else 0,
            "app_rx": dict(self.app_rx),
            "stats": dict(node.stats),
            "ledger_height": self._ledger_height(),
            "restarts": self.state.restarts,
        }

    def _ledger_height(self) -> int | None:
        if self.ledger is None:
            return None
        return self.ledger.height()

    def snapshot(self) -> Snapshot:
        assert self.node is not None and self.driver is not None
        routes = self.node.routes(self.driver.now())
        return Snapshot(
            stats=dict(self.node.stats), routes=len(routes),
            valid_routes=sum(1 for r in routes if r.valid),
            neighbours=len(self.node.neighbours()), line_up=self.node.line.connected,
            gateway=self.node.line.is_gateway, has_gateway=self.node.gateway is not None,
            ledger_height=self._ledger_height(),
            sync_lag_s=self.ledger.sync_lag_s() if self.ledger is not None else None,
            link_tx={k: v.tx for k, v in self.links.items()},
            link_rx={k: v.rx for k, v in self.links.items()},
        )

    async def _cmd_status(self, req: dict[str, Any]) -> Any:
        return self.status()

    async def _cmd_routes(self, req: dict[str, Any]) -> Any:
        assert self.node is not None and self.driver is not None
        return [{"dest": r.dest.hex(), "next_hop": r.next_hop.hex(), "hops": r.hops,
                 "seq": r.seq, "valid": r.valid, "expires_in_s": round(r.expires_in_s, 3),
                 "gateway": r.gateway}
                for r in sorted(self.node.routes(self.driver.now()), key=lambda r: r.dest)]

    async def _cmd_neighbours(self, req: dict[str, Any]) -> Any:
        assert self.node is not None and self.driver is not None
        now = self.driver.now()
        return [{"node": n.node.hex(), "iface": n.iface, "link": _link_text(n.link),
                 "quality": round(n.quality, 3), "line": line_text(n.line),
                 "last_heard_s": round(now - n.last_heard, 3)}
                for n in sorted(self.node.neighbours(), key=lambda n: n.node)]

    async def _cmd_peers(self, req: dict[str, Any]) -> Any:
        if self.discovery is None:
            return []
        return [asdict(p) for p in sorted(self.discovery.peers.values(),
                                          key=lambda p: p.node_id)]

    async def _cmd_inbox(self, req: dict[str, Any]) -> Any:
        return [asdict(r) for r in self.inbox]

    def _payload(self, req: dict[str, Any]) -> bytes:
        if "hex" in req:
            try:
                return bytes.fromhex(str(req["hex"]))
            except ValueError as exc:
                raise CommandError("hex is not hexadecimal") from exc
        return str(req.get("text", "")).encode()

    async def _cmd_send(self, req: dict[str, Any]) -> Any:
        assert self.driver is not None
        dest = parse_dest(req.get("dest"))
        payload = self._payload(req)
        try:
            self.driver.send_data(dest, payload)
        except PayloadTooLarge as exc:
            raise CommandError(str(exc)) from exc
        return {"queued": len(payload)}

    async def _cmd_ping(self, req: dict[str, Any]) -> Any:
        """Round trips of end-to-end pings (the peer agent answers them), in ms."""
        assert self.driver is not None
        dest = parse_dest(req.get("dest"))
        count = _int_arg(req, "count", 1, 1, 1000)
        timeout = float(req.get("timeout", 5.0))
        loop = asyncio.get_running_loop()
        rtts: list[float | None] = []
        for _ in range(count):
            nonce = os.urandom(8)
            fut: asyncio.Future[float] = loop.create_future()
            self._pings[nonce] = fut
            sent = loop.time()
            self.driver.send_data(dest, PING + nonce)
            try:
                arrived = await asyncio.wait_for(fut, timeout)
                rtts.append(round((arrived - sent) * 1000, 3))
            except TimeoutError:
                rtts.append(None)
            finally:
                self._pings.pop(nonce, None)
        return {"rtt_ms": rtts}

    async def _cmd_blast(self, req: dict[str, Any]) -> Any:
        """Send `count` payloads of `size` bytes (throughput measurements; agent/blast.py)."""
        assert self.driver is not None and self.node is not None
        dest = parse_dest(req.get("dest"))
        count = _int_arg(req, "count", 100, 1, 1_000_000)
        size = _int_arg(req, "size", 1000, 1, self.node.config.max_payload_bytes)
        batch = _int_arg(req, "batch", 32, 1, 4096)
        rate = float(req.get("rate_mb_s", 0.0))  # 0: as fast as the loop goes
        window = _int_arg(req, "window", 0, 0, 65536)  # 0: no flow control
        return await self._blast().run(dest, count, size, batch, rate, window)

    def _blast(self) -> Blast:
        assert self.driver is not None
        if self.blast is None:
            self.blast = Blast(self.driver.send_data, self.driver.loop, self.driver.held)
        return self.blast

    async def _cmd_ledger(self, req: dict[str, Any]) -> Any:
        """This node's ledger: its own height and the height of each feed it holds."""
        if self.ledger is None:
            raise CommandError("the ledger is disabled")
        led = self.ledger.ledger
        return {"height": led.height(), "pending": led.pending,
                "feeds": {h.author.hex(): h.height for h in led.heads()},
                "sync_lag_s": self.ledger.sync_lag_s()}

    async def _cmd_rx_reset(self, req: dict[str, Any]) -> Any:
        """Zero the application receive counters (start of a throughput run)."""
        self.app_rx = {"packets": 0, "bytes": 0, "first": 0.0, "last": 0.0}
        if self.blast is not None:
            self.blast.reset()
        return {"reset": True}

    async def _cmd_sync(self, req: dict[str, Any]) -> Any:
        """Sync the ledger with the backhaul now (directly or through a gateway)."""
        if self.backhaul is None:
            raise CommandError("no [backhaul] host configured (or the ledger is disabled)")
        result = await self.backhaul.sync_once()
        if result is None:
            return {"synced": False, "failures": self.backhaul.failures}
        return {"synced": True, "state": result.state, "finalized": result.finalized,
                "error": result.error, "seconds": round(result.seconds, 3)}

    async def _cmd_stop(self, req: dict[str, Any]) -> Any:
        self._stopping.set()
        return {"stopping": True}


def _int_arg(req: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = req.get(key, default)
    if type(value) is not int or not low <= value <= high:
        raise CommandError(f"{key} must be an integer in {low}..{high}")
    return value


def _link_text(link: Hashable) -> str:
    if isinstance(link, tuple):
        return ":".join(str(x) for x in link)
    return str(link)
