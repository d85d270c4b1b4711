"""Time-shifted charging at one facility: pick the cheapest (or greenest) forecast slots that
bring the battery to its target before departure, as evcc's planner does.

Slots are ranked by their forecast value (price per kWh, or g CO2 per kWh); the best are
filled at the charging power until the energy is met; among equal values the later slot wins,
so the car sits at a low state of charge no longer than it must. When the slots before
departure cannot hold the energy, the plan says so and by how much.
"""

from __future__ import annotations

import csv
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from agent.modules.charging.errors import ScheduleError


@dataclass(frozen=True, slots=True)
class ForecastSlot:
    start: datetime
    end: datetime
    value: Decimal  # currency per kWh, or g CO2 per kWh


@dataclass(frozen=True, slots=True)
class PlannedSlot:
    start: datetime
    end: datetime
    energy_wh: int  # metered
    value: Decimal


@dataclass(frozen=True, slots=True)
class ChargingSchedule:
    """The plan; `total_milli` is money in milli-units or CO2 in milligrams (value x kWh)."""

    mode: str  # "cost" or "co2"
    slots: tuple[PlannedSlot, ...]
    needed_wh: int
    planned_wh: int
    total_milli: int
    feasible: bool
    reason: str

    @property
    def shortfall_wh(self) -> int:
        return max(self.needed_wh - self.planned_wh, 0)

    def to_record(self) -> dict[str, Any]:
        return {"type": "charging.schedule", "mode": self.mode, "needed_wh": self.needed_wh,
                "planned_wh": self.planned_wh, "total_milli": self.total_milli,
                "feasible": self.feasible, "reason": self.reason,
                "slots": [{"start": s.start.isoformat(), "end": s.end.isoformat(),
                           "energy_wh": s.energy_wh, "value": str(s.value)}
                          for s in self.slots]}


def read_forecast(path: str | Path, *, slot: timedelta | None = None) -> list[ForecastSlot]:
    """`timestamp,value` rows (no header, as emhass writes them); a slot ends where the next
    begins, the last lasts as long as the one before it (or `slot`)."""
    rows: list[tuple[datetime, Decimal]] = []
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            for n, row in enumerate(csv.reader(fh), start=1):
                if not row or not "".join(row).strip():
                    continue
                if len(row) != 2:
                    raise ScheduleError(f"{path}:{n}: expected 'timestamp,value', got {row}")
                try:
                    rows.append((datetime.fromisoformat(row[0].strip()),
                                 Decimal(row[1].strip())))
                except (ValueError, InvalidOperation) as exc:
                    raise ScheduleError(f"{path}:{n}: bad timestamp or value: {row}") from exc
    except OSError as exc:
        raise ScheduleError(f"cannot read forecast {path}: {exc.strerror}") from exc
    if not rows:
        raise ScheduleError(f"{path}: no forecast rows")
    out = []
    for i, (start, value) in enumerate(rows):
        if i + 1 < len(rows):
            end = rows[i + 1][0]
        elif slot is not None:
            end = start + slot
        elif i > 0:
            end = start + (start - rows[i - 1][0])
        else:
            raise ScheduleError(f"{path}: one row and no slot length")
        out.append(ForecastSlot(start, end, value))
    return out


def plan_charging(forecast: Sequence[ForecastSlot], *, now: datetime, departure: datetime,
                  needed_wh: int, power_w: int, mode: str = "cost") -> ChargingSchedule:
    """Cheapest (mode "cost") or greenest (mode "co2") slots between now and departure."""
    if mode not in {"cost", "co2"}:
        raise ScheduleError(f"mode must be 'cost' or 'co2', got {mode!r}")
    if departure <= now:
        raise ScheduleError(f"departure {departure} is not after now {now}")
    if needed_wh < 0 or power_w <= 0:
        raise ScheduleError("needed energy must be >= 0 and power > 0")
    for a, b in itertools.pairwise(forecast):
        if b.start < a.end or a.end <= a.start:
            raise ScheduleError(f"forecast slots overlap or are out of order at {a.start}")
    usable = []
    for s in forecast:
        start, end = max(s.start, now), min(s.end, departure)
        if end > start:
            usable.append(ForecastSlot(start, end, s.value))
    usable.sort(key=lambda s: (s.value, -s.start.timestamp()))
    left = needed_wh
    chosen: list[PlannedSlot] = []
    for s in usable:
        if left <= 0:
            break
        seconds = (s.end - s.start).total_seconds()
        cap = math.floor(power_w * seconds / 3600)
        take = min(cap, left)
        if take <= 0:
            continue
        # Charge at the end of a partly used slot (closest to departure).
        dur = timedelta(seconds=math.ceil(take * 3600 / power_w))
        chosen.append(PlannedSlot(max(s.end - dur, s.start), s.end, take, s.value))
        left -= take
    chosen.sort(key=lambda p: p.start)
    planned = needed_wh - max(left, 0)
    total = sum((p.value * p.energy_wh for p in chosen), Decimal(0))  # value/kWh x Wh = milli
    feasible = left <= 0
    if feasible:
        reason = f"{len(chosen)} slot(s) reach the target before {departure.isoformat()}"
    elif not usable:
        reason = "no forecast slot lies between now and departure"
    else:
        reason = (f"target cannot be met: at most {planned} Wh of {needed_wh} Wh fit before "
                  f"departure, {needed_wh - planned} Wh short")
    return ChargingSchedule(mode, tuple(chosen), needed_wh, planned,
                            int(total.to_integral_value()), feasible, reason)
