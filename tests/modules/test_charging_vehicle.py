import math
from pathlib import Path

import pytest

from agent.modules.charging.errors import VehicleError
from agent.modules.charging.vehicle import (
    CurvePoint,
    Vehicle,
    charge_segments,
    charge_time_s,
    find_vehicle,
    load_vehicles,
)

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
EV_DATA = SHARED / "open-ev-data" / "ev-data.json"

CAR = Vehicle("t", "Test Car", 50_000, 200, 11_000, 3, 100_000,
              (CurvePoint(0, 100_000), CurvePoint(50, 100_000), CurvePoint(100, 20_000)),
              frozenset({"type2", "ccs"}))


def test_flat_part_of_the_curve_is_energy_over_power() -> None:
    # 10% -> 40% of 50 kWh = 15 kWh at a flat 100 kW: 0.15 h = 540 s.
    assert charge_time_s(CAR, 5_000, 20_000, dc=True, charger_w=150_000) == pytest.approx(540)


def test_linear_part_integrates_to_a_logarithm() -> None:
    # 50% -> 100%: power falls linearly from 100 kW to 20 kW over 25 kWh.
    # t = dE / dP * ln(P0 / P1) = 25 kWh / 80 kW * ln(5) hours.
    expected = 25 / 80 * math.log(5) * 3600
    assert charge_time_s(CAR, 25_000, 50_000, dc=True, charger_w=150_000) == \
        pytest.approx(expected)


def test_charger_cap_cuts_the_curve() -> None:
    # At a 50 kW charger the curve is capped until it falls below 50 kW at 81.25%.
    e_cross = 25_000 + (100_000 - 50_000) / 80_000 * 25_000  # 40,625 Wh
    flat = (e_cross - 10_000) / 50_000 * 3600
    tail = (50_000 - e_cross) / 30_000 * math.log(50 / 20) * 3600
    assert charge_time_s(CAR, 10_000, 50_000, dc=True, charger_w=50_000) == \
        pytest.approx(flat + tail)
    segs = charge_segments(CAR, 10_000, 50_000, dc=True, charger_w=50_000)
    assert sum(s.energy_wh for s in segs) == pytest.approx(40_000)


def test_ac_power_follows_phases() -> None:
    one_phase = Vehicle("o", "One Phase", 50_000, 200, 7_400, 1, 0, (), frozenset({"type2"}))
    # A 3-phase 22 kW point gives a 1-phase car a third of it, capped by its 7.4 kW charger.
    assert charge_time_s(one_phase, 0, 7_333, dc=False, charger_w=22_000) == \
        pytest.approx(7_333 / (22_000 / 3) * 3600)
    assert charge_time_s(CAR, 0, 11_000, dc=False, charger_w=22_000) == pytest.approx(3600)
    with pytest.raises(VehicleError):
        charge_time_s(one_phase, 0, 1_000, dc=True, charger_w=50_000)


def test_energies_outside_the_battery_are_refused() -> None:
    with pytest.raises(VehicleError, match="outside the battery"):
        charge_time_s(CAR, 0, 60_000, dc=True, charger_w=50_000)
    with pytest.raises(VehicleError, match="unknown plug"):
        CAR.with_plugs(["schuko"])


@pytest.mark.skipif(not EV_DATA.exists(), reason="../shared/data/open-ev-data is absent")
def test_real_models_load_and_are_found() -> None:
    models = load_vehicles(EV_DATA)
    assert len(models) == 293
    u5 = find_vehicle(models, "aiways u5")
    assert u5.capacity_wh == 63_000 and u5.consumption_wh_per_km == 188
    assert u5.plugs == {"type2", "ccs"}
    with pytest.raises(VehicleError, match="matches"):
        find_vehicle(models, "tesla")
    with pytest.raises(VehicleError, match="no vehicle"):
        find_vehicle(models, "flying carpet")
    # Every DC model's curve integrates to a finite, positive 10 -> 80 % time.
    for m in models:
        if m.dc_curve:
            t = charge_time_s(m, 0.1 * m.capacity_wh, 0.8 * m.capacity_wh, dc=True,
                              charger_w=150_000)
            assert 0 < t < 6 * 3600, m.name
