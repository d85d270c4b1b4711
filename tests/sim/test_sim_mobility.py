"""Mobility models stay in bounds and honour speeds and pauses; ns-2 and SUMO traces load."""

from __future__ import annotations

import math
from pathlib import Path
from random import Random

import pytest
from sim_radio import mobility as mob
from sim_radio import ns2, sumo
from sim_radio.errors import TraceError

NS2 = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ns2"
needs_ns2 = pytest.mark.skipif(not NS2.is_dir(), reason="shared ns-2 data not present")


def _legs(tr: mob.Trajectory) -> list[tuple[float, float, float, float, float, float]]:
    return [(tr.ts[k], tr.xs[k], tr.ys[k], tr.ts[k + 1], tr.xs[k + 1], tr.ys[k + 1])
            for k in range(len(tr.ts) - 1)]


def test_random_waypoint_bounds_speeds_and_pauses() -> None:
    m = mob.random_waypoint(20, 1500.0, 300.0, min_speed_mps=1.0, max_speed_mps=20.0,
                            pause_s=30.0, rng=Random(7))
    for i in range(20):
        for k in range(0, 9001):  # every 0.1 s over 900 s
            x, y = m.position(i, k * 0.1)
            assert 0.0 <= x <= 1500.0 and 0.0 <= y <= 300.0
        tr = m.trajectories[i]
        legs = _legs(tr)
        assert legs[0][0] == 0.0 and legs[0][3] == 30.0  # starts with a pause
        assert (legs[0][1], legs[0][2]) == (legs[0][4], legs[0][5])
        for k, (t0, x0, y0, t1, x1, y1) in enumerate(legs[1:], 1):
            if k % 2 == 1:  # a move
                speed = math.hypot(x1 - x0, y1 - y0) / (t1 - t0)
                assert 1.0 - 1e-9 <= speed <= 20.0 + 1e-9
            else:  # a pause at the waypoint
                assert (x0, y0) == (x1, y1)
                assert t1 - t0 == pytest.approx(30.0)


def test_random_waypoint_moves_lazily_and_repeats() -> None:
    a = mob.random_waypoint(3, 100.0, 100.0, min_speed_mps=1.0, max_speed_mps=2.0,
                            pause_s=0.0, rng=Random(1))
    b = mob.random_waypoint(3, 100.0, 100.0, min_speed_mps=1.0, max_speed_mps=2.0,
                            pause_s=0.0, rng=Random(1))
    assert len(a.trajectories[0].ts) <= 2  # nothing generated before it is asked for
    assert a.position(1, 500.0) == b.position(1, 500.0)
    assert a.position(1, 10.0) == b.position(1, 10.0)  # going back in time works too


def test_manhattan_stays_on_streets_in_bounds() -> None:
    m = mob.manhattan(15, 1000.0, 800.0, block_m=200.0, min_speed_mps=5.0, max_speed_mps=15.0,
                      pause_s=5.0, turn_probability=0.5, rng=Random(3))
    for i in range(15):
        for k in range(0, 3001):
            x, y = m.position(i, k * 0.2)
            assert -1e-6 <= x <= 1000.0 + 1e-6 and -1e-6 <= y <= 800.0 + 1e-6
            on_street_x = abs(x / 200.0 - round(x / 200.0)) < 1e-6
            on_street_y = abs(y / 200.0 - round(y / 200.0)) < 1e-6
            assert on_street_x or on_street_y
        for t0, x0, y0, t1, x1, y1 in _legs(m.trajectories[i]):
            if (x0, y0) != (x1, y1):
                assert 5.0 - 1e-9 <= math.hypot(x1 - x0, y1 - y0) / (t1 - t0) <= 15.0 + 1e-9


@needs_ns2
def test_ns2_setdest_file_replays_as_written() -> None:
    moves = ns2.parse_movement(NS2 / "scen-3-test")
    m = mob.from_waypoints(moves.paths)
    # node 0 starts at (83.36, 239.44), waits until 33 s, then heads to (89.66, 283.49)
    # at 19.15 m/s: 44.5 m, so it arrives 2.32 s later and stays there.
    assert m.position(0, 0.0) == pytest.approx((83.364418416244, 239.438009831261))
    assert m.position(0, 33.0) == pytest.approx((83.364418416244, 239.438009831261))
    assert m.position(0, 100.0) == pytest.approx((89.663708107313, 283.494644426442))
    x, y = m.position(0, 34.0)
    assert math.hypot(x - 83.364418416244, y - 239.438009831261) == pytest.approx(19.1538, 1e-3)
    assert m.max_speed_mps == pytest.approx(19.153832288917)


@needs_ns2
def test_ns2_files_from_the_distribution() -> None:
    moves = ns2.parse_movement(NS2 / "scen-800x800-30-500-1.0-1")
    assert len(moves.paths) == 30 and moves.setdests == 30
    m = mob.from_waypoints(moves.paths, 800.0, 800.0)
    for i in range(30):
        for t in range(0, 2000, 5):
            x, y = m.position(i, float(t))
            assert 0 <= x <= 800 and 0 <= y <= 800
    assert m.max_speed_mps <= 1.0 + 1e-9
    traffic = ns2.parse_traffic(NS2 / "cbr-50-10-4-512")
    assert len(traffic.flows) == 10
    first = traffic.flows[0]
    assert (first.src, first.dst, first.size_bytes, first.interval_s) == (1, 2, 512, 4.0)
    assert first.start_s == pytest.approx(176.70898653413587) and first.random
    mixed = ns2.parse_traffic(NS2 / "cbr-3-test")
    assert len(mixed.flows) == 1 and len(mixed.skipped) == 1 and "FTP" in mixed.skipped[0]


def test_ns2_cut_leg_when_a_new_setdest_arrives_early(tmp_path: Path) -> None:
    f = tmp_path / "scen"
    f.write_text('$node_(0) set X_ 0.0\n$node_(0) set Y_ 0.0\n'
                 '$ns_ at 0.0 "$node_(0) setdest 100.0 0.0 10.0"\n'
                 '$ns_ at 5.0 "$node_(0) setdest 50.0 50.0 10.0"\n')
    m = mob.from_waypoints(ns2.parse_movement(f).paths)
    assert m.position(0, 5.0) == pytest.approx((50.0, 0.0))
    assert m.position(0, 10.0) == pytest.approx((50.0, 50.0))


@pytest.mark.parametrize("text, line", [
    ('$node_(0) set X_ 1.0\n$node_(0) set Y_ 2.0\n$node_(0) fly away\n', 3),
    ('$node_(0) set X_ 1.0\n$node_(0) set Y_ 2.0\n$ns_ at 1 "$node_(0) setdest 1 2 -3"\n', 3),
    ('# ok\n$node_(0) set X_ abc\n', 2),
])
def test_ns2_bad_line_names_file_and_line(tmp_path: Path, text: str, line: int) -> None:
    f = tmp_path / "bad-scen"
    f.write_text(text)
    with pytest.raises(TraceError, match=rf"bad-scen:{line}:"):
        ns2.parse_movement(f)


def test_ns2_traffic_bad_line(tmp_path: Path) -> None:
    f = tmp_path / "bad-cbr"
    f.write_text("set udp_(0) [new Agent/UDP]\n$udp_(0) explode\n")
    with pytest.raises(TraceError, match=r"bad-cbr:2:"):
        ns2.parse_traffic(f)


def test_sumo_fcd(tmp_path: Path) -> None:
    f = tmp_path / "fcd.xml"
    f.write_text('<?xml version="1.0"?>\n<fcd-export>\n'
                 '<timestep time="0.00"><vehicle id="a" x="0" y="0" speed="0"/></timestep>\n'
                 '<timestep time="1.00"><vehicle id="a" x="10" y="0" speed="10"/>\n'
                 '  <vehicle id="b" x="5" y="5" speed="0"/></timestep>\n'
                 '<timestep time="2.00"><vehicle id="a" x="20" y="0" speed="10"/></timestep>\n'
                 '</fcd-export>\n')
    trace = sumo.parse_fcd(f)
    assert trace.ids == ["a", "b"]
    m = mob.from_waypoints(trace.paths)
    assert m.position(0, 1.5) == pytest.approx((15.0, 0.0))
    assert m.position(1, 0.0) == (5.0, 5.0) and m.position(1, 9.0) == (5.0, 5.0)
    assert m.max_speed_mps == pytest.approx(10.0)


def test_sumo_errors_name_the_line(tmp_path: Path) -> None:
    f = tmp_path / "bad.xml"
    f.write_text('<fcd-export>\n<timestep time="0">\n<vehicle id="a" x="1"/>\n'
                 '</timestep></fcd-export>\n')
    with pytest.raises(TraceError, match=r"bad.xml:3: missing attribute 'y'"):
        sumo.parse_fcd(f)
    f.write_text("<fcd-export>\n<timestep time='0'>\n")
    with pytest.raises(TraceError, match="not well-formed"):
        sumo.parse_fcd(f)
