"""The module host in real agents: a coordinator sends an interchange plan over the mesh (a
simulated medium on loopback UDP), one vehicle acknowledges, one declines by its
configuration, the coordinator re-plans without it, and both sides' ledgers hold the records;
charging sessions through the control socket and the CLI; chunking and the vehicle's check.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from agent.app import Agent
from agent.cli import main
from agent.config import InterchangeSection, parse_config
from agent.control import CommandError, ControlError, request
from agent.logs import NodeLogger
from agent.module_host import (
    PLAN_PREFIX,
    Reassembly,
    chunk,
    parse_vehicle_keys,
    vehicle_check,
)
from ledger import Ledger
from mesh.identity import Identity

if TYPE_CHECKING:
    from .conftest import MakeMedium, StandInMedium

SCENARIO = """
name = "two-vehicles"
slots = 8
slot_minutes = 60
move_cost = 100
stored_energy_value = 50

[[site]]
id = "s1"
aggregator = "A"
lat = 45.76
lon = 4.83
generation = [6000, 6000, 6000, 6000, 0, 0, 0, 0]
load = 0
import_price = 200
export_price = 40

[[site]]
id = "s2"
aggregator = "B"
lat = 45.77
lon = 4.85
generation = 0
load = [0, 0, 0, 0, 5000, 5000, 5000, 5000]
import_price = 200
export_price = 40

""" + "".join(f"""
[[vehicle]]
id = "{vid}"
capacity_kwh = 40
energy_kwh = 20
min_kwh = 5
final_kwh = 15
charge_kw = 7
discharge_kw = 7
start_site = "s1"
""" for vid in ("ev1", "ev2"))


async def wait_for(check: Any, timeout_s: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not check():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def identities() -> list[Identity]:
    return [Identity.from_seed(bytes([i + 40]) * 32) for i in range(3)]


async def start(tmp_path: Path, medium: StandInMedium,
                sections: list[dict[str, Any]]) -> list[Agent]:
    port = medium.port
    agents = []
    for i, (ident, section) in enumerate(zip(identities(), sections, strict=True)):
        d = tmp_path / f"n{i}"
        config = parse_config({
            "node": {"state_dir": str(d), "seed": i},
            "mesh": {"hello_interval_s": 0.2},
            "sim": {"enabled": True, "port": port},
            "discovery": {"enabled": False},
            "line": {"monitor": "static"},
            "control": {"socket": str(d / "c.sock")},
            "ledger": {"peer_sync": False},
            "interchange": section,
        })
        agent = Agent(config, ident, NodeLogger(ident.node_id.hex()))
        await agent.start()
        agents.append(agent)
    return agents


def bodies(path: Path, ident: Identity, kind: str) -> list[Mapping[str, Any]]:
    with Ledger.open(path, ident) as led:
        return [r.tx.body for r in led.query(type=kind) if r.author == ident.public_key]


async def test_plan_acked_declined_replanned_and_recorded(tmp_path: Path,
                                                          stand_in_medium: MakeMedium) -> None:
    coord, ev1, ev2 = identities()
    scenario = tmp_path / "scenario.toml"
    scenario.write_text(SCENARIO)
    coordinator_key = [coord.public_key.hex()]
    medium = await stand_in_medium(topology="open")
    agents = await start(tmp_path, medium, [
        {"vehicle_keys": [f"ev1={ev1.public_key.hex()}", f"ev2={ev2.public_key.hex()}"],
         "retry_s": 1.0},
        {"vehicle_id": "ev1", "coordinator_keys": coordinator_key},
        {"vehicle_id": "ev2", "coordinator_keys": coordinator_key, "accept": False},
    ])
    sock = str(tmp_path / "n0" / "c.sock")
    try:
        await wait_for(lambda: all(a.node is not None and len(a.node.neighbours()) == 2
                                   for a in agents))
        sent = await asyncio.to_thread(main, ["interchange", "send", str(scenario),
                                              "--socket", sock])
        assert sent == 0

        def settled() -> bool:
            host = agents[0].modules
            return host is not None and host.status()["coordinator"]["state"] == "settled"

        await wait_for(settled)
        status = await asyncio.to_thread(request, sock, "interchange_status")
        state = status["coordinator"]
        assert state["version"] == 2 and state["excluded"] == ["ev2"]
        assert state["answers"] == {"ev1": "ack", "ev2": "decline:unavailable"}
        assert [h["excluded"] for h in state["history"]] == [[], ["ev2"]]
        assert agents[2].modules is not None
        assert agents[2].modules.answers[0]["answer"] == "decline"
        assert await asyncio.to_thread(main, ["interchange", "status", "--socket", sock]) == 0
    finally:
        for agent in agents:
            await agent.stop()

    led = [tmp_path / f"n{i}" / "ledger.sqlite" for i in range(3)]
    plans = bodies(led[0], coord, "interchange.plan")
    assert [p["version"] for p in plans] == [1, 2]
    answers = bodies(led[0], coord, "interchange.answer")
    assert {(a["vehicle"], a["version"], a["answer"]) for a in answers} >= {
        ("ev2", 1, "decline"), ("ev1", 2, "ack")}
    (final,) = bodies(led[0], coord, "interchange.transmission")
    assert final["state"] == "settled" and final["plan"]["plan_id"] == plans[1]["plan_id"]
    ev1_answers = bodies(led[1], ev1, "interchange.answer")
    assert ev1_answers[-1]["answer"] == "ack" and ev1_answers[-1]["version"] == 2
    assert ev1_answers[-1]["plan"]["vehicle"] == "ev1"
    (declined,) = bodies(led[2], ev2, "interchange.answer")
    assert declined["reason"] == "unavailable" and declined["coordinator"] == coord.node_id


async def test_silent_vehicle_times_out_on_the_agent_timer(tmp_path: Path,
                                                           stand_in_medium: MakeMedium) -> None:
    coord, ev1, ev2 = identities()
    scenario = tmp_path / "scenario.toml"
    scenario.write_text(SCENARIO)
    medium = await stand_in_medium(topology="open")
    agents = await start(tmp_path, medium, [
        {"vehicle_keys": [f"ev1={ev1.public_key.hex()}", f"ev2={ev2.public_key.hex()}"],
         "retry_s": 0.3, "retries": 1},
        {"vehicle_id": "ev1", "coordinator_keys": [coord.public_key.hex()]},
        {},  # not a vehicle: it ignores plans, so ev2 never answers
    ])
    try:
        await wait_for(lambda: all(a.node is not None and len(a.node.neighbours()) == 2
                                   for a in agents))
        host = agents[0].modules
        assert host is not None
        await host._cmd_send({"scenario": str(scenario)})
        await wait_for(lambda: host.status()["coordinator"]["state"] == "settled")
        state = host.status()["coordinator"]
        assert state["answers"] == {"ev1": "ack", "ev2": "decline:timeout"}
        assert state["counters"]["resent"] >= 1
        assert agents[2].modules is not None
        assert agents[2].modules.counters["plan_not_a_vehicle"] >= 2
    finally:
        for agent in agents:
            await agent.stop()


async def test_charging_session_start_stop_recorded(tmp_path: Path,
                                                    stand_in_medium: MakeMedium) -> None:
    medium = await stand_in_medium(topology="open")
    agents = await start(tmp_path, medium, [{"vehicle_id": "ev1"}, {}, {}])
    sock = str(tmp_path / "n0" / "c.sock")
    try:
        started = await asyncio.to_thread(
            main, ["charging", "session", "start", "--location", "LOC1", "--connector", "ccs",
                   "--planned-wh", "20000", "--socket", sock])
        assert started == 0
        with pytest.raises(ControlError, match="already has a session"):
            await asyncio.to_thread(request, sock, "charging_session", action="start",
                                    location="LOC1", connector="ccs")
        listed = await asyncio.to_thread(request, sock, "charging_session", action="list")
        assert [s["status"] for s in listed["open"]] == ["charging"]
        stopped = await asyncio.to_thread(
            main, ["charging", "session", "stop", "--metered-wh", "18500", "--cost-milli",
                   "6200", "--socket", sock])
        assert stopped == 0
    finally:
        for agent in agents:
            await agent.stop()
    sessions = bodies(tmp_path / "n0" / "ledger.sqlite", identities()[0], "charging.session")
    assert [(s["status"], s["metered_wh"]) for s in sessions] == [("charging", 0),
                                                                 ("completed", 18500)]
    assert sessions[0]["plan_id"] == sessions[1]["plan_id"]
    assert sessions[1]["cost_milli"] == 6200 and sessions[1]["vehicle"] == "ev1"


def test_chunks_reassemble_in_any_order_and_bad_chunks_are_dropped() -> None:
    data = bytes(range(256)) * 9
    parts = chunk(PLAN_PREFIX, 7, data, 200)
    assert len(parts) > 10 and all(len(p) <= 200 for p in parts)
    r = Reassembly()
    src = b"\x01" * 8
    got = [r.add(src, PLAN_PREFIX, p, 0.0) for p in reversed(parts)]
    assert got[:-1] == [None] * (len(parts) - 1) and got[-1] == data
    assert r.add(src, PLAN_PREFIX, PLAN_PREFIX + b"\x00", 0.0) is None
    assert r.add(src, PLAN_PREFIX, PLAN_PREFIX + b"\x00\x00\x00\x01\x05\x02x", 0.0) is None
    assert r.dropped == 2
    # A message never completed expires; a one-chunk message passes straight through.
    r.add(src, PLAN_PREFIX, parts[0], 0.0)
    single = chunk(PLAN_PREFIX, 8, b"hello", 200)
    assert r.add(src, PLAN_PREFIX, single[0], 500.0) == b"hello"
    r.add(src, PLAN_PREFIX, parts[1], 1000.0)
    assert r.dropped == 3


def test_vehicle_check_follows_the_configuration() -> None:
    body = {"plan": {"vehicle": "ev1", "stops": [
        {"site": "s1", "arrive": 0, "depart": 4, "charge": [[1, 3000]], "discharge": []},
        {"site": "s2", "arrive": 5, "depart": 8, "charge": [], "discharge": [[6, 2500]]}]}}
    assert vehicle_check(InterchangeSection(vehicle_id="ev1"))(body) is None
    window = vehicle_check(InterchangeSection(available_until=6))(body)
    assert window is not None and window[0] == "window"
    assert vehicle_check(InterchangeSection(available_from=2))(body) is not None
    battery = vehicle_check(InterchangeSection(max_discharge_kwh=2.0))(body)
    assert battery is not None and battery[0] == "battery"
    off = vehicle_check(InterchangeSection(accept=False))(body)
    assert off is not None and off[0] == "unavailable"
    bad = vehicle_check(InterchangeSection())({"plan": {"stops": [{"charge": 3}]}})
    assert bad is not None and bad[0] == "invalid"
    with pytest.raises(CommandError, match="VEHICLE_ID"):
        parse_vehicle_keys(["ev1:abcd"])
