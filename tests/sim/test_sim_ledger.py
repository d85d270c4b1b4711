"""Every node's ledger in the simulator: routing history signed into blocks, synced with the
simulated backhaul over the node's own line or through a gateway over the mesh."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from sim_radio import plots
from sim_radio import scenario as scn
from sim_radio.cli import main
from sim_radio.engine import Simulation
from sim_radio.errors import ScenarioError

Make = Callable[..., scn.Scenario]

# Node 0 keeps its line; nodes 1-3 form a chain behind it and never have one; node 4 has a
# line until 40 s, then syncs through the mesh (its neighbour 3, then 0 as the gateway).
CHAIN = """
[run]
duration_s = {duration}
[mobility]
model = "static"
positions = [[0, 0], [200, 0], [400, 0], [600, 0], [800, 0]]
[radio]
range_m = 250
[coverage]
model = "cells"
cells = [{{ x = 0, y = 0, radius_m = 50 }}, {{ x = 800, y = 0, radius_m = 50 }}]
scheduled = [{{ nodes = [4], start_s = 40 }}]
[traffic]
model = "cbr"
[[traffic.flow]]
src = 2
dst = "backhaul"
rate_pps = 2
start_s = 5
[ledger]
enabled = true
sync_interval_s = 15
fetch_through_gateways = {fetch}
peer_sync = {peer}
"""


def test_every_feed_reaches_the_backhaul_intact_over_lines_and_gateways(
        make_scenario: Make) -> None:
    sim = Simulation(make_scenario(CHAIN.format(duration=120, fetch="true", peer="true")))
    result = sim.run()
    led = result.summary["ledger"]
    assert sim.ledgers is not None
    assert led["syncs_failed"] == 0
    assert led["syncs_direct"] >= 2 and led["syncs_gateway"] >= 3
    backhaul = sim.ledgers.backhaul
    assert backhaul.verify().ok
    for i, device in enumerate(sim.ledgers.ledgers):
        head = backhaul.store.head(device.author)
        assert head is not None, f"node {i}: nothing at the backhaul"
        # Byte for byte what the node signed, up to what it had when it last synced.
        for height in range(head.height + 1):
            assert (backhaul.store.block_raw(device.author, height)
                    == device.store.block_raw(device.author, height))
        assert device.height() - head.height <= 8  # at most the last interval's blocks
        assert device.query(type="mesh.route_added")  # routing history was recorded
    # Node 4 lost its line at 40 s; its history after that came up through a gateway.
    assert result.summary["core_drops"].get("no_route_found", 0) == 0
    assert led["blocks_copied_to_devices"] > 0  # devices fetched each other's feeds
    assert 0 < led["mean_lag_s"] <= led["p95_lag_s"] <= 15 + 10
    assert led["mesh_payloads"] > 0 and led["payloads_lost_at_gateway"] == 0


def test_through_gateways_devices_only_upload_unless_asked(make_scenario: Make) -> None:
    """As in the agent: over its own line a node fetches what it lacks, through a gateway it
    only uploads (`fetch_through_gateways = true` fetches there too, at a cost to the mesh)."""
    runs = {}
    for fetch in ("false", "true"):
        sim = Simulation(make_scenario(CHAIN.format(duration=90, fetch=fetch, peer="false")))
        runs[fetch] = (sim.run().summary["ledger"], sim)
    for fetch, (led, sim) in runs.items():
        assert sim.ledgers is not None
        ledgers = sim.ledgers.ledgers
        assert len(ledgers[0].heads()) == 5  # node 0 (always a line) fetched every feed
        held_by_lineless = {len(ledgers[i].heads()) for i in (1, 2, 3)}
        assert held_by_lineless == ({1} if fetch == "false" else {5}), (fetch, held_by_lineless)
        assert led["blocks_at_backhaul"] > 0 and led["syncs_failed"] == 0
    assert runs["false"][0]["mesh_bytes"] < runs["true"][0]["mesh_bytes"]


def test_partitions_exchange_ledgers_when_they_meet(make_scenario: Make) -> None:
    """No lines anywhere: node 2 meets node 1 at 30 s, and they sync as neighbours (the
    smaller id initiates); node 2 then also holds node 0's feed, which node 1 had."""
    sim = Simulation(make_scenario("""
[run]
duration_s = 40
[mobility]
model = "static"
positions = [[0, 0], [200, 0], [1000, 0]]
[[mobility.moves]]
node = 2
at_s = 30
to = [400, 0]
[ledger]
enabled = true
"""))
    sim.run(until=29)
    assert sim.ledgers is not None
    ledgers = sim.ledgers.ledgers
    assert ledgers[2].store.head(ledgers[1].author) is None
    result = sim.run()
    led = result.summary["ledger"]
    assert led["syncs_direct"] == led["syncs_gateway"] == 0  # no line, no gateway
    assert led["peer_syncs_ok"] >= 2 and led["peer_syncs_failed"] == 0
    for a, b in ((1, 2), (2, 1), (0, 2)):
        head = ledgers[b].store.head(ledgers[a].author)
        assert head is not None, f"node {b} lacks node {a}'s feed"
        for height in range(head.height + 1):
            assert (ledgers[b].store.block_raw(ledgers[a].author, height)
                    == ledgers[a].store.block_raw(ledgers[a].author, height))
    assert all(led_.verify().ok for led_ in ledgers)


def test_same_seed_same_ledger_figures(make_scenario: Make) -> None:
    text = CHAIN.format(duration=60, fetch="true", peer="true")
    a = Simulation(make_scenario(text, "same.toml")).run().summary
    b = Simulation(make_scenario(text, "same.toml")).run().summary
    for summary in (a, b):
        summary.pop("wall_seconds")
        summary.pop("sim_seconds_per_wall_second")
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def test_without_the_section_no_ledger_is_kept(make_scenario: Make) -> None:
    text = CHAIN.format(duration=5, fetch="true", peer="true").split("[ledger]")[0]
    sim = Simulation(make_scenario(text))
    assert sim.ledgers is None and "ledger" not in sim.run().summary


@pytest.mark.parametrize(("line", "key"), [
    ('enabled = "yes"', "ledger.enabled"),
    ("sync_interval_s = 0", "ledger.sync_interval_s"),
    ("peers = true", "ledger.peers"),
])
def test_bad_ledger_keys_are_named(make_scenario: Make, line: str, key: str) -> None:
    base = CHAIN.format(duration=5, fetch="true", peer="true").split("[ledger]")[0]
    text = base + "[ledger]\n" + line
    with pytest.raises(ScenarioError, match=key):
        make_scenario(text)


def test_series_and_plot_show_history_reaching_the_backhaul(make_scenario: Make,
                                                              tmp_path: Path) -> None:
    sc = make_scenario(CHAIN.format(duration=60, fetch="true", peer="true"))
    result = Simulation(sc).run()
    written, at_backhaul = result.series["ledger_written"], result.series["ledger_at_backhaul"]
    assert len(result.series["ledger_t"]) == len(written) == 61
    assert written == sorted(written) and at_backhaul == sorted(at_backhaul)  # type: ignore[type-var]
    assert 0 < at_backhaul[-1] <= written[-1]  # type: ignore[operator]
    paths = plots.write(result, tmp_path, width_m=sc.width_m, height_m=sc.height_m, title="t")
    assert (tmp_path / "ledger.png") in paths and (tmp_path / "ledger.png").stat().st_size > 0


def test_a_sweep_over_ledger_keys_reports_ledger_columns(make_scenario: Make,
                                                          tmp_path: Path) -> None:
    path = tmp_path / "chain.toml"
    path.write_text(CHAIN.format(duration=40, fetch="false", peer="true"))
    out = tmp_path / "sweep"
    assert main(["sweep", str(path), "--param", "ledger.peer_sync=true,false", "--seeds", "1",
                 "--out", str(out), "--workers", "1"]) == 0
    rows = {r["value"]: r for r in csv.DictReader((out / "sweep.csv").open())}
    assert float(rows["True"]["ledger_peer_bytes"]) > 0
    assert float(rows["False"]["ledger_peer_bytes"]) == 0
    assert all(0 < float(r["ledger_share_at_backhaul"]) <= 1 for r in rows.values())
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"
