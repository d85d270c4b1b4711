"""Load facilities from any mix of OCPI JSON and AFDC CSV files, reporting skipped records."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.modules.charging.afdc import AfdcDefaults, load_afdc
from agent.modules.charging.errors import FacilityError
from agent.modules.charging.ocpi import Location, Problem, load_ocpi


@dataclass(frozen=True, slots=True)
class Loaded:
    locations: list[Location]
    problems: list[Problem]
    other_fuel_rows: int = 0
    unpriced: int = 0


def load_facilities(paths: Sequence[str | Path],
                    afdc_defaults: AfdcDefaults | None = None) -> Loaded:
    """`.csv` files are AFDC exports; `.json` files are OCPI (locations and tariffs together,
    so a tariff in one file can price a location in another)."""
    if not paths:
        raise FacilityError("no facility file given")
    locations: list[Location] = []
    problems: list[Problem] = []
    other = unpriced = 0
    ocpi_files = []
    for p in paths:
        suffix = Path(p).suffix.lower()
        if suffix == ".csv":
            res = load_afdc(p, afdc_defaults or AfdcDefaults())
            locations += res.locations
            problems += res.problems
            other += res.other_fuel_rows
            unpriced += res.unpriced
        elif suffix == ".json":
            ocpi_files.append(p)
        else:
            raise FacilityError(f"{p}: facility files are .json (OCPI) or .csv (AFDC)")
    if ocpi_files:
        locs, probs = load_ocpi(ocpi_files)
        locations += locs
        problems += probs
    return Loaded(locations, problems, other, unpriced)
