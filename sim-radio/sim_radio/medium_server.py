"""`sim-radio medium`: a real-time simulated radio that agent processes join over UDP.

Each agent process is one node of the scenario. The medium places nodes by the scenario's
mobility model at the current wall-clock time since start (or where a node said it is with
Move), and passes each frame to the joined nodes within range of the sender, after the
radio model's loss and the frame's airtime. No contention model here: real processes run
in real time, and the collisions of a few agents on a laptop say nothing useful.
"""

from __future__ import annotations

import asyncio
import logging
import math
from random import Random

from sim_radio.engine import derive_seed
from sim_radio.medium_protocol import (
    FrameIn,
    FrameOut,
    Join,
    Leave,
    MediumProtocolError,
    Move,
    Refused,
    Welcome,
    decode,
    encode,
)
from sim_radio.radio import airtime_s
from sim_radio.scenario import Scenario

log = logging.getLogger("sim_radio.medium")

Addr = tuple[str, int]


class Medium:
    """The medium's state, free of sockets: who is joined where, and who hears a frame."""

    def __init__(self, scenario: Scenario, seed: int | None = None) -> None:
        self.scenario = scenario
        s = scenario.seed if seed is None else seed
        self.mobility = scenario.build_mobility(Random(derive_seed(s, "mobility")))
        self.rng = Random(derive_seed(s, "medium"))
        self.iface = scenario.interfaces[0]
        self.node_of: dict[Addr, int] = {}
        self.addr_of: dict[int, Addr] = {}
        self.pinned: dict[int, tuple[float, float]] = {}
        self.stats: dict[str, int] = {"joins": 0, "frames_in": 0, "deliveries": 0,
                                      "out_of_range": 0, "lost": 0, "decode_errors": 0,
                                      "refused": 0}

    def position(self, node: int, t: float) -> tuple[float, float]:
        pinned = self.pinned.get(node)
        if pinned is not None:
            return pinned
        return self.mobility.position(node, t)

    def join(self, addr: Addr, msg: Join) -> Welcome | Refused:
        current = self.node_of.get(addr)
        wanted = msg.node_index
        if current is not None and (wanted is None or wanted == current):
            index = current
        else:
            if wanted is None:
                free = [i for i in range(self.scenario.nodes) if i not in self.addr_of]
                if not free:
                    return Refused(f"all {self.scenario.nodes} nodes of the scenario are taken")
                index = free[0]
            elif wanted >= self.scenario.nodes:
                return Refused(f"no node {wanted}: the scenario has {self.scenario.nodes}")
            elif wanted in self.addr_of and self.addr_of[wanted] != addr:
                return Refused(f"node {wanted} is taken by {self.addr_of[wanted]}")
            else:
                index = wanted
            if current is not None:
                self.addr_of.pop(current, None)
            self.node_of[addr] = index
            self.addr_of[index] = addr
            self.stats["joins"] += 1
        if msg.position is not None:
            self.pinned[index] = msg.position
        return Welcome(index, self.iface.radio.reach_m, self.iface.profile.mtu)

    def leave(self, addr: Addr) -> None:
        index = self.node_of.pop(addr, None)
        if index is not None:
            self.addr_of.pop(index, None)
            self.pinned.pop(index, None)

    def receivers(self, sender: int, frame: FrameOut, t: float) -> list[int]:
        """Joined nodes that hear `frame` from `sender` at time t (radio model and loss)."""
        x, y = self.position(sender, t)
        targets = ([frame.link_dst] if frame.link_dst is not None
                   else sorted(self.addr_of))
        heard = []
        for j in targets:
            if j == sender or j not in self.addr_of:
                continue
            jx, jy = self.position(j, t)
            d = math.hypot(jx - x, jy - y)
            if d > self.iface.radio.reach_m:
                self.stats["out_of_range"] += 1
                continue
            loss = self.scenario.link_loss.get((sender, j), 0.0)
            if not self.iface.radio.received(d, self.rng) or (
                    loss > 0 and self.rng.random() < loss):
                self.stats["lost"] += 1
                continue
            heard.append(j)
        return heard

    def airtime(self, frame: bytes) -> float:
        return airtime_s(len(frame), self.iface.profile.bitrate_bps)


class MediumProtocol(asyncio.DatagramProtocol):
    """Translates datagrams into `Medium` calls; delivers after the frame's airtime."""

    def __init__(self, medium: Medium, loop: asyncio.AbstractEventLoop) -> None:
        self.medium = medium
        self.loop = loop
        self.start = loop.time()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def _send(self, data: bytes, addr: Addr) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, addr)

    def datagram_received(self, data: bytes, addr: Addr) -> None:
        medium = self.medium
        try:
            msg = decode(data)
        except MediumProtocolError as exc:
            medium.stats["decode_errors"] += 1
            log.debug("bad datagram from %s: %s", addr, exc)
            return
        if isinstance(msg, Join):
            answer = medium.join(addr, msg)
            if isinstance(answer, Refused):
                medium.stats["refused"] += 1
            self._send(encode(answer), addr)
            return
        sender = medium.node_of.get(addr)
        if sender is None:
            medium.stats["refused"] += 1
            self._send(encode(Refused("join first")), addr)
            return
        if isinstance(msg, FrameOut):
            medium.stats["frames_in"] += 1
            t = self.loop.time() - self.start
            packet = encode(FrameIn(msg.frame, sender))
            delay = medium.airtime(msg.frame)
            for j in medium.receivers(sender, msg, t):
                medium.stats["deliveries"] += 1
                self.loop.call_later(delay, self._send, packet, medium.addr_of[j])
        elif isinstance(msg, Move):
            medium.pinned[sender] = msg.position
        elif isinstance(msg, Leave):
            medium.leave(addr)
        else:
            medium.stats["decode_errors"] += 1


async def serve(scenario: Scenario, host: str, port: int, *, seed: int | None = None,
                ready: asyncio.Event | None = None,
                stop: asyncio.Event | None = None) -> Medium:
    """Run the medium until `stop` is set (or for ever); return its final state."""
    loop = asyncio.get_running_loop()
    medium = Medium(scenario, seed)
    transport, _ = await loop.create_datagram_endpoint(
        lambda: MediumProtocol(medium, loop), local_addr=(host, port))
    log.info("medium for %s (%d nodes, range %.0f m) on %s:%d", scenario.name,
             scenario.nodes, medium.iface.radio.reach_m, host,
             transport.get_extra_info("sockname")[1])
    try:
        if ready is not None:
            ready.set()
        await (stop.wait() if stop is not None else asyncio.Event().wait())
    finally:
        transport.close()
    return medium
