import json
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest

from agent.modules.charging.ocpi import Tariff, parse_tariff
from agent.modules.charging.tariff import price_session
from agent.modules.charging.vehicle import ChargeSegment

OCPI = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ocpi"
MONDAY_10 = datetime(2024, 6, 3, 10, 0)
SATURDAY_10 = datetime(2024, 6, 8, 10, 0)


def tariff(elements: list[dict], **extra: object) -> Tariff:
    return parse_tariff({"id": "t", "currency": "EUR", "elements": elements, **extra})


def test_energy_price_with_vat_and_min_price() -> None:
    t = tariff([{"price_components": [{"type": "ENERGY", "price": 0.25, "vat": 10,
                                       "step_size": 1}]}],
               min_price={"before_taxes": 5.00, "after_taxes": 5.50})
    cost = price_session(t, [ChargeSegment(0, 3600, 30_000)], MONDAY_10, volts=400)
    assert cost.excl_vat == Decimal("7.5") and cost.incl_vat == Decimal("8.25")
    assert cost.milli == 8250
    small = price_session(t, [ChargeSegment(0, 600, 2_000)], MONDAY_10, volts=400)
    assert small.excl_vat == Decimal("5.0")  # min_price applies before taxes


def test_max_power_restriction_picks_the_band() -> None:
    t = tariff([
        {"price_components": [{"type": "ENERGY", "price": 0.20, "step_size": 1}],
         "restrictions": {"max_power": 16.0}},
        {"price_components": [{"type": "ENERGY", "price": 0.35, "step_size": 1}],
         "restrictions": {"max_power": 32.0}},
        {"price_components": [{"type": "ENERGY", "price": 0.50, "step_size": 1}]}])
    for kw, price in ((11, "0.20"), (22, "0.35"), (50, "0.50")):
        cost = price_session(t, [ChargeSegment(0, 3600, kw * 1000)], MONDAY_10, volts=400)
        assert cost.excl_vat == Decimal(price) * kw


def test_time_of_day_and_day_of_week_restrictions() -> None:
    t = tariff([
        {"price_components": [{"type": "TIME", "price": 4.00, "step_size": 60}],
         "restrictions": {"start_time": "11:00", "end_time": "13:00",
                          "day_of_week": ["MONDAY"]}},
        {"price_components": [{"type": "TIME", "price": 1.00, "step_size": 60}]}])
    # 10:00-12:00 on a Monday: one hour at 1.00, one hour at 4.00.
    mon = price_session(t, [ChargeSegment(0, 7200, 22_000)], MONDAY_10, volts=230, phases=3)
    assert mon.excl_vat == Decimal("5.00")
    sat = price_session(t, [ChargeSegment(0, 7200, 22_000)], SATURDAY_10, volts=230, phases=3)
    assert sat.excl_vat == Decimal("2.00")


def test_step_size_rounds_the_total_up() -> None:
    t = tariff([{"price_components": [{"type": "TIME", "price": 6.00, "step_size": 900}]}])
    # 20 minutes are billed as 30 (two 15-minute steps): 3.00.
    cost = price_session(t, [ChargeSegment(0, 1200, 5_000)], MONDAY_10, volts=400)
    assert cost.excl_vat == Decimal("3.00")


def test_min_kwh_and_duration_restrictions_and_flat_fee() -> None:
    t = tariff([
        {"price_components": [{"type": "FLAT", "price": 1.00, "step_size": 1}]},
        {"price_components": [{"type": "ENERGY", "price": 0.10, "step_size": 1}],
         "restrictions": {"max_kwh": 10.0}},
        {"price_components": [{"type": "ENERGY", "price": 0.30, "step_size": 1}]}])
    # 20 kWh evenly over an hour: first 10 kWh at 0.10, next 10 at 0.30, plus 1.00 flat.
    cost = price_session(t, [ChargeSegment(0, 3600, 20_000)], MONDAY_10, volts=400)
    assert cost.excl_vat == Decimal("5.00")
    assert cost.by_type["FLAT"] == Decimal("1.00")


@pytest.mark.skipif(not OCPI.exists(), reason="../shared/data/ocpi is absent")
def test_ocpi_complex_example_prices_current_day_and_parking() -> None:
    t = parse_tariff(json.loads((OCPI / "tariff_4_complex.json").read_text()))
    # 22 kW on 230 V x 3 phases is about 96 A summed over phases (>= 32 A): the weekday
    # 2.00/h element; 2 h charging + 10 min parking at noon on a Monday (5.00/h).
    cost = price_session(t, [ChargeSegment(0, 7200, 22_000)], MONDAY_10, volts=230, phases=3,
                         parking_s=600)
    assert cost.by_type == {"FLAT": Decimal("2.5"), "TIME": Decimal("4"),
                            "PARKING_TIME": Decimal("0.833333")}
    # VAT per component: 2.50 x 1.15 + 4.00 x 1.20 + 0.8333.. x 1.10 = 8.591667
    assert cost.incl_vat == Decimal("8.591667")
    # Saturday: the weekend 1.25/h element applies instead.
    sat = price_session(t, [ChargeSegment(0, 7200, 22_000)], SATURDAY_10, volts=230,
                        phases=3)
    assert sat.by_type["TIME"] == Decimal("2.5")
    free = parse_tariff(json.loads((OCPI / "tariff_5_free_of_charge.json").read_text()))
    assert price_session(free, [ChargeSegment(0, 3600, 11_000)], MONDAY_10,
                         volts=230).milli == 0
