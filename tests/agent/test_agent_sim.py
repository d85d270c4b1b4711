"""Agents in one process joined to a simulated medium over loopback UDP.

The medium here is a small stand-in that speaks sim_radio's medium protocol and connects
node indexes in a chain (0 - 1 - 2), so the agents' sim links, the Agent class and its
control commands are exercised without namespaces.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from agent.app import Agent
from agent.config import parse_config
from agent.control import request
from agent.logs import NodeLogger
from ledger import Ledger
from ledger.backhaul.server import BackhaulServer
from ledger.store import SqliteStore
from ledger.tx import Transaction, default_registry
from mesh.identity import Identity

if TYPE_CHECKING:
    from .conftest import MakeMedium, StandInMedium


async def start_agents(tmp_path: Path, medium: StandInMedium, count: int,
                       backhaul: dict[str, Any] | None = None) -> list[Agent]:
    port = medium.port
    agents = []
    for i in range(count):
        d = tmp_path / f"n{i}"
        config = parse_config({
            "node": {"state_dir": str(d), "seed": i},
            "mesh": {"hello_interval_s": 0.2},
            "sim": {"enabled": True, "port": port, "mtu": 1400},
            "discovery": {"enabled": False},
            "line": {"monitor": "static", "static_up": i == 0},
            "control": {"socket": str(d / "c.sock")},
            **({"backhaul": backhaul} if backhaul else {}),
        })
        ident = Identity.from_seed(bytes([i + 7]) * 32)
        agent = Agent(config, ident, NodeLogger(ident.node_id.hex()))
        await agent.start()
        agents.append(agent)
    return agents


def neighbour_count(agent: Agent) -> int:
    return len(agent.node.neighbours()) if agent.node is not None else 0


async def wait_until(check: Any, timeout_s: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not check():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_agents_over_the_sim_medium_route_ping_and_reach_the_backhaul(
        tmp_path: Path, stand_in_medium: MakeMedium) -> None:
    medium = await stand_in_medium(mtu=1400)
    agents = await start_agents(tmp_path, medium, 3)
    try:
        await wait_until(lambda: neighbour_count(agents[1]) == 2)
        far = agents[2]
        result = await agents[0]._cmd_ping({"dest": far.node_hex, "count": 3, "timeout": 2.0})
        assert None not in result["rtt_ms"]
        # The gateway (index 0, static line up) is found two hops away by agent 2.
        # A search made before the neighbours were up fails, and the next one waits out the
        # gateway back-off (5 s, then 10 s): give it time for two on a loaded machine.
        await wait_until(lambda: far.node is not None and far.node.gateway is not None,
                         timeout_s=30.0)
        await far._cmd_send({"dest": "backhaul", "text": "meter reading"})
        await wait_until(lambda: len(agents[0].inbox) == 1)
        got = agents[0].inbox[0]
        assert got.backhaul and got.hops == 2 and got.source == far.node_hex
        answer = await asyncio.to_thread(request, str(tmp_path / "n1" / "c.sock"), "status")
        assert answer["links"]["sim"]["rx"] > 0 and answer["neighbours"] == 2
        assert medium.frames >= answer["links"]["sim"]["rx"]
    finally:
        for agent in agents:
            await agent.stop()
    # SIGTERM's path (stop) signed the pending events into the ledger.
    ident = agents[2].identity
    with Ledger.open(tmp_path / "n2" / "ledger.sqlite", ident) as ledger:
        kinds = {r.tx.type for r in ledger.query()}
        assert {"mesh.neighbour_up", "mesh.route_added", "mesh.gateway_changed"} <= kinds
        gateway = ledger.query(type="mesh.gateway_changed")[0].tx.body
        assert gateway["new"] == agents[0].identity.node_id


async def test_small_medium_mtu_fragments_frames(tmp_path: Path,
                                                 stand_in_medium: MakeMedium) -> None:
    medium = await stand_in_medium(mtu=60)
    agents = await start_agents(tmp_path, medium, 2)
    try:
        await wait_until(lambda: neighbour_count(agents[0]) == 1)
        assert agents[0].node is not None
        assert agents[0].node.interfaces["sim"].mtu == 60
        assert agents[0].node.stats["tx_frag"] > 0
        await agents[1]._cmd_send({"dest": agents[0].node_hex, "text": "x" * 300})
        await wait_until(lambda: len(agents[0].inbox) == 1)
        assert medium.addrs.keys() == {0, 1}
    finally:
        for agent in agents:
            await agent.stop()


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
async def test_ledgers_sync_with_the_backhaul_directly_and_through_the_gateway(
        tmp_path: Path, tls: bool, tls_files: tuple[Path, Path],
        stand_in_medium: MakeMedium) -> None:
    """Agent 0 has a line and syncs over TCP (or TLS); agent 2 (no line) syncs through agent 0,
    whose relay opens the backhaul connection (over TLS too). Over its own line a device also
    fetches the feeds it lacks; through a gateway it only uploads."""
    store = SqliteStore(str(tmp_path / "backhaul.sqlite"))
    server_id = Identity.from_seed(b"\x33" * 32)
    server = BackhaulServer(store, server_id, default_registry())
    server_tls = None
    if tls:
        server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_tls.load_cert_chain(*tls_files)
    port = await server.start("127.0.0.1", 0, ssl_context=server_tls)
    for i in range(3):
        store.enrol(Identity.from_seed(bytes([i + 7]) * 32).public_key, f"n{i}", 0)
    other = Ledger.open(tmp_path / "other.sqlite", Identity.from_seed(b"\x44" * 32))
    other.append(Transaction("mesh.manet_left", {"t": 0.0}))
    elsewhere = other.flush()  # a feed only the backhaul holds
    assert elsewhere is not None
    store.put_blocks([elsewhere])
    other.close()
    medium = await stand_in_medium(mtu=1400)
    agents = await start_agents(
        tmp_path, medium, 3,
        backhaul={"host": "127.0.0.1", "port": port, "key": server_id.public_key.hex(),
                  "interval_s": 3600.0, **({"tls_ca": str(tls_files[0])} if tls else {})})
    try:
        far = agents[2]
        # A search made before the neighbours were up fails, and the next one waits out the
        # gateway back-off (5 s, then 10 s): give it time for two on a loaded machine.
        await wait_until(lambda: far.node is not None and far.node.gateway is not None,
                         timeout_s=30.0)
        direct = await agents[0]._cmd_sync({})
        assert direct["synced"] and direct["error"] is None, direct
        through = await far._cmd_sync({})
        assert through["synced"] and through["error"] is None, through
        held = [a.ledger.ledger.store.head(elsewhere.author) if a.ledger else None
                for a in (agents[0], far)]
        assert held[0] is not None and held[1] is None
        # The backhaul now holds both feeds, the far one relayed by the gateway.
        heads = {h.author for h in store.heads()}
        assert {agents[0].identity.public_key, far.identity.public_key} <= heads
        # Agents 1 and 2 (no line) synced through the gateway: on their own when it
        # appeared, and agent 2 once more on request.
        assert agents[0].backhaul is not None
        assert agents[0].backhaul.relay.counters["opened"] >= 2
    finally:
        for agent in agents:
            await agent.stop()
        await server.close()
        store.close()


async def test_partitions_exchange_ledgers_when_they_meet(
        tmp_path: Path, stand_in_medium: MakeMedium) -> None:
    """{0, 1} and {2} record apart; when the 1-2 link appears, 2 gets both feeds."""
    medium = await stand_in_medium(mtu=1400)
    medium.cut.add(frozenset((1, 2)))
    agents = await start_agents(tmp_path, medium, 3)
    keys = [a.identity.public_key for a in agents]
    try:
        def feeds(i: int) -> set[bytes]:
            recorder = agents[i].ledger
            assert recorder is not None
            return {h.author for h in recorder.ledger.heads()}

        await wait_until(lambda: keys[0] in feeds(1) and keys[1] in feeds(0))
        assert keys[0] not in feeds(2) and keys[1] not in feeds(2)
        medium.cut.clear()  # the partitions meet
        await wait_until(lambda: {keys[0], keys[1]} <= feeds(2))
        sync = agents[1].peer_sync  # took part in both meetings, as initiator or responder
        assert sync is not None
        await wait_until(lambda: sync.counters["complete"] >= 2)
        assert sync.counters["failed"] == 0
    finally:
        for agent in agents:
            await agent.stop()
