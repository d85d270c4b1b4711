"""Wi-Fi Direct against a fake wpa_supplicant control socket speaking the same text protocol."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from agent.config import UdpSection
from agent.wifi_direct import (
    P2PGroup,
    P2PManager,
    WifiDirectLink,
    WpaCtrl,
    WpaError,
    parse_event,
)


class FakeWpa(asyncio.DatagramProtocol):
    """Answers commands like wpa_supplicant and sends events to attached clients."""

    def __init__(self, answers: dict[str, str] | None = None) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.commands: list[str] = []
        self.attached: set[Any] = set()
        self.answers = {"PING": "PONG\n", **(answers or {})}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        assert self.transport is not None
        command = data.decode()
        self.commands.append(command)
        if command == "ATTACH":
            self.attached.add(addr)
        reply = self.answers.get(command.split()[0], "OK\n")
        if command.startswith("BOGUS"):
            reply = "UNKNOWN COMMAND\n"
        self.transport.sendto(reply.encode(), addr)

    def event(self, text: str) -> None:
        assert self.transport is not None
        for addr in self.attached:
            self.transport.sendto(f"<3>{text}".encode(), addr)


async def serve(path: Path, answers: dict[str, str] | None = None) -> FakeWpa:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    fake = FakeWpa(answers)
    await asyncio.get_running_loop().create_datagram_endpoint(lambda: fake, sock=sock)
    return fake


async def wait_until(check: Any, timeout_s: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not check():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def test_parse_event() -> None:
    name, words, fields = parse_event(
        "<3>P2P-DEVICE-FOUND 02:00:00:00:01:00 p2p_dev_addr=02:00:00:00:01:00 "
        "pri_dev_type=1-0050F204-1 name='van 12' config_methods=0x188 dev_capab=0x25 "
        "group_capab=0x1")
    assert name == "P2P-DEVICE-FOUND" and words == ["02:00:00:00:01:00"]
    assert fields["name"] == "van 12" and fields["group_capab"] == "0x1"
    name, words, fields = parse_event(
        '<3>P2P-GROUP-STARTED p2p-wlan0-0 client ssid="DIRECT-ab" freq=2437 '
        'psk=0123 go_dev_addr=02:00:00:00:01:00 [PERSISTENT]')
    assert (name, words[:2], fields["ssid"]) == ("P2P-GROUP-STARTED",
                                                 ["p2p-wlan0-0", "client"], "DIRECT-ab")


async def test_ctrl_request_reply_and_errors(tmp_path: Path) -> None:
    fake = await serve(tmp_path / "wlan0", {"STATUS": "wpa_state=INACTIVE\n"})
    ctrl = WpaCtrl(str(tmp_path / "wlan0"))
    await ctrl.open()
    try:
        assert await ctrl.request("STATUS") == "wpa_state=INACTIVE\n"
        with pytest.raises(WpaError, match="UNKNOWN COMMAND"):
            await ctrl.request("BOGUS")
        assert fake.commands == ["STATUS", "BOGUS"]
    finally:
        ctrl.close()
    assert not os.path.exists(ctrl.local)
    with pytest.raises(WpaError, match="cannot reach"):
        await WpaCtrl(str(tmp_path / "absent")).open()


async def test_client_joins_a_group_owner_and_runs_udp_on_the_group(tmp_path: Path) -> None:
    fake = await serve(tmp_path / "p2p-dev-wlan0")
    groups: list[P2PGroup] = []
    removed: list[str] = []
    frames: list[tuple[bytes, str, Any]] = []
    link = WifiDirectLink(iface="wifi-direct", udp=UdpSection(interface="unused", port=0),
                          deliver=lambda d, i, s: frames.append((d, i, s)))

    def started(group: P2PGroup) -> None:
        groups.append(group)
        link.group_started(group)

    def gone(interface: str) -> None:
        removed.append(interface)
        link.group_removed(interface)

    manager = P2PManager(ctrl_dir=str(tmp_path), interface="p2p-dev-wlan0", role="client",
                         on_group=started, on_group_removed=gone)
    await manager.start()
    try:
        assert fake.commands == ["PING", "ATTACH", "P2P_FIND"]
        link.send(None, b"lost: no group yet")
        assert link.dropped == 1
        fake.event("P2P-DEVICE-FOUND 02:00:00:00:02:00 p2p_dev_addr=02:00:00:00:02:00 "
                   "name='phone' group_capab=0x0")
        fake.event("P2P-DEVICE-FOUND 02:00:00:00:01:00 p2p_dev_addr=02:00:00:00:01:00 "
                   "name='van' group_capab=0x1")
        await wait_until(lambda: "P2P_CONNECT 02:00:00:00:01:00 pbc join" in fake.commands)
        assert not any("02:00:00:00:02:00" in c for c in fake.commands)
        assert set(manager.peers) == {"02:00:00:00:01:00", "02:00:00:00:02:00"}
        # The group comes up on an interface; here the loopback stands in for p2p-wlan0-0.
        fake.event('P2P-GROUP-STARTED lo client ssid="DIRECT-xy" freq=2437 '
                   'go_dev_addr=02:00:00:00:01:00')
        await wait_until(lambda: link.link is not None)
        assert groups == [P2PGroup("lo", "client", "DIRECT-xy")]
        assert link.link is not None and link.link.iface == "wifi-direct"
        fake.event("P2P-GROUP-REMOVED lo client reason=GO_ENDING_SESSION")
        await wait_until(lambda: removed == ["lo"])
        assert link.link is None
        await wait_until(lambda: fake.commands.count("P2P_FIND") == 2)  # look again
    finally:
        await manager.stop()
        link.close()
    assert "DETACH" in fake.commands


async def test_group_owner_starts_a_group_and_accepts_push_button_joins(tmp_path: Path) -> None:
    fake = await serve(tmp_path / "p2p-dev-wlan0")
    group_ctrl = await serve(tmp_path / "p2p-wlan0-0")
    manager = P2PManager(ctrl_dir=str(tmp_path), interface="p2p-dev-wlan0", role="go",
                         on_group=lambda g: None, on_group_removed=lambda i: None)
    await manager.start()
    try:
        assert fake.commands == ["PING", "ATTACH", "P2P_GROUP_ADD", "P2P_FIND"]
        fake.event('P2P-GROUP-STARTED p2p-wlan0-0 GO ssid="DIRECT-go" freq=2412 '
                   'passphrase="secret12" go_dev_addr=02:00:00:00:00:01')
        await wait_until(lambda: manager.group is not None)
        fake.event("P2P-PROV-DISC-PBC-REQ 02:00:00:00:03:00 p2p_dev_addr=02:00:00:00:03:00")
        await wait_until(lambda: group_ctrl.commands == ["WPS_PBC"])
    finally:
        await manager.stop()
    assert "P2P_GROUP_REMOVE p2p-wlan0-0" in fake.commands
    with pytest.raises(ValueError):
        P2PManager(ctrl_dir=str(tmp_path), interface="x", role="boss",
                   on_group=lambda g: None, on_group_removed=lambda i: None)


async def test_auto_role_negotiates_a_group_with_a_peer(tmp_path: Path) -> None:
    """The lower device address starts GO negotiation, the higher answers the peer's request;
    a failed negotiation finds again; the group it forms serves push-button joins if it owns it."""
    fake = await serve(tmp_path / "p2p-dev-wlan0",
                       {"STATUS": "p2p_device_address=02:00:00:00:00:05\nwpa_state=DISCONNECTED\n"})
    group_ctrl = await serve(tmp_path / "p2p-wlan0-0")
    groups: list[P2PGroup] = []
    manager = P2PManager(ctrl_dir=str(tmp_path), interface="p2p-dev-wlan0", role="auto",
                         on_group=groups.append, on_group_removed=lambda i: None, go_intent=9)
    await manager.start()
    try:
        assert fake.commands == ["PING", "ATTACH", "STATUS", "P2P_FIND"]
        assert manager.address == "02:00:00:00:00:05"
        # A higher address, no group: we start the negotiation.
        fake.event("P2P-DEVICE-FOUND 02:00:00:00:00:09 p2p_dev_addr=02:00:00:00:00:09 "
                   "group_capab=0x0")
        await wait_until(lambda: "P2P_CONNECT 02:00:00:00:00:09 pbc go_intent=9"
                         in fake.commands)
        fake.event("P2P-GO-NEG-FAILURE status=1")
        await wait_until(lambda: fake.commands.count("P2P_FIND") == 2 and not manager.joining)
        # A lower address: it starts; we wait for its request, then answer it.
        fake.event("P2P-DEVICE-FOUND 02:00:00:00:00:01 p2p_dev_addr=02:00:00:00:00:01 "
                   "group_capab=0x0")
        await asyncio.sleep(0.05)
        assert not any("02:00:00:00:00:01" in c for c in fake.commands)
        fake.event("P2P-GO-NEG-REQUEST 02:00:00:00:00:01 dev_passwd_id=4 go_intent=3")
        await wait_until(lambda: "P2P_CONNECT 02:00:00:00:00:01 pbc go_intent=9"
                         in fake.commands)
        fake.event('P2P-GROUP-STARTED p2p-wlan0-0 GO ssid="DIRECT-au" freq=2412 '
                   'go_dev_addr=02:00:00:00:00:05')
        await wait_until(lambda: groups == [P2PGroup("p2p-wlan0-0", "GO", "DIRECT-au")])
        fake.event("P2P-PROV-DISC-PBC-REQ 02:00:00:00:00:07 p2p_dev_addr=02:00:00:00:00:07")
        await wait_until(lambda: group_ctrl.commands == ["WPS_PBC"])
        # In a group, further peers start nothing.
        fake.event("P2P-DEVICE-FOUND 02:00:00:00:00:08 p2p_dev_addr=02:00:00:00:00:08 "
                   "group_capab=0x1")
        await asyncio.sleep(0.05)
        assert not any("02:00:00:00:00:08" in c for c in fake.commands)
    finally:
        await manager.stop()
    with pytest.raises(ValueError, match="go_intent"):
        P2PManager(ctrl_dir=str(tmp_path), interface="x", role="auto", go_intent=16,
                   on_group=lambda g: None, on_group_removed=lambda i: None)
