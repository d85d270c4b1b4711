"""Scenario files: every shipped one loads; errors name the file and the key."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sim_radio import scenario as scn
from sim_radio.errors import ScenarioError, TraceError

SCENARIOS = Path(__file__).resolve().parents[2] / "sim-radio" / "scenarios"

BASE = """
[run]
duration_s = 10
[nodes]
count = 3
[mobility]
model = "static"
"""


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.toml")), ids=lambda p: p.name)
def test_shipped_scenarios_load(path: Path) -> None:
    sc = scn.load(path)
    assert sc.nodes >= 3 and sc.duration_s > 0


def test_ns2_user_keys(make_scenario: Callable[..., scn.Scenario]) -> None:
    sc = scn.load(SCENARIOS / "ns2_800x800.toml")
    assert sc.mobility_model == "ns2" and sc.traffic_model == "ns2"
    assert sc.interfaces[0].radio.reach_m == 250
    assert sc.duration_s == 900


@pytest.mark.parametrize("extra, key, message", [
    ("[radio]\nrange = 250\n", "radio.range", "unknown key"),
    ("[radio]\nrange_m = '250'\n", "radio.range_m", "must be a number"),
    ("[radio]\nrange_m = -1\n", "radio.range_m", "must be > 0"),
    ("[radio]\nmodel = 'two_ray'\n", "radio.model", "must be one of"),
    ("[radio]\nshadowing_db = 3\n", "radio.shadowing_db", "log_distance"),
    ("[wat]\nx = 1\n", "wat", "unknown key"),
    ("[traffic]\nmodel = 'cbr'\nflows = 1\nsize_bytes = 5000\n", "traffic.size_bytes", "<="),
    ("[traffic]\nmodel = 'cbr'\n[[traffic.flow]]\nsrc = 0\ndst = 7\n", "traffic.flow[0]",
     "distinct nodes"),
    ("[mesh]\nhello_interval_s = 'often'\n", "mesh.hello_interval_s", "type"),
    ("[mesh]\nhello_every = 1.0\n", "mesh.hello_every", "not a MeshConfig field"),
    ("[coverage]\nmodel = 'cells'\n", "coverage.cells", "at least one cell"),
    ("[[coverage.scheduled]]\nnodes = [9]\n", "coverage.scheduled[0].nodes", "below 3"),
    ("[plot]\ntimes_s = [20]\n", "plot.times_s", "within"),
])
def test_errors_name_file_and_key(make_scenario: Callable[..., scn.Scenario], extra: str,
                                  key: str, message: str) -> None:
    with pytest.raises(ScenarioError, match=message) as info:
        make_scenario(BASE + extra, name="bad.toml")
    assert "bad.toml" in str(info.value) and key in str(info.value)


def test_wrong_node_count_for_positions(make_scenario: Callable[..., scn.Scenario]) -> None:
    with pytest.raises(ScenarioError, match=r"nodes\.count"):
        make_scenario(BASE + "positions = [[0, 0], [1, 1]]\n")


def test_not_toml(make_scenario: Callable[..., scn.Scenario]) -> None:
    with pytest.raises(ScenarioError, match="not valid TOML"):
        make_scenario("[run\n")


def test_trace_error_in_scenario_names_trace_line(tmp_path: Path) -> None:
    (tmp_path / "moves").write_text("$node_(0) set X_ 1\n$node_(0) set Y_ 1\ngarbage here\n")
    path = tmp_path / "s.toml"
    path.write_text('[run]\nduration_s = 5\n[mobility]\nmodel = "ns2"\nfile = "moves"\n')
    with pytest.raises(TraceError, match=r"moves:3:"):
        scn.load(path)


def test_missing_trace_file(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('[run]\nduration_s = 5\n[mobility]\nmodel = "sumo"\nfile = "nope.xml"\n')
    with pytest.raises(ScenarioError, match="cannot read"):
        scn.load(path)


def test_interface_overrides(make_scenario: Callable[..., scn.Scenario]) -> None:
    text = """
[run]
duration_s = 10
[nodes]
count = 3
interfaces = ["wifi", "ble"]
[radio]
range_m = 200
model = "log_distance"
shadowing_db = 0
[radio.ble]
range_m = 30
mtu = 100
"""
    sc = make_scenario(text)
    wifi, ble = sc.interfaces
    assert (wifi.name, ble.name) == ("wifi0", "ble0")
    assert wifi.profile.range_m == 200 and ble.profile.range_m == 30 and ble.profile.mtu == 100
    assert wifi.radio.reach_m == pytest.approx(200)  # no shadowing: reach = mean range
