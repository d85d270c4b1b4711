"""zeroconf (mDNS/DNS-SD) discovery: advertise this agent, browse for the others.

The service instance is `<node id hex>.<service type>`; its TXT record carries the node id,
the line status (`line=up|down`, `gw=1|0`, `tech`, `rtt`) and the mesh port, and is
re-announced whenever the line status changes, so a phone app or a neighbour sees who can
reach the backhaul before any mesh frame is exchanged. Discovered peers are kept in a dict
(bounded) for the `peers` control command and the logs. Routing does not depend on it: HELLOs
find neighbours on their own; zeroconf is the operator's and other tools' view.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from zeroconf import IPVersion, NotRunningException, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from mesh.line import LineStatus

MAX_PEERS = 1024


@dataclass(frozen=True, slots=True)
class Peer:
    """A discovered agent: its node id, addresses and advertised line status."""

    node_id: str
    name: str
    addresses: tuple[str, ...]
    port: int
    line_up: bool
    gateway: bool
    technology: str


def txt_record(node_id: str, name: str, port: int, line: LineStatus) -> dict[str, str]:
    """The TXT properties we advertise (each short: the whole record stays well under 200 B)."""
    return {
        "v": "1",
        "id": node_id,
        "name": name,
        "port": str(port),
        "line": "up" if line.connected else "down",
        "gw": "1" if line.is_gateway else "0",
        "tech": line.technology,
        "rtt": str(line.rtt_ms),
    }


def peer_from_info(info: Any) -> Peer | None:
    """A Peer from a resolved ServiceInfo, or None when its TXT record is not ours."""
    props = {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else "")
        for k, v in (info.properties or {}).items()
    }
    node_id = props.get("id", "")
    if props.get("v") != "1" or len(node_id) != 16:
        return None
    try:
        bytes.fromhex(node_id)
        port = int(props.get("port", "0"))
    except ValueError:
        return None
    return Peer(node_id=node_id, name=props.get("name", ""),
                addresses=tuple(info.parsed_addresses()), port=port,
                line_up=props.get("line") == "up", gateway=props.get("gw") == "1",
                technology=props.get("tech", "none"))


class Discovery:
    """Advertises one service and browses for others of the same type."""

    def __init__(self, *, node_id: str, name: str, service_type: str, port: int,
                 addresses: list[str], interfaces: list[str],
                 on_peer: Callable[[str, Peer | None], None] | None = None) -> None:
        self.node_id = node_id
        self.name = name or node_id
        self.service_type = service_type
        self.port = port
        self.addresses = addresses
        self.interfaces = interfaces
        self.on_peer = on_peer
        self.peers: dict[str, Peer] = {}
        self.line = LineStatus()
        self.azc: AsyncZeroconf | None = None
        self.browser: AsyncServiceBrowser | None = None
        self.info: AsyncServiceInfo | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.registered = False

    def _service_info(self) -> AsyncServiceInfo:
        return AsyncServiceInfo(
            self.service_type,
            f"{self.node_id}.{self.service_type}",
            port=self.port,
            properties=txt_record(self.node_id, self.name, self.port, self.line),
            parsed_addresses=self.addresses,
            server=f"manet-{self.node_id}.local.",
        )

    async def start(self) -> None:
        self.azc = AsyncZeroconf(interfaces=self.interfaces or self.addresses,
                                 ip_version=IPVersion.V4Only)
        self.info = self._service_info()
        await self.azc.async_register_service(self.info, allow_name_change=False)
        self.registered = True
        if self.info.properties != self._service_info().properties:
            await self.update_line(self.line)  # the line changed while we were announcing
        self.browser = AsyncServiceBrowser(self.azc.zeroconf, self.service_type,
                                           handlers=[self._on_change])

    def _on_change(self, zeroconf: Zeroconf, service_type: str, name: str,
                   state_change: ServiceStateChange) -> None:
        if name == f"{self.node_id}.{service_type}":
            return
        if state_change is ServiceStateChange.Removed:
            peer_id = name.split(".", 1)[0]
            if self.peers.pop(peer_id, None) is not None and self.on_peer is not None:
                self.on_peer(peer_id, None)
            return
        task = asyncio.get_running_loop().create_task(self._resolve(service_type, name))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resolve(self, service_type: str, name: str) -> None:
        if self.azc is None:
            return
        info = AsyncServiceInfo(service_type, name)
        if not await info.async_request(self.azc.zeroconf, 3000):
            return
        peer = peer_from_info(info)
        if peer is None or (peer.node_id not in self.peers and len(self.peers) >= MAX_PEERS):
            return
        old = self.peers.get(peer.node_id)
        self.peers[peer.node_id] = peer
        if old != peer and self.on_peer is not None:
            self.on_peer(peer.node_id, peer)

    async def update_line(self, line: LineStatus) -> None:
        """Re-announce the TXT record with the new line status."""
        self.line = line
        if self.azc is None or not self.registered:
            return  # start() announces the latest line once registered
        self.info = self._service_info()
        await self.azc.async_update_service(self.info)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.azc is None:
            return
        if self.browser is not None:
            await self.browser.async_cancel()
        with contextlib.suppress(OSError, TimeoutError, NotRunningException):  # best-effort goodbye
            await self.azc.async_unregister_all_services()
        await self.azc.async_close()
        self.azc = None
