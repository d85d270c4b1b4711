"""Fixtures of the agent tests: a stand-in for `sim-radio medium` that agents join over
loopback UDP (sim_radio's medium protocol), with the topology a test needs and links it can
cut, without positions or time; and a private D-Bus daemon for the BlueZ and ModemManager
fakes."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import pytest
from sim_radio.medium_protocol import FrameIn, FrameOut, Join, Welcome, decode, encode


class StandInMedium(asyncio.DatagramProtocol):
    """Joins get indexes 0, 1, 2...; in a "chain" node i hears i-1 and i+1, in an "open"
    medium every node hears every other; a pair in `cut` hears nothing of each other."""

    def __init__(self, mtu: int, topology: str) -> None:
        assert topology in ("chain", "open")
        self.mtu = mtu
        self.topology = topology
        self.addrs: dict[int, Any] = {}
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0
        self.frames = 0
        self.cut: set[frozenset[int]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.port = self.transport.get_extra_info("sockname")[1]

    def hears(self, src: int, dst: int) -> bool:
        near = abs(src - dst) == 1 if self.topology == "chain" else src != dst
        return near and frozenset((src, dst)) not in self.cut

    def datagram_received(self, data: bytes, addr: Any) -> None:
        assert self.transport is not None
        msg = decode(data)
        if isinstance(msg, Join):
            index = next((i for i, a in self.addrs.items() if a == addr), len(self.addrs))
            self.addrs[index] = addr
            self.transport.sendto(encode(Welcome(index, 100.0, self.mtu)), addr)
        elif isinstance(msg, FrameOut):
            src = next(i for i, a in self.addrs.items() if a == addr)
            for dst, to in self.addrs.items():
                if msg.link_dst in (None, dst) and self.hears(src, dst):
                    self.frames += 1
                    self.transport.sendto(encode(FrameIn(msg.frame, src)), to)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


MakeMedium = Callable[..., Awaitable[StandInMedium]]


@pytest.fixture
async def stand_in_medium() -> AsyncIterator[MakeMedium]:
    """`await stand_in_medium(mtu=1400, topology="chain")`; closed after the test."""
    made: list[StandInMedium] = []

    async def make(mtu: int = 1400, topology: str = "chain") -> StandInMedium:
        medium = StandInMedium(mtu, topology)
        await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: medium, local_addr=("127.0.0.1", 0))
        made.append(medium)
        return medium

    yield make
    for medium in made:
        medium.close()


@pytest.fixture
async def bus_address(tmp_path: Path) -> AsyncIterator[str]:
    """The address of a private D-Bus daemon, stopped after the test."""
    proc = subprocess.Popen(
        ["dbus-daemon", "--session", "--nofork", "--nopidfile", "--print-address=1",
         f"--address=unix:path={tmp_path}/bus"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        address = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 10)
        yield address.strip()
    finally:
        proc.terminate()
        proc.wait(5)
