from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from agent.modules.charging.errors import ScheduleError
from agent.modules.charging.schedule import ForecastSlot, plan_charging, read_forecast

T0 = datetime(2025, 1, 1, tzinfo=UTC)
EMHASS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "emhass"


def hourly(prices: list[str]) -> list[ForecastSlot]:
    return [ForecastSlot(T0 + timedelta(hours=i), T0 + timedelta(hours=i + 1), Decimal(p))
            for i, p in enumerate(prices)]


def test_cheapest_slots_fill_the_need() -> None:
    fc = hourly(["0.30", "0.10", "0.20", "0.10", "0.40"])
    plan = plan_charging(fc, now=T0, departure=T0 + timedelta(hours=5), needed_wh=25_000,
                         power_w=10_000)
    assert plan.feasible and plan.planned_wh == 25_000
    # Both 0.10 hours in full, then half of the 0.20 hour (charging at its end).
    assert [(s.start.hour, s.energy_wh) for s in plan.slots] == [(1, 10_000), (2, 5_000),
                                                                 (3, 10_000)]
    assert plan.slots[1].start == T0 + timedelta(hours=2, minutes=30)
    assert plan.total_milli == 10_000 * Decimal("0.10") * 2 + 5_000 * Decimal("0.20")


def test_target_that_cannot_be_met_is_reported() -> None:
    fc = hourly(["0.30", "0.10", "0.20"])
    plan = plan_charging(fc, now=T0 + timedelta(minutes=30), departure=T0 + timedelta(hours=2),
                         needed_wh=30_000, power_w=10_000)
    assert not plan.feasible and plan.planned_wh == 15_000 and plan.shortfall_wh == 15_000
    assert "cannot be met" in plan.reason


def test_bad_requests_are_refused(tmp_path: Path) -> None:
    fc = hourly(["0.1"])
    with pytest.raises(ScheduleError, match="not after"):
        plan_charging(fc, now=T0, departure=T0, needed_wh=1, power_w=1)
    with pytest.raises(ScheduleError, match="mode"):
        plan_charging(fc, now=T0, departure=T0 + timedelta(hours=1), needed_wh=1, power_w=1,
                      mode="fastest")
    bad = tmp_path / "bad.csv"
    bad.write_text("2025-01-01T00:00:00+00:00,abc\n")
    with pytest.raises(ScheduleError, match="bad timestamp or value"):
        read_forecast(bad)


@pytest.mark.skipif(not EMHASS.exists(), reason="../shared/data/emhass is absent")
def test_real_price_forecast_prefers_the_night_tariff() -> None:
    fc = read_forecast(EMHASS / "data_load_cost_forecast.csv")
    now = fc[0].start
    plan = plan_charging(fc, now=now, departure=now + timedelta(hours=12), needed_wh=20_000,
                         power_w=7_400)
    assert plan.feasible
    assert {s.value for s in plan.slots} == {min(s.value for s in fc[:24])}
