from decimal import Decimal
from pathlib import Path

import pytest

from agent.modules.charging.afdc import load_afdc, parse_pricing, read_afdc
from agent.modules.charging.errors import FacilityError
from agent.modules.charging.facilities import load_facilities
from agent.modules.charging.ocpi import load_ocpi

HERE = Path(__file__).resolve().parent / "data"
SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def test_afdc_fixture_bom_multiline_bad_rows_and_other_fuels() -> None:
    res = load_afdc(HERE / "afdc_fixture.csv")
    names = {loc.name for loc in res.locations}
    assert names == {"Solar Garage", "Fast Hub", "Private Lot", "Complex Price"}
    assert res.other_fuel_rows == 1
    reasons = {p.record.split("ID=")[1]: p.reason for p in res.problems}
    assert "bad coordinates" in reasons["'4'"]
    assert "no EV charging ports" in reasons["'5'"]
    assert "unknown connector types ['J9999']" in reasons["'6'"]
    garage = next(loc for loc in res.locations if loc.name == "Solar Garage")
    assert len(garage.evses) == 4 and garage.evses[0].connectors[0].plug == "type1"
    assert garage.energy_mix is not None and garage.energy_mix.assumed
    assert garage.energy_mix.share_of(frozenset({"SOLAR"})) == 0.5
    hub = next(loc for loc in res.locations if loc.name == "Fast Hub")
    assert {c.plug for e in hub.evses for c in e.connectors} == {"chademo", "ccs"}
    (tariff,) = hub.tariffs.values()
    assert {(c.type, c.price) for c in tariff.elements[0].components} == {
        ("FLAT", Decimal("1")), ("ENERGY", Decimal("0.40"))}
    private = next(loc for loc in res.locations if loc.name == "Private Lot")
    assert not private.public
    complex_price = next(loc for loc in res.locations if loc.name == "Complex Price")
    assert complex_price.tariffs == {} and res.unpriced == 1


def test_pricing_text_is_read_or_left_unknown() -> None:
    assert parse_pricing("Free", "x") is not None
    assert parse_pricing("$2/hr", "x") is not None
    assert parse_pricing("Free for the first 2 hours, then $1/hr", "x") is None
    assert parse_pricing("$0.25 per kWh, $5 max", "x") is None
    assert parse_pricing("", "x") is None


def test_not_an_afdc_file_is_a_clear_error() -> None:
    with pytest.raises(FacilityError, match="missing columns"):
        read_afdc(["a,b,c\n", "1,2,3\n"], "bogus.csv")
    with pytest.raises(FacilityError, match="cannot read"):
        load_afdc(HERE / "absent.csv")
    with pytest.raises(FacilityError, match=r"\.json \(OCPI\) or \.csv"):
        load_facilities([HERE / "emhass_two_aggregators.toml"])


def test_ocpi_bundle_with_bad_records_reported() -> None:
    locations, problems = load_ocpi([HERE / "ocpi_bundle.json"])
    ids = {loc.id for loc in locations}
    assert ids == {"GREEN", "CHEAP", "FAST", "BUSY", "CHADEMO", "FAR"}
    reasons = " | ".join(str(p) for p in problems)
    assert "unknown price component type 'DISCOUNT'" in reasons
    assert "coordinates out of range" in reasons
    green = next(loc for loc in locations if loc.id == "GREEN")
    assert green.tariff_for(green.evses[0].connectors[0]).id == "T-GREEN"  # type: ignore
    busy = next(loc for loc in locations if loc.id == "BUSY")
    assert busy.evses[0].connectors[0].max_power_w == 230 * 16 * 3


@pytest.mark.skipif(not (SHARED / "afdc").exists(), reason="../shared/data/afdc is absent")
def test_real_afdc_sample_loads() -> None:
    res = load_afdc(SHARED / "afdc" / "alt_fuel_stations_sample.csv")
    assert len(res.locations) == 42 and res.other_fuel_rows == 5 and res.problems == []


@pytest.mark.skipif(not (SHARED / "ocpi").exists(), reason="../shared/data/ocpi is absent")
def test_real_ocpi_location_example_loads() -> None:
    locations, _ = load_ocpi([SHARED / "ocpi" / "location_example.json"])
    (loc,) = locations
    assert loc.id == "LOC1" and len(loc.evses) == 2
    assert loc.evses[1].status == "RESERVED"
