"""BLE through bleak over the bumble backend: adverts, GATT frames, small and large MTUs.

Radios are bumble controllers on a RangeLink whose range filter makes a chain
(n0 - n1 - n2 - n3): only neighbours hear each other. Each node is a real mesh core driven
by a CoreDriver over a BleLink that uses the bleak API (BleakScanner, BleakClient).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Hashable
from typing import Any

import pytest
from bleak import BleakClient
from bleak.exc import BleakError

from agent.driver import CoreDriver
from agent.transports import TransportError
from agent.transports.ble import (
    RX_UUID,
    SERVICE_UUID,
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
        peripheral = BumblePeripheral(device, SERVICE_UUID, RX_UUID, TX_UUID, max_mtu=att_mtu)
        ident = Identity.from_seed(bytes([40 + i]) * 32)
        profile = BLE if att_mtu > 23 else BLE_MIN
        holder: dict[str, CoreDriver] = {}

        def deliver(data: bytes, iface: str, src: Hashable, h: dict[str, CoreDriver] = holder
                    ) -> None:
            h["d"].datagram_received(data, iface, src)

        link = BleLink(iface="ble", node_id=ident.node_id, deliver=deliver,
                       peripheral=peripheral, att_mtu=att_mtu, connect_timeout_s=2.0,
                       retry_s=0.5, bleak_kwargs={"bumble_device": device},
                       scanner_backend=BumbleScanner, client_backend=BumbleClient)
        assert link.frame_mtu == profile.mtu
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
            nodes[0].link.send(None, b"x" * 21)
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
