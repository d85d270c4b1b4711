"""The `sim-radio` command: run with --json and --plot, sweep, and refusing bad input."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sim_radio.cli import main
from sim_radio.sweep import parse_param, with_value

SMALL = """
[scenario]
name = "small"
[run]
duration_s = 20
[area]
width_m = 500
height_m = 300
[nodes]
count = 8
[mobility]
model = "random_waypoint"
max_speed_mps = 5
pause_s = 5
[coverage]
model = "cells"
cells = [{ x = 0, y = 0, radius_m = 200 }]
[traffic]
model = "cbr"
flows = 2
rate_pps = 2
[[traffic.flow]]
src = 7
dst = "backhaul"
[plot]
times_s = [10]
"""

REQUIRED = ["nodes", "sim_seconds", "wall_seconds", "data_sent", "data_delivered", "pdr",
            "mean_delay_s", "p95_delay_s", "control_frames", "control_bytes",
            "normalized_routing_load", "route_discoveries", "mean_route_discovery_s",
            "gateway_reachability", "flows"]


def test_run_writes_json_and_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario = tmp_path / "small.toml"
    scenario.write_text(SMALL)
    out = tmp_path / "out.json"
    assert main(["run", str(scenario), "--json", str(out), "--plot", str(tmp_path / "plots"),
                 "--seed", "3", "--until", "15", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "packet delivery ratio" in text and "plot:" in text
    data = json.loads(out.read_text())
    for key in REQUIRED:
        assert key in data
    assert data["nodes"] == 8 and data["sim_seconds"] == 15.0 and data["seed"] == 3
    assert data["data_sent"] > 0 and len(data["flows"]) == 3
    assert data["flows"][2]["dst"] == "backhaul"
    pngs = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert pngs == ["overhead.png", "pdr_delay.png", "topology_t00010.0s.png"]
    for p in (tmp_path / "plots").iterdir():
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_refuses_a_bad_scenario(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario = tmp_path / "bad.toml"
    scenario.write_text(SMALL.replace("pause_s = 5", "pause = 5"))
    assert main(["run", str(scenario)]) == 2
    err = capsys.readouterr().err
    assert "bad.toml" in err and "mobility.pause" in err and "unknown key" in err


def test_sweep_writes_csv_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario = tmp_path / "small.toml"
    scenario.write_text(SMALL.replace("duration_s = 20", "duration_s = 12"))
    out = tmp_path / "sweep"
    assert main(["sweep", str(scenario), "--param", "radio.range_m=100,250", "--seeds", "2",
                 "--out", str(out), "--workers", "2"]) == 0
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    assert [(r["value"], r["seed"]) for r in rows] == [("100", "1"), ("100", "2"),
                                                       ("250", "1"), ("250", "2")]
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert "radio.range_m=250" in capsys.readouterr().out


def test_sweep_refuses_a_bad_value(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario = tmp_path / "small.toml"
    scenario.write_text(SMALL)
    assert main(["sweep", str(scenario), "--param", "radio.range_m=-5", "--seeds", "1",
                 "--out", str(tmp_path / "o")]) == 2
    assert "radio.range_m" in capsys.readouterr().err


def test_param_parsing() -> None:
    assert parse_param("mobility.pause_s=0,30.5,900") == ("mobility.pause_s", [0, 30.5, 900])
    assert parse_param("radio.model=unit_disk,'log_distance'")[1] == ["unit_disk",
                                                                      "log_distance"]
    assert with_value({"a": {"b": 1}}, "a.c", 2) == {"a": {"b": 1, "c": 2}}


def test_same_seed_same_json_across_processes(tmp_path: Path) -> None:
    """Bit for bit across processes too, whatever Python's string hash seed is."""
    scenario = tmp_path / "small.toml"
    scenario.write_text(SMALL)
    outputs = []
    for hash_seed in ("1", "2"):
        out = tmp_path / f"{hash_seed}.json"
        subprocess.run([sys.executable, "-m", "sim_radio.cli", "run", str(scenario), "--json",
                        str(out), "--quiet"], check=True, capture_output=True,
                       env={**os.environ, "PYTHONHASHSEED": hash_seed})
        data = json.loads(out.read_text())
        for key in ("wall_seconds", "sim_seconds_per_wall_second"):
            data.pop(key)
        outputs.append(json.dumps(data, sort_keys=True))
    assert outputs[0] == outputs[1]
