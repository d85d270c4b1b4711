"""Plans and sessions are recorded in the ledger as typed, signed transactions."""

from datetime import datetime
from pathlib import Path

import pytest

from agent.modules.charging.index import FacilityIndex
from agent.modules.charging.ocpi import load_ocpi
from agent.modules.charging.recommend import recommend
from agent.modules.charging.session import ChargingSession
from agent.modules.charging.vehicle import CurvePoint, Vehicle
from agent.modules.interchange.heuristic import solve_heuristic
from agent.modules.interchange.scenario import load_scenario
from agent.modules.records import record
from ledger import Ledger
from ledger.errors import TxError
from mesh.identity import Identity

HERE = Path(__file__).resolve().parent / "data"
CAR = Vehicle("t", "Test Car", 50_000, 200, 11_000, 3, 100_000,
              (CurvePoint(0, 100_000), CurvePoint(50, 100_000), CurvePoint(100, 20_000)),
              frozenset({"type2", "ccs"}))
NOW = 1_780_000_000.0


def test_plans_and_sessions_are_recorded_and_verify(tmp_path: Path) -> None:
    locations, _ = load_ocpi([HERE / "ocpi_bundle.json"])
    result = recommend(FacilityIndex(locations), CAR, soc=35, latitude=51.05, longitude=3.72,
                       when=datetime(2024, 6, 3, 10, 0))
    assert result.recommendations
    session = ChargingSession.planned(result.plan_id(), CAR.id, result.recommendations[0],
                                      int(NOW))
    done = session.finished(ended_at=int(NOW) + 1800, metered_wh=20_000, cost_milli=7_500)
    plan = solve_heuristic(load_scenario(HERE / "emhass_two_aggregators.toml"))
    ident = Identity.from_seed(b"r" * 32)
    with Ledger.open(tmp_path / "l.sqlite", ident) as led:
        for rec in (result.to_record(), session.to_record(), done.to_record(), plan.to_record()):
            record(led, rec, NOW)
    with Ledger.open(tmp_path / "l.sqlite", ident) as led:
        assert led.verify().ok
        kinds = [r.tx.type for r in led.query()]
        assert kinds == ["charging.plan", "charging.session", "charging.session",
                         "interchange.plan"]
        stored = [r.tx.body for r in led.query(type="charging.session")]
        assert [b["status"] for b in stored] == ["planned", "completed"]
        assert stored[1]["metered_wh"] == 20_000


def test_a_malformed_record_is_refused(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "l.sqlite", Identity.from_seed(b"s" * 32)) as led:
        with pytest.raises(TxError):
            record(led, {"type": "charging.session", "plan_id": "x", "status": 3}, NOW)
        with pytest.raises(TxError):
            record(led, {"type": "charging.wish", "plan_id": "x"}, NOW)
        assert led.height() == -1  # nothing was written
