"""The OCPI 2.2.1/2.3.0 facility model (Location, EVSE, Connector, Tariff, EnergyMix) and its
JSON reader.

Only the fields a charging decision needs are kept. Prices stay `Decimal` (OCPI sends JSON
numbers such as 0.25 that floats cannot hold exactly). A record that breaks the spec is
reported as a `Problem` and skipped; the rest of the file still loads.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from agent.modules.charging.errors import FacilityError

RENEWABLE_SOURCES = frozenset({"GENERAL_GREEN", "SOLAR", "WIND", "WATER"})
ENERGY_SOURCES = RENEWABLE_SOURCES | {"NUCLEAR", "GENERAL_FOSSIL", "COAL", "GAS"}
EVSE_STATUSES = frozenset({"AVAILABLE", "BLOCKED", "CHARGING", "INOPERATIVE", "OUTOFORDER",
                           "PLANNED", "REMOVED", "RESERVED", "UNKNOWN"})
USABLE_STATUSES = frozenset({"AVAILABLE", "UNKNOWN"})
PRICE_TYPES = frozenset({"ENERGY", "FLAT", "PARKING_TIME", "TIME"})
DAYS = ("MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY", "SUNDAY")

# OCPI ConnectorType -> the plug names vehicles use (see vehicle.py).
STANDARD_TO_PLUG: Mapping[str, str] = {
    "IEC_62196_T1": "type1",
    "IEC_62196_T2": "type2",
    "IEC_62196_T1_COMBO": "ccs",
    "IEC_62196_T2_COMBO": "ccs",
    "CHADEMO": "chademo",
    "TESLA_S": "tesla",
    "TESLA_R": "tesla",
    "SAE_J3400": "tesla",
    "NEMA_5_20": "type1",  # a Level 1 cord set plugs into it; J1772 on the car side
}


@dataclass(frozen=True, slots=True)
class Problem:
    """A record that was skipped, and why (shown to the user, never silently dropped)."""

    source: str
    record: str
    reason: str

    def __str__(self) -> str:
        return f"{self.source}: {self.record}: {self.reason}"


@dataclass(frozen=True, slots=True)
class Connector:
    id: str
    standard: str
    power_type: str  # AC_1_PHASE, AC_2_PHASE, AC_3_PHASE, DC
    max_voltage: int
    max_amperage: int
    max_power_w: int
    tariff_ids: tuple[str, ...] = ()

    @property
    def plug(self) -> str | None:
        return STANDARD_TO_PLUG.get(self.standard)

    @property
    def is_dc(self) -> bool:
        return self.power_type == "DC"

    @property
    def phases(self) -> int:
        return {"AC_1_PHASE": 1, "AC_2_PHASE": 2, "AC_3_PHASE": 3}.get(self.power_type, 1)


@dataclass(frozen=True, slots=True)
class Evse:
    uid: str
    status: str
    connectors: tuple[Connector, ...]


@dataclass(frozen=True, slots=True)
class EnergyMix:
    """OCPI EnergyMix; `sources` maps a source to its percentage (0..100)."""

    is_green_energy: bool
    sources: Mapping[str, float] = field(default_factory=dict)
    co2_g_per_kwh: float | None = None
    supplier: str = ""
    assumed: bool = False  # True when derived from a non-OCPI hint (AFDC on-site renewables)

    def share_of(self, wanted: frozenset[str]) -> float | None:
        """Fraction 0..1 of energy from `wanted` sources, or None when the mix says nothing."""
        if self.sources:
            return sum(p for s, p in self.sources.items() if s in wanted) / 100.0
        if self.is_green_energy and "GENERAL_GREEN" in wanted:
            return 1.0
        return None


@dataclass(frozen=True, slots=True)
class Restrictions:
    start_time: str | None = None  # "HH:MM" local
    end_time: str | None = None
    start_date: str | None = None  # "YYYY-MM-DD"
    end_date: str | None = None
    min_kwh: Decimal | None = None
    max_kwh: Decimal | None = None
    min_current: Decimal | None = None
    max_current: Decimal | None = None
    min_power: Decimal | None = None  # kW
    max_power: Decimal | None = None
    min_duration: int | None = None  # seconds
    max_duration: int | None = None
    day_of_week: tuple[str, ...] = ()
    reservation: str | None = None


@dataclass(frozen=True, slots=True)
class PriceComponent:
    type: str
    price: Decimal  # per kWh, per hour, or per session (FLAT), excluding VAT
    vat: Decimal | None
    step_size: int  # Wh for ENERGY, seconds for TIME/PARKING_TIME


@dataclass(frozen=True, slots=True)
class TariffElement:
    components: tuple[PriceComponent, ...]
    restrictions: Restrictions | None = None


@dataclass(frozen=True, slots=True)
class Tariff:
    id: str
    currency: str
    elements: tuple[TariffElement, ...]
    min_price: Decimal | None = None  # excluding VAT
    max_price: Decimal | None = None
    free_text: str = ""  # the original wording when parsed from free text (AFDC)


@dataclass(frozen=True, slots=True)
class Location:
    """A charging facility: where it is, what it offers, what it costs and how green it is."""

    id: str
    name: str
    latitude: float
    longitude: float
    evses: tuple[Evse, ...]
    energy_mix: EnergyMix | None = None
    tariffs: Mapping[str, Tariff] = field(default_factory=dict)  # resolved by tariff id
    public: bool = True
    open_now: bool = True
    source: str = "ocpi"

    def tariff_for(self, connector: Connector) -> Tariff | None:
        """The connector's first known tariff, else the location's first one, else None."""
        for tid in connector.tariff_ids:
            if tid in self.tariffs:
                return self.tariffs[tid]
        return next(iter(self.tariffs.values()), None)


def _dec(value: Any, what: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{what} is not a number: {value!r}")
    try:
        d = Decimal(str(value))
    except InvalidOperation as exc:
        raise ValueError(f"{what} is not a number: {value!r}") from exc
    if not d.is_finite():
        raise ValueError(f"{what} is not finite")
    return d


def _opt_dec(obj: Mapping[str, Any], key: str) -> Decimal | None:
    return None if obj.get(key) is None else _dec(obj[key], key)


def _price(value: Any, what: str) -> Decimal | None:
    """OCPI 2.2 prices are {before_taxes, after_taxes}; 2.1 used a bare number."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        return _dec(value["before_taxes"], what + ".before_taxes")
    return _dec(value, what)


def _hhmm(value: Any, what: str) -> str:
    text = str(value)
    parts = text.split(":")
    if len(parts) != 2 or not all(p.isdigit() for p in parts) or int(parts[0]) > 23 \
            or int(parts[1]) > 59:
        raise ValueError(f"{what} is not HH:MM: {value!r}")
    return f"{int(parts[0]):02d}:{int(parts[1]):02d}"


def parse_restrictions(obj: Mapping[str, Any]) -> Restrictions:
    days = tuple(str(d) for d in obj.get("day_of_week") or ())
    bad = [d for d in days if d not in DAYS]
    if bad:
        raise ValueError(f"unknown day_of_week {bad}")
    return Restrictions(
        start_time=None if obj.get("start_time") is None else _hhmm(obj["start_time"],
                                                                    "start_time"),
        end_time=None if obj.get("end_time") is None else _hhmm(obj["end_time"], "end_time"),
        start_date=obj.get("start_date"), end_date=obj.get("end_date"),
        min_kwh=_opt_dec(obj, "min_kwh"), max_kwh=_opt_dec(obj, "max_kwh"),
        min_current=_opt_dec(obj, "min_current"), max_current=_opt_dec(obj, "max_current"),
        min_power=_opt_dec(obj, "min_power"), max_power=_opt_dec(obj, "max_power"),
        min_duration=None if obj.get("min_duration") is None else int(obj["min_duration"]),
        max_duration=None if obj.get("max_duration") is None else int(obj["max_duration"]),
        day_of_week=days, reservation=obj.get("reservation"))


def parse_tariff(obj: Mapping[str, Any]) -> Tariff:
    """One OCPI Tariff object; raises ValueError/KeyError/TypeError with the cause."""
    elements = []
    for el in obj["elements"]:
        comps = []
        for pc in el["price_components"]:
            ptype = str(pc["type"])
            if ptype not in PRICE_TYPES:
                raise ValueError(f"unknown price component type {ptype!r}")
            price = _dec(pc["price"], "price")
            step = int(pc.get("step_size", 1))
            if price < 0 or step < 0:
                raise ValueError("price and step_size must not be negative")
            comps.append(PriceComponent(ptype, price, _opt_dec(pc, "vat"), step))
        restr = el.get("restrictions")
        elements.append(TariffElement(tuple(comps),
                                      None if restr is None else parse_restrictions(restr)))
    if not elements:
        raise ValueError("a tariff needs at least one element")
    return Tariff(id=str(obj["id"]), currency=str(obj.get("currency", "")),
                  elements=tuple(elements), min_price=_price(obj.get("min_price"), "min_price"),
                  max_price=_price(obj.get("max_price"), "max_price"))


def parse_energy_mix(obj: Mapping[str, Any]) -> EnergyMix:
    sources: dict[str, float] = {}
    for item in obj.get("energy_sources") or ():
        src = str(item["source"])
        if src not in ENERGY_SOURCES:
            raise ValueError(f"unknown energy source {src!r}")
        pct = float(item["percentage"])
        if not 0 <= pct <= 100:
            raise ValueError(f"energy source percentage {pct} outside 0..100")
        sources[src] = sources.get(src, 0.0) + pct
    if sources and abs(sum(sources.values()) - 100.0) > 1.0:
        raise ValueError(f"energy source percentages add up to {sum(sources.values()):.1f}")
    co2 = None
    for imp in obj.get("environ_impact") or ():
        if imp.get("category") == "CARBON_DIOXIDE":
            co2 = float(imp["amount"])
    return EnergyMix(bool(obj.get("is_green_energy", False)), sources, co2,
                     str(obj.get("supplier_name") or ""))


def _connector_power_w(c: Mapping[str, Any]) -> int:
    if c.get("max_electric_power") is not None:
        return int(c["max_electric_power"])
    volts, amps = int(c["max_voltage"]), int(c["max_amperage"])
    phases = {"AC_3_PHASE": 3, "AC_2_PHASE": 2}.get(str(c["power_type"]), 1)
    return volts * amps * phases  # OCPI: AC voltage is line to neutral


def parse_location(obj: Mapping[str, Any], tariffs: Mapping[str, Tariff]) -> Location:
    """One OCPI Location; its connectors' first resolvable tariff becomes the location tariff."""
    coords = obj["coordinates"]
    lat, lon = float(coords["latitude"]), float(coords["longitude"])
    if not (math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90
            and -180 <= lon <= 180):
        raise ValueError(f"coordinates out of range: {lat}, {lon}")
    evses = []
    used: dict[str, Tariff] = {}
    for e in obj.get("evses") or ():
        status = str(e.get("status", "UNKNOWN"))
        if status not in EVSE_STATUSES:
            raise ValueError(f"unknown EVSE status {status!r}")
        conns = []
        for c in e.get("connectors") or ():
            ptype = str(c["power_type"])
            if ptype not in {"AC_1_PHASE", "AC_2_PHASE", "AC_3_PHASE", "DC"}:
                raise ValueError(f"unknown power_type {ptype!r}")
            power = _connector_power_w(c)
            if power <= 0:
                raise ValueError(f"connector {c.get('id')!r} has no power")
            tids = tuple(str(t) for t in c.get("tariff_ids") or ())
            conns.append(Connector(str(c["id"]), str(c["standard"]), ptype,
                                   int(c.get("max_voltage") or 0),
                                   int(c.get("max_amperage") or 0), power, tids))
            used.update((t, tariffs[t]) for t in tids if t in tariffs)
        evses.append(Evse(str(e.get("uid", "")), status, tuple(conns)))
    if not evses:
        raise ValueError("location has no EVSE")
    mix = None if obj.get("energy_mix") is None else parse_energy_mix(obj["energy_mix"])
    return Location(id=str(obj["id"]), name=str(obj.get("name") or obj["id"]),
                    latitude=lat, longitude=lon, evses=tuple(evses), energy_mix=mix,
                    tariffs=used, public=bool(obj.get("publish", True)), source="ocpi")


def _objects(doc: Any) -> Sequence[Any]:
    if isinstance(doc, Mapping) and "data" in doc:  # an OCPI response envelope
        doc = doc["data"]
    return doc if isinstance(doc, list) else [doc]


def load_ocpi(paths: Sequence[str | Path],
              extra_tariffs: Sequence[Tariff] = ()) -> tuple[list[Location], list[Problem]]:
    """Locations and tariffs from OCPI JSON files (objects, lists, response envelopes, or a
    bundle {"locations": [...], "tariffs": [...]}); tariffs are matched by id."""
    raw_locs: list[tuple[str, Any]] = []
    tariffs: dict[str, Tariff] = {t.id: t for t in extra_tariffs}
    problems: list[Problem] = []
    for path in paths:
        try:
            doc = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise FacilityError(f"cannot read OCPI file {path}: {exc}") from exc
        if isinstance(doc, Mapping) and ("locations" in doc or "tariffs" in doc):
            items = list(doc.get("tariffs") or []) + list(doc.get("locations") or [])
        else:
            items = list(_objects(doc))
        for i, obj in enumerate(items):
            label = f"record {i} id={obj.get('id')!r}" if isinstance(obj, Mapping) \
                else f"record {i}"
            if not isinstance(obj, Mapping):
                problems.append(Problem(str(path), label, "not a JSON object"))
            elif "elements" in obj:
                try:
                    t = parse_tariff(obj)
                    tariffs[t.id] = t
                except (KeyError, TypeError, ValueError) as exc:
                    problems.append(Problem(str(path), label, f"bad tariff: {exc!r}"))
            elif "coordinates" in obj or "evses" in obj:
                raw_locs.append((str(path), obj))
            else:
                problems.append(Problem(str(path), label, "neither a Location nor a Tariff"))
    locations = []
    for path_s, obj in raw_locs:
        try:
            locations.append(parse_location(obj, tariffs))
        except (KeyError, TypeError, ValueError) as exc:
            problems.append(Problem(path_s, f"location id={obj.get('id')!r}",
                                    f"bad location: {exc!r}"))
    return locations, problems
