import json
import math
import random
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from agent.modules.charging.cli import register
from agent.modules.charging.errors import PreferenceError, VehicleError
from agent.modules.charging.index import FacilityIndex, haversine_km
from agent.modules.charging.ocpi import Connector, Evse, Location, load_ocpi
from agent.modules.charging.recommend import Preferences, parse_prefer, recommend
from agent.modules.charging.vehicle import CurvePoint, Vehicle

HERE = Path(__file__).resolve().parent / "data"
CAR = Vehicle("t", "Test Car", 50_000, 200, 11_000, 3, 100_000,
              (CurvePoint(0, 100_000), CurvePoint(50, 100_000), CurvePoint(100, 20_000)),
              frozenset({"type2", "ccs"}))
WHEN = datetime(2024, 6, 3, 10, 0)
GENT = (51.05, 3.72)


@pytest.fixture(scope="module")
def index() -> FacilityIndex:
    locations, _ = load_ocpi([HERE / "ocpi_bundle.json"])
    return FacilityIndex(locations)


def ranked(index: FacilityIndex, prefer: str, **kw: float) -> list[str]:
    weights, sources = parse_prefer(prefer)
    prefs = Preferences(weights=weights, sources=sources, **kw)  # type: ignore[arg-type]
    res = recommend(index, CAR, soc=35, latitude=GENT[0], longitude=GENT[1], when=WHEN,
                    prefs=prefs)
    return [r.location_id for r in res.recommendations]


def test_reachability_and_plug_exclusions(index: FacilityIndex) -> None:
    res = recommend(index, CAR, soc=35, latitude=GENT[0], longitude=GENT[1], when=WHEN,
                    explain=True)
    # 35% of 50 kWh minus the 10% margin is 12.5 kWh: 62.5 road km.
    assert res.range_km == pytest.approx(62.5)
    why = {e.location_id: e.reason for e in res.exclusions}
    assert why == {"FAR": "beyond range", "CHADEMO": "no compatible connector",
                   "BUSY": "no free EVSE with a compatible connector"}
    assert {r.location_id for r in res.recommendations} == {"GREEN", "CHEAP", "FAST"}
    for r in res.recommendations:
        assert r.arrival_soc >= 10 and r.energy_wh == round(40_000 - r.arrival_soc * 500)
    # Too little charge to reach anything with the margin: nothing, and it says why.
    empty = recommend(index, CAR, soc=10.2, latitude=51.10, longitude=3.72, when=WHEN)
    assert empty.range_km == pytest.approx(0.5)
    assert empty.recommendations == () and empty.excluded["beyond range"] == 6


def test_preferences_change_the_order(index: FacilityIndex) -> None:
    assert ranked(index, "cheapest")[0] == "CHEAP"
    assert ranked(index, "fastest")[0] == "FAST"
    assert ranked(index, "renewable")[0] == "GREEN"
    assert ranked(index, "greenest")[0] == "GREEN"
    assert ranked(index, "solar")[0] == "GREEN"
    # Weights: all on cost again, but written out.
    assert ranked(index, "cost=1")[0] == "CHEAP"
    # A hard minimum of 50% renewable drops the coal-heavy site and the unpublished mix.
    assert ranked(index, "cheapest", min_renewable=0.5) == ["GREEN"]


def test_figures_of_a_recommendation(index: FacilityIndex) -> None:
    weights, sources = parse_prefer("cheapest")
    res = recommend(index, CAR, soc=35, latitude=GENT[0], longitude=GENT[1], when=WHEN,
                    prefs=Preferences(weights=weights, sources=sources))
    cheap = res.recommendations[0]
    assert cheap.location_id == "CHEAP" and cheap.dc and cheap.power_w == 50_000
    # Metered energy at 95% DC efficiency, 0.20/kWh + 20% VAT.
    assert cheap.metered_wh == round(cheap.energy_wh / 0.95)
    assert cheap.cost_milli == pytest.approx(cheap.metered_wh * 0.2 * 1.2, abs=2)
    assert cheap.renewable_share == pytest.approx(0.3)
    assert cheap.co2_g == pytest.approx(600 * cheap.metered_wh / 1000, abs=1)
    assert not cheap.co2_estimated
    assert cheap.reasons[0].startswith("cost: #1 of 3")
    rec = res.to_record()
    assert rec["recommendations"][0]["cost_milli"] == cheap.cost_milli
    assert all(not isinstance(v, float) for v in rec["recommendations"][0].values())


def test_bad_preferences_and_state_are_refused(index: FacilityIndex) -> None:
    with pytest.raises(PreferenceError):
        parse_prefer("prettiest")
    with pytest.raises(PreferenceError):
        Preferences(weights={"cost": -1})
    with pytest.raises(PreferenceError):
        Preferences(min_arrival_soc=90, target_soc=80)
    with pytest.raises(VehicleError):
        recommend(index, CAR, soc=120, latitude=0, longitude=0, when=WHEN)


def test_grid_index_matches_brute_force() -> None:
    rng = random.Random(7)
    locs = [Location(str(i), str(i), rng.uniform(40, 45), rng.uniform(-75, -68),
                     (Evse("e", "AVAILABLE", (Connector("1", "IEC_62196_T2", "AC_3_PHASE",
                                                        230, 16, 11_040),)),))
            for i in range(3000)]
    idx = FacilityIndex(locs)
    for _ in range(20):
        lat, lon, r = rng.uniform(40, 45), rng.uniform(-75, -68), rng.uniform(5, 150)
        got = {idx.locations[i].id for i in idx.within(lat, lon, r)
               if haversine_km(lat, lon, np.array([idx.lat[i]]), np.array([idx.lon[i]]))[0]
               <= r}
        want = {loc.id for loc in locs
                if haversine_km(lat, lon, np.array([loc.latitude]),
                                np.array([loc.longitude]))[0] <= r}
        assert got == want
    assert math.isclose(haversine_km(0, 0, np.array([0.0]), np.array([1.0]))[0], 111.195,
                        rel_tol=1e-4)


def _run(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="manet-agent")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_cli_recommend_json_and_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                      ) -> None:
    ev = tmp_path / "ev.json"
    ev.write_text(json.dumps({"data": [{
        "id": "x1", "brand": "Test", "model": "Car", "variant": "", "usable_battery_size": 50,
        "energy_consumption": {"average_consumption": 20.0},
        "ac_charger": {"usable_phases": 3, "ports": ["type2"], "max_power": 11},
        "dc_charger": {"ports": ["ccs"], "max_power": 100, "charging_curve": [
            {"percentage": 0, "power": 100}, {"percentage": 100, "power": 20}]}}]}))
    argv = ["charging", "recommend", "--vehicles", str(ev), "--vehicle", "test car",
            "--soc", "35", "--at", "51.05,3.72", "--prefer", "cheapest", "--facilities",
            str(HERE / "ocpi_bundle.json"), "--time", "2024-06-03T10:00"]
    assert _run([*argv, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["recommendations"][0]["location"] == "CHEAP"
    assert any("DISCOUNT" in s for s in doc["skipped"])
    assert _run([*argv, "--explain"]) == 0
    out = capsys.readouterr().out
    assert "Cheap DC" in out and "Old CHAdeMO" in out and "why:" in out
    assert _run([*argv[:-2], "--at", "nowhere"]) == 2


def test_session_record_follows_the_chosen_plan(index: FacilityIndex) -> None:
    import cbor2

    from agent.modules.charging.errors import ChargingError
    from agent.modules.charging.session import ChargingSession

    res = recommend(index, CAR, soc=35, latitude=GENT[0], longitude=GENT[1], when=WHEN)
    top = res.recommendations[0]
    session = ChargingSession.planned(res.plan_id(), CAR.id, top, started_at=1_717_400_000)
    done = session.finished(ended_at=1_717_402_000, metered_wh=30_500, cost_milli=7_320)
    rec = done.to_record()
    assert rec["status"] == "completed" and rec["planned_wh"] == top.metered_wh
    assert cbor2.loads(cbor2.dumps(rec, canonical=True)) == rec
    assert cbor2.loads(cbor2.dumps(res.to_record(), canonical=True))["plan_id"] == \
        res.plan_id()
    with pytest.raises(ChargingError):
        session.finished(ended_at=0, metered_wh=1, cost_milli=None)
