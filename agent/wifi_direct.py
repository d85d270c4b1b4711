"""Wi-Fi Direct on Linux through wpa_supplicant's P2P control interface.

`WpaCtrl` speaks wpa_supplicant's control protocol: text commands over a Unix datagram
socket (`/run/wpa_supplicant/<iface>`), answered on the same socket from our own bound path;
after `ATTACH` the socket also receives events, which start with a priority tag ("<3>").

`P2PManager` finds peers (`P2P_FIND`, `P2P-DEVICE-FOUND`/`-LOST`), forms or joins a group,
and reports the group interface (`P2P-GROUP-STARTED p2p-wlan0-0 GO|client ...`), on which
the agent then runs its UDP transport (`WifiDirectLink`). Roles, chosen in the config:
- "go": this node starts an autonomous group (`P2P_GROUP_ADD`) and accepts push-button
  joins (`P2P-PROV-DISC-PBC-REQ` -> `WPS_PBC` on the group interface);
- "client": this node joins the first group owner it finds (`P2P_CONNECT <addr> pbc join`);
- "auto": this node joins a group owner it finds, and otherwise forms a group with the first
  peer it finds by GO negotiation (`P2P_CONNECT <addr> pbc go_intent=N`; the higher intent
  becomes the owner). Of two peers that find each other, the one with the lower P2P device
  address starts the negotiation and the other answers its `P2P-GO-NEG-REQUEST`, so they do
  not both start one; a failed negotiation goes back to finding.
A field deployment gives a few always-on nodes (vehicles, Pis) the "go" role; "auto" suits
devices that meet without a planned owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import socket
import tempfile
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.config import UdpSection
from agent.transports import TransportError
from agent.transports.udp import UdpLink, open_udp_link

EVENT_TAG = re.compile(r"^<(\d)>")
KV = re.compile(r"(\w+)=('[^']*'|\"[^\"]*\"|\S+)")


class WpaError(Exception):
    """wpa_supplicant is not reachable, did not answer, or answered FAIL."""


def parse_event(line: str) -> tuple[str, list[str], dict[str, str]]:
    """'<3>P2P-DEVICE-FOUND aa:.. p2p_dev_addr=aa:.. name='x'' -> (name, words, fields)."""
    text = EVENT_TAG.sub("", line.strip())
    head, _, rest = text.partition(" ")
    fields = {k: v.strip("'\"") for k, v in KV.findall(rest)}
    words = KV.sub(" ", rest).split()
    return head, words, fields


class _CtrlProtocol(asyncio.DatagramProtocol):
    def __init__(self, ctrl: WpaCtrl) -> None:
        self.ctrl = ctrl

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.ctrl._received(data.decode("utf-8", "replace"))

    def error_received(self, exc: Exception) -> None:
        self.ctrl.errors += 1


class WpaCtrl:
    """One control-interface connection (commands in order, one outstanding at a time)."""

    def __init__(self, path: str, on_event: Callable[[str], None] | None = None) -> None:
        self.path = path
        self.on_event = on_event
        self.local = os.path.join(tempfile.gettempdir(),
                                  f"manet_wpa_{os.getpid()}_{secrets.token_hex(4)}")
        self.transport: asyncio.DatagramTransport | None = None
        self._reply: asyncio.Future[str] | None = None
        self._lock = asyncio.Lock()
        self.errors = 0

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.local)
            sock.bind(self.local)
            sock.connect(self.path)
        except OSError as exc:
            sock.close()
            raise WpaError(f"cannot reach wpa_supplicant at {self.path}: {exc.strerror}") from exc
        sock.setblocking(False)
        self.transport, _ = await loop.create_datagram_endpoint(lambda: _CtrlProtocol(self),
                                                                sock=sock)

    def _received(self, text: str) -> None:
        if EVENT_TAG.match(text):
            if self.on_event is not None:
                self.on_event(text)
        elif self._reply is not None and not self._reply.done():
            self._reply.set_result(text)

    async def request(self, command: str, timeout_s: float = 5.0) -> str:
        """Send one command; return its reply; WpaError on FAIL or silence."""
        if self.transport is None:
            raise WpaError("control socket not open")
        async with self._lock:
            self._reply = asyncio.get_running_loop().create_future()
            self.transport.sendto(command.encode())
            try:
                reply = await asyncio.wait_for(self._reply, timeout_s)
            except TimeoutError as exc:
                raise WpaError(f"wpa_supplicant did not answer {command.split()[0]}") from exc
            finally:
                self._reply = None
        if reply.startswith("FAIL") or reply.startswith("UNKNOWN COMMAND"):
            raise WpaError(f"{command.split()[0]}: {reply.strip()}")
        return reply

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.local)


@dataclass(slots=True)
class P2PPeer:
    address: str
    name: str
    group_owner: bool


@dataclass(frozen=True, slots=True)
class P2PGroup:
    interface: str
    role: str  # "GO" or "client"
    ssid: str


class P2PManager:
    """Finds peers and forms/joins a group; calls back with the group interface."""

    def __init__(self, *, ctrl_dir: str, interface: str, role: str,
                 on_group: Callable[[P2PGroup], None],
                 on_group_removed: Callable[[str], None],
                 on_log: Callable[[str, dict[str, Any]], None] | None = None,
                 go_intent: int = 7) -> None:
        if role not in ("go", "client", "auto"):
            raise ValueError(f"role must be 'go', 'client' or 'auto', got {role!r}")
        if not 0 <= go_intent <= 15:
            raise ValueError(f"go_intent is 0..15, got {go_intent}")
        self.go_intent = go_intent
        self.address = ""
        """Our P2P device address (from STATUS), which decides who starts a negotiation."""
        self.ctrl_dir = ctrl_dir
        self.role = role
        self.on_group = on_group
        self.on_group_removed = on_group_removed
        self.on_log = on_log
        self.ctrl = WpaCtrl(str(Path(ctrl_dir) / interface), self._on_event)
        self.peers: dict[str, P2PPeer] = {}
        self.group: P2PGroup | None = None
        self.joining: str | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await self.ctrl.open()
        if (await self.ctrl.request("PING")).strip() != "PONG":
            raise WpaError("wpa_supplicant did not answer PING with PONG")
        await self.ctrl.request("ATTACH")
        if self.role == "auto":
            status = await self.ctrl.request("STATUS")  # key=value lines
            fields = dict(line.split("=", 1) for line in status.splitlines() if "=" in line)
            self.address = fields.get("p2p_device_address", "")
        if self.role == "go":
            await self.ctrl.request("P2P_GROUP_ADD")
        await self.ctrl.request("P2P_FIND")

    def _log(self, event: str, **fields: Any) -> None:
        if self.on_log is not None:
            self.on_log(event, fields)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_event(self, text: str) -> None:
        name, words, fields = parse_event(text)
        if name == "P2P-DEVICE-FOUND":
            address = fields.get("p2p_dev_addr") or (words[0] if words else "")
            if not address:
                return
            capab = fields.get("group_capab", "0x0")
            try:
                is_go = bool(int(capab, 16) & 0x01)
            except ValueError:
                is_go = False
            self.peers[address] = P2PPeer(address, fields.get("name", ""), is_go)
            self._log("p2p_peer_found", peer=address, group_owner=is_go)
            if self.group is not None or self.joining is not None or self.role == "go":
                return
            if is_go:
                self.joining = address
                self._spawn(self._connect(address, "join"))
            elif self.role == "auto" and self.address and self.address < address:
                self.joining = address
                self._spawn(self._connect(address, f"go_intent={self.go_intent}"))
        elif name == "P2P-GO-NEG-REQUEST" and self.role == "auto":
            address = words[0] if words else ""
            if address and self.group is None and self.joining is None:
                self.joining = address
                self._spawn(self._connect(address, f"go_intent={self.go_intent}"))
        elif name == "P2P-DEVICE-LOST":
            address = fields.get("p2p_dev_addr", "")
            self.peers.pop(address, None)
        elif name == "P2P-GROUP-STARTED" and len(words) >= 2:
            self.group = P2PGroup(words[0], words[1], fields.get("ssid", ""))
            self.joining = None
            self._log("p2p_group_started", interface=words[0], role=words[1])
            self.on_group(self.group)
        elif name == "P2P-GROUP-REMOVED" and words:
            if self.group is not None and self.group.interface == words[0]:
                self.group = None
            self._log("p2p_group_removed", interface=words[0])
            self.on_group_removed(words[0])
            if self.role != "go":
                self._spawn(self._find_again())
        elif name == "P2P-PROV-DISC-PBC-REQ" and self.group is not None:
            if self.group.role == "GO":
                self._spawn(self._accept_pbc(self.group.interface))
        elif name == "P2P-GO-NEG-FAILURE" or name == "P2P-GROUP-FORMATION-FAILURE":
            self.joining = None
            self._log("p2p_formation_failed", reason=name)
            if self.role != "go":
                self._spawn(self._find_again())

    async def _connect(self, address: str, how: str) -> None:
        """Join `address`'s group ("join") or negotiate one with it ("go_intent=N")."""
        try:
            await self.ctrl.request(f"P2P_CONNECT {address} pbc {how}")
        except WpaError as exc:
            self.joining = None
            self._log("p2p_join_failed", peer=address, error=str(exc))

    async def _accept_pbc(self, group_interface: str) -> None:
        group_ctrl = WpaCtrl(str(Path(self.ctrl_dir) / group_interface))
        try:
            await group_ctrl.open()
            await group_ctrl.request("WPS_PBC")
        except WpaError as exc:
            self._log("p2p_wps_failed", interface=group_interface, error=str(exc))
        finally:
            group_ctrl.close()

    async def _find_again(self) -> None:
        with contextlib.suppress(WpaError):
            await self.ctrl.request("P2P_FIND")

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(WpaError):
            await self.ctrl.request("P2P_STOP_FIND", timeout_s=1.0)
            if self.group is not None:
                await self.ctrl.request(f"P2P_GROUP_REMOVE {self.group.interface}",
                                        timeout_s=1.0)
        with contextlib.suppress(WpaError):
            await self.ctrl.request("DETACH", timeout_s=1.0)
        self.ctrl.close()


class WifiDirectLink:
    """One mesh link over the current P2P group: UDP on the group interface while it exists.

    The core knows the link from the start (name `iface`); frames sent while there is no
    group are dropped here (counted), as a radio with no peers would lose them.
    """

    def __init__(self, *, iface: str, udp: UdpSection,
                 deliver: Callable[[bytes, str, Hashable], None]) -> None:
        self.iface = iface
        self.udp = udp
        self.deliver = deliver
        self.link: UdpLink | None = None
        self.dropped = 0
        self.errors: list[str] = []
        self._opening: asyncio.Task[None] | None = None

    @property
    def rx(self) -> int:
        return self.link.rx if self.link is not None else 0

    @property
    def tx(self) -> int:
        return self.link.tx if self.link is not None else 0

    def group_started(self, group: P2PGroup) -> None:
        self._opening = asyncio.get_running_loop().create_task(self._open(group.interface))

    async def _open(self, interface: str) -> None:
        section = UdpSection(interface=interface, family=self.udp.family, port=self.udp.port,
                             group=self.udp.group, mtu=self.udp.mtu,
                             bitrate_bps=self.udp.bitrate_bps, name=self.iface)
        try:
            self.link = await open_udp_link(section, self.deliver)
        except TransportError as exc:
            self.errors.append(str(exc))

    def group_removed(self, interface: str) -> None:
        if self.link is not None and self.link.section.interface == interface:
            self.link.close()
            self.link = None

    def send(self, link_dst: Hashable | None, data: bytes) -> None:
        if self.link is None:
            self.dropped += 1
            return
        self.link.send(link_dst, data)

    def close(self) -> None:
        if self._opening is not None:
            self._opening.cancel()
        if self.link is not None:
            self.link.close()
            self.link = None
