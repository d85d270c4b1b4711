"""Reader for the US DOE AFDC alternative fuel station CSV export (what many users have).

The export is UTF-8 with a BOM, with quoted multi-line fields; it lists counts of Level 1,
Level 2 and DC fast ports and the connector types at a station, but no port power, so port
power comes from `AfdcDefaults` (documented in docs/modules.md). Pricing is free text: the
common plain forms ("FREE", "$0.52 per kWh", "$2/hr", "$1 session fee") become an OCPI
tariff; anything with conditions ("after 4 hours", "first hour") is kept as text and priced
as unknown rather than guessed. Rows for other fuels are skipped and counted.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from agent.modules.charging.errors import FacilityError
from agent.modules.charging.ocpi import (
    Connector,
    EnergyMix,
    Evse,
    Location,
    PriceComponent,
    Problem,
    Tariff,
    TariffElement,
)

REQUIRED_COLUMNS = ("Fuel Type Code", "Station Name", "Latitude", "Longitude", "ID",
                    "EV Level1 EVSE Num", "EV Level2 EVSE Num", "EV DC Fast Count",
                    "EV Connector Types")
AC_TYPES = {"J1772": "IEC_62196_T1", "NEMA515": "DOMESTIC_B", "NEMA520": "DOMESTIC_B",
            "NEMA1450": "NEMA_14_50", "TESLA": "TESLA_R"}
DC_TYPES = {"J1772COMBO": "IEC_62196_T1_COMBO", "CHADEMO": "CHADEMO", "TESLA": "TESLA_S",
            "NACS": "SAE_J3400", "J3400": "SAE_J3400"}
KNOWN_TYPES = set(AC_TYPES) | set(DC_TYPES)
STATUS = {"E": "UNKNOWN", "T": "INOPERATIVE", "P": "PLANNED"}  # E = open; no live status
RENEWABLE = {"SOLAR": "SOLAR", "WIND": "WIND", "HYDRO": "WATER", "GENERAL": "GENERAL_GREEN"}
_CONDITIONAL = re.compile(r"\b(after|first|max|min|idle|parking|over|up to|plus|then|"
                          r"member|non-member|varies|depend)", re.I)
_MONEY = re.compile(r"\$\s*(\d+(?:\.\d+)?)")
_UNIT_PATTERNS = (
    ("ENERGY", re.compile(r"\$\s*(\d+(?:\.\d+)?)\s*(?:per|/)\s*kwh", re.I)),
    ("TIME", re.compile(r"\$\s*(\d+(?:\.\d+)?)\s*(?:per|/)\s*(?:hr|hour)s?\b", re.I)),
    ("FLAT", re.compile(r"\$\s*(\d+(?:\.\d+)?)\s*(?:per\s+|/\s*)?(?:session|charge|connection"
                        r"|flat|fee)", re.I)),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class AfdcDefaults:
    """Assumptions for what the export does not say (port power in W, on-site renewables)."""

    level1_w: int = 1_920  # 120 V x 16 A
    level2_w: int = 7_200  # 240 V x 30 A
    dc_w: int = 50_000
    tesla_dc_w: int = 150_000
    onsite_renewable_share: float = 0.5  # share of energy assumed from an on-site source


def parse_pricing(text: str, station_id: str) -> Tariff | None:
    """A tariff from AFDC's free-text pricing, or None when it cannot be read without guessing."""
    t = " ".join(text.split())
    if not t:
        return None
    if "$" not in t and re.fullmatch(r"(?i)free( of charge)?\.?", t):
        return Tariff(f"afdc-{station_id}", "USD",
                      (TariffElement((PriceComponent("FLAT", Decimal(0), None, 0),)),),
                      free_text=t)
    if _CONDITIONAL.search(t):
        return None
    comps: list[PriceComponent] = []
    matched = 0
    for ptype, pattern in _UNIT_PATTERNS:
        for m in pattern.finditer(t):
            matched += 1
            step = 1 if ptype != "TIME" else 60
            comps.append(PriceComponent(ptype, Decimal(m.group(1)), None, step))
    if not comps or matched != len(_MONEY.findall(t)):
        return None
    return Tariff(f"afdc-{station_id}", "USD", (TariffElement(tuple(comps)),), free_text=t)


def _count(row: Mapping[str, str], col: str) -> int:
    raw = (row.get(col) or "").strip()
    if not raw:
        return 0
    if not raw.isdigit():
        raise ValueError(f"{col} is not a count: {raw!r}")
    return int(raw)


def _connectors(types: list[str], table: Mapping[str, str], fallback: str, power_w: int,
                ptype: str, volts: int) -> tuple[Connector, ...]:
    chosen = [table[t] for t in types if t in table] or [fallback]
    amps = power_w // volts if volts else 0
    return tuple(Connector(str(i + 1), std, ptype, volts, amps, power_w)
                 for i, std in enumerate(dict.fromkeys(chosen)))


def station_from_row(row: Mapping[str, str], defaults: AfdcDefaults) -> Location:
    """One ELEC row as a Location; raises ValueError with the reason it cannot be used."""
    sid = (row.get("ID") or "").strip()
    if not sid:
        raise ValueError("no station ID")
    try:
        lat, lon = float(row["Latitude"]), float(row["Longitude"])
    except ValueError as exc:
        raise ValueError(f"bad coordinates {row['Latitude']!r}, {row['Longitude']!r}") from exc
    if not (math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90
            and -180 <= lon <= 180):
        raise ValueError(f"coordinates out of range: {lat}, {lon}")
    types = (row.get("EV Connector Types") or "").split()
    unknown = [t for t in types if t not in KNOWN_TYPES]
    if unknown:
        raise ValueError(f"unknown connector types {unknown}")
    n1, n2, nd = (_count(row, c) for c in ("EV Level1 EVSE Num", "EV Level2 EVSE Num",
                                           "EV DC Fast Count"))
    if n1 + n2 + nd == 0:
        raise ValueError("no EV charging ports (Level 1, Level 2 and DC fast counts are empty)")
    status = STATUS.get((row.get("Status Code") or "E").strip(), "UNKNOWN")
    network = (row.get("EV Network") or "").strip()
    dc_w = defaults.tesla_dc_w if network.lower() == "tesla" else defaults.dc_w
    evses: list[Evse] = []
    for level, count, table, fallback, power, ptype, volts in (
            ("L1", n1, AC_TYPES, "IEC_62196_T1", defaults.level1_w, "AC_1_PHASE", 120),
            ("L2", n2, AC_TYPES, "IEC_62196_T1", defaults.level2_w, "AC_1_PHASE", 240),
            ("DC", nd, DC_TYPES, "IEC_62196_T1_COMBO", dc_w, "DC", 400)):
        if level != "DC" and types and all(t not in AC_TYPES for t in types):
            fallback = "IEC_62196_T1"
        conns = _connectors(types, table, fallback, power, ptype, volts)
        evses.extend(Evse(f"{sid}-{level}-{i + 1}", status, conns) for i in range(count))
    mix = None
    source = (row.get("EV On-Site Renewable Source") or "").strip().upper()
    if source and source not in {"NONE", "NO"}:
        src = RENEWABLE.get(source, "GENERAL_GREEN")
        mix = EnergyMix(False, {src: defaults.onsite_renewable_share * 100.0}, None,
                        f"on-site {source.lower()}", assumed=True)
    tariff = parse_pricing(row.get("EV Pricing") or "", sid)
    access = (row.get("Access Code") or row.get("Groups With Access Code") or "public")
    return Location(id=f"afdc-{sid}", name=(row.get("Station Name") or sid).strip(),
                    latitude=lat, longitude=lon, evses=tuple(evses), energy_mix=mix,
                    tariffs={tariff.id: tariff} if tariff else {},
                    public=not access.strip().lower().startswith("private"),
                    open_now=status != "PLANNED", source="afdc")


@dataclass(frozen=True, slots=True)
class AfdcResult:
    locations: list[Location]
    problems: list[Problem]
    other_fuel_rows: int
    unpriced: int  # stations whose pricing text could not be read as a tariff


def read_afdc(lines: Iterable[str], source: str,
              defaults: AfdcDefaults = AfdcDefaults()) -> AfdcResult:
    reader = csv.DictReader(lines)
    header = reader.fieldnames or []
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise FacilityError(f"{source}: not an AFDC station export, missing columns {missing}")
    locations: list[Location] = []
    problems: list[Problem] = []
    other = unpriced = 0
    for row in reader:
        fuel = (row.get("Fuel Type Code") or "").strip()
        if fuel != "ELEC":
            other += 1
            continue
        label = f"line {reader.line_num} ID={row.get('ID')!r}"
        if None in row or any(v is None for v in row.values()):
            problems.append(Problem(source, label, "wrong number of fields"))
            continue
        try:
            loc = station_from_row(row, defaults)
        except ValueError as exc:
            problems.append(Problem(source, label, str(exc)))
            continue
        if (row.get("EV Pricing") or "").strip() and not loc.tariffs:
            unpriced += 1
        locations.append(loc)
    return AfdcResult(locations, problems, other, unpriced)


def load_afdc(path: str | Path, defaults: AfdcDefaults = AfdcDefaults()) -> AfdcResult:
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            return read_afdc(fh, str(path), defaults)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise FacilityError(f"cannot read AFDC file {path}: {exc}") from exc
