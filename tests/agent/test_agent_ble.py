"""BLE through bleak over the bumble backend: adverts, GATT frames, small and large MTUs.

Radios are bumble controllers on a RangeLink whose range filter makes a chain
(n0 - n1 - n2 - n3): only neighbours hear each other. Each node is a real mesh core driven
by a CoreDriver over a BleLink that uses the bleak API (BleakScanner, BleakClient).
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Hashable
from pathlib import Path
from typing import Any, cast

import pytest
from bleak import BleakClient
from bleak.exc import BleakError

from agent.app import Agent, BleEnvironment
from agent.config import parse_config
from agent.driver import CoreDriver
from agent.logs import NodeLogger
from agent.transports import TransportError
from agent.transports.ble import (
    RX_UUID,
    SERVICE_UUID,
    TAG_UUID,
    TX_UUID,
    AdvertError,
    BleLink,
    decode_advert,
    encode_advert,
)
from agent.transports.bleak_bumble import (
    BumbleClient,
    BumblePeripheral,
    BumbleScanner,
    RangeLink,
    make_device,
)
from mesh import events as ev
from mesh.config import BLE, BLE_MIN, MeshConfig
from mesh.identity import Identity
from mesh.line import LineStatus
from mesh.node import MeshNode


def chain_range(a: str, b: str) -> bool:
    return abs(int(a[1:]) - int(b[1:])) == 1


class Node:
    def __init__(self, link: BleLink, driver: CoreDriver, node: MeshNode) -> None:
        self.link = link
        self.driver = driver
        self.node = node
        self.events: list[ev.Event] = []
        driver.listeners.append(self.events.append)


async def build(count: int, att_mtu: int, line_up: int | None = None) -> list[Node]:
    radio = RangeLink(chain_range)
    loop = asyncio.get_running_loop()
    nodes: list[Node] = []
    for i in range(count):
        device = await make_device(radio, f"n{i}", f"C0:00:00:00:00:{i + 1:02X}")
        peripheral = BumblePeripheral(device, SERVICE_UUID, RX_UUID, TX_UUID, TAG_UUID,
                                      max_mtu=att_mtu)
        ident = Identity.from_seed(bytes([40 + i]) * 32)
        base = BLE if att_mtu > 23 else BLE_MIN
        holder: dict[str, CoreDriver] = {}

        def deliver(data: bytes, iface: str, src: Hashable, h: dict[str, CoreDriver] = holder
                    ) -> None:
            h["d"].datagram_received(data, iface, src)

        link = BleLink(iface="ble", node_id=ident.node_id, deliver=deliver,
                       peripheral=peripheral, att_mtu=att_mtu, connect_timeout_s=2.0,
                       retry_s=0.5,
                       bleak_kwargs={"bumble_device": device, "connect_lock": asyncio.Lock()},
                       scanner_backend=BumbleScanner, client_backend=BumbleClient)
        profile = dataclasses.replace(base, mtu=link.frame_mtu)
        assert link.frame_mtu == att_mtu - 4
        line = LineStatus(True, "lte", -80, True, 30) if i == line_up else LineStatus()
        node = MeshNode(identity=ident, rng=random.Random(i), now=loop.time(),
                        interfaces={"ble": profile}, line=line,
                        config=MeshConfig(hello_interval_s=0.5))
        driver = CoreDriver(node, loop)
        holder["d"] = driver
        driver.add_link("ble", link)
        link.line = line
        await link.start()
        driver.flush()
        nodes.append(Node(link, driver, node))
    return nodes


async def wait_until(check: Any, timeout_s: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not check():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def close(nodes: list[Node]) -> None:
    for n in nodes:
        n.driver.close()
        await n.link.close_async()


def test_advert_fits_and_round_trips() -> None:
    line = LineStatus(True, "5g", -95, True, 0)
    data = encode_advert(b"\x01" * 8, line)
    assert len(data) == 10
    assert decode_advert(data) == (b"\x01" * 8, line)
    # flags (3) + service data header (2) + 128-bit UUID (16) + ours (10) = 31
    assert 3 + 2 + 16 + len(data) == 31
    for bad in (data[:9], data + b"\x00", data[:8] + b"\xff\x00"):
        with pytest.raises(AdvertError):
            decode_advert(bad)


@pytest.mark.parametrize("att_mtu", [23, 247])
async def test_frames_over_three_hops(att_mtu: int) -> None:
    nodes = await build(4, att_mtu, line_up=0)
    try:
        # Discovery by advert: n1 heard n0 and n2 with their ids and line status.
        await wait_until(lambda: len(nodes[1].link.peers) == 2)
        by_id = {p.node_id: p for p in nodes[1].link.peers.values()}
        assert by_id[nodes[0].node.id].line.is_gateway
        assert not by_id[nodes[2].node.id].line.connected
        await wait_until(lambda: all(len(n.node.neighbours()) == (1 if i in (0, 3) else 2)
                                     for i, n in enumerate(nodes)))
        first, last = nodes[0], nodes[3]
        first.driver.send_data(last.node.id, b"m" * 300)
        await wait_until(lambda: any(isinstance(e, ev.DataReceived) for e in last.events))
        got = next(e for e in last.events if isinstance(e, ev.DataReceived))
        assert got.payload == b"m" * 300 and got.hops == 3
        if att_mtu == 23:
            assert first.node.stats["tx_frag"] > 0
        assert all(n.link.stats["too_large"] == 0 for n in nodes)
        # The far end finds the gateway over three hops and reaches the backhaul.
        await wait_until(lambda: last.node.gateway is not None)
        last.driver.send_data(b"\xff" * 8, b"up the line")
        await wait_until(lambda: any(isinstance(e, ev.BackhaulData) for e in first.events))
    finally:
        await close(nodes)


async def test_oversized_writes_are_refused_and_absent_peers_time_out() -> None:
    nodes = await build(2, 23)
    try:
        await wait_until(lambda: nodes[0].link.connected() != [])
        with pytest.raises(TransportError):
            nodes[0].link.send(None, b"x" * 20)
        assert nodes[0].link.stats["too_large"] == 1
        client = nodes[0].link.clients[nodes[0].link.connected()[0]]
        with pytest.raises(BleakError, match="exceeds ATT_MTU"):
            await client.write_gatt_char(RX_UUID, b"x" * 21, response=False)
        device = nodes[0].link.bleak_kwargs["bumble_device"]
        absent = BleakClient("C0:00:00:00:00:7F", backend=BumbleClient, timeout=0.5,
                             bumble_device=device)
        with pytest.raises(TimeoutError):
            await absent.connect()
    finally:
        await close(nodes)


async def test_agents_over_ble_ping_across_two_hops(tmp_path: Path) -> None:
    """Whole Agent objects with [ble] enabled, on the emulated radio (chain a0 - a1 - a2)."""
    radio = RangeLink(chain_range)
    agents: list[Agent] = []
    try:
        for i in range(3):
            device = await make_device(radio, f"n{i}", f"C1:00:00:00:00:{i + 1:02X}")
            env = BleEnvironment(
                peripheral=BumblePeripheral(device, SERVICE_UUID, RX_UUID, TX_UUID, TAG_UUID),
                bleak_kwargs={"bumble_device": device, "connect_lock": asyncio.Lock()},
                scanner_backend=BumbleScanner,
                client_backend=BumbleClient)
            config = parse_config({
                "node": {"state_dir": str(tmp_path / f"a{i}"), "seed": i},
                "mesh": {"hello_interval_s": 0.5},
                "ble": {"enabled": True, "att_mtu": 185, "connect_timeout_s": 2.0},
                "discovery": {"enabled": False},
                "line": {"monitor": "static", "static_up": i == 0},
                "control": {"socket": str(tmp_path / f"a{i}.sock")},
            })
            ident = Identity.from_seed(bytes([90 + i]) * 32)
            agent = Agent(config, ident, NodeLogger(ident.node_id.hex()), ble=env)
            await agent.start()
            agents.append(agent)
        await wait_until(lambda: agents[1].status()["neighbours"] == 2)
        result = await agents[2]._cmd_ping({"dest": agents[0].node_hex, "count": 2,
                                            "timeout": 3.0})
        assert None not in result["rtt_ms"]
        assert agents[0].node is not None and agents[0].node.interfaces["ble"].mtu == 181
        # The gateway's advert carries its line: the others saw it before connecting.
        link = agents[1].links["ble"]
        assert any(p.line.is_gateway for p in link.peers.values())
    finally:
        for agent in agents:
            await agent.stop()


def test_ble_on_a_machine_without_bluez_fails_clearly(tmp_path: Path) -> None:
    """Without an injected emulation the agent uses BlueZ over the system D-Bus."""
    config = parse_config({"ble": {"enabled": True, "adapter": "hci7"},
                           "node": {"state_dir": str(tmp_path)},
                           "control": {"socket": str(tmp_path / "c.sock")}})
    agent = Agent(config, Identity.from_seed(b"\x05" * 32))

    async def start() -> None:
        try:
            await agent.start()
        finally:
            await agent.stop()

    with pytest.raises((TransportError, BleakError)):
        asyncio.run(start())


def test_notifications_for_other_centrals_are_dropped() -> None:
    got: list[tuple[bytes, str, Hashable]] = []
    link = BleLink(iface="ble", node_id=b"\x01" * 8, deliver=lambda d, i, s: got.append((d, i, s)),
                   peripheral=cast(Any, None))
    link.tags["AA:00:00:00:00:01"] = 3
    link._on_notify("AA:00:00:00:00:01", b"\x03mine")
    link._on_notify("AA:00:00:00:00:01", b"\x05theirs")
    link._on_notify("AA:00:00:00:00:01", b"\xffall")
    link._on_notify("AA:00:00:00:00:01", b"")
    assert [d for d, _, _ in got] == [b"mine", b"all"]
    assert link.stats["not_for_us"] == 2
