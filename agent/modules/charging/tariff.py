"""Pricing a charging session with an OCPI tariff, restrictions included.

OCPI rules followed: for each dimension (ENERGY, TIME, PARKING_TIME) at each moment, the first
tariff element whose restrictions all hold and that has a component of that dimension sets the
price; FLAT is taken from the first element active at the start; the billed total of a
dimension is rounded up to the step_size of the last component that was active for it;
min_price and max_price bound the total before taxes. The session is walked in steps of at
most `step_s` seconds (60 by default), so a restriction boundary is met within a minute.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal

from agent.modules.charging.errors import TariffError
from agent.modules.charging.ocpi import DAYS, PRICE_TYPES, PriceComponent, Restrictions, Tariff
from agent.modules.charging.vehicle import ChargeSegment


@dataclass(frozen=True, slots=True)
class SessionCost:
    currency: str
    excl_vat: Decimal
    incl_vat: Decimal
    by_type: dict[str, Decimal]  # excluding VAT

    @property
    def milli(self) -> int:
        """Total including VAT in milli-units of the currency (the ledger's integer form)."""
        return int((self.incl_vat * 1000).quantize(Decimal(1), rounding=ROUND_HALF_UP))


@dataclass(frozen=True, slots=True)
class _State:
    when: datetime
    elapsed_s: float
    energy_wh: float
    power_w: float
    current_a: float


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


def restrictions_hold(r: Restrictions | None, s: _State, *, reserved: bool = False) -> bool:
    """True when every restriction of an element holds in state s (OCPI semantics)."""
    if r is None:
        return True
    rule = _Rule.of(r)
    minute = s.when.hour * 60 + s.when.minute + s.when.second / 60.0
    return rule.holds(s.when.weekday(), minute, s.when.date().toordinal(),
                      s.energy_wh / 1000.0, s.power_w / 1000.0, s.current_a, s.elapsed_s,
                      reserved)


def _with_vat(amount: Decimal, comp: PriceComponent) -> Decimal:
    return amount * (1 + (comp.vat or 0) / Decimal(100))


def _f(d: Decimal | None, default: float) -> float:
    return default if d is None else float(d)


@dataclass(frozen=True, slots=True)
class _Rule:
    """A restriction compiled to plain numbers, checked once per pricing step."""

    days: frozenset[int] | None
    t0: float | None
    t1: float | None
    d0: int | None
    d1: int | None
    bounds: tuple[float, ...]  # kWh lo/hi, kW lo/hi, A lo/hi, seconds lo/hi
    reservation: bool

    @classmethod
    def of(cls, r: Restrictions) -> _Rule:
        inf = math.inf
        timed = r.start_time is not None or r.end_time is not None
        return cls(
            frozenset(DAYS.index(d) for d in r.day_of_week) if r.day_of_week else None,
            (_minutes(r.start_time) if r.start_time else 0) if timed else None,
            (_minutes(r.end_time) if r.end_time else 24 * 60) if timed else None,
            date.fromisoformat(r.start_date).toordinal() if r.start_date else None,
            date.fromisoformat(r.end_date).toordinal() if r.end_date else None,
            (_f(r.min_kwh, -inf), _f(r.max_kwh, inf), _f(r.min_power, -inf),
             _f(r.max_power, inf), _f(r.min_current, -inf), _f(r.max_current, inf),
             -inf if r.min_duration is None else float(r.min_duration),
             inf if r.max_duration is None else float(r.max_duration)),
            r.reservation is not None)

    def holds(self, weekday: int, minute: float, day: int, kwh: float, kw: float,
              amps: float, elapsed: float, reserved: bool) -> bool:
        if self.reservation and not reserved:
            return False
        if self.days is not None and weekday not in self.days:
            return False
        if self.t0 is not None and self.t1 is not None:
            if self.t0 <= self.t1:
                if not self.t0 <= minute < self.t1:
                    return False
            elif not (minute >= self.t0 or minute < self.t1):
                return False
        if self.d0 is not None and day < self.d0:
            return False
        if self.d1 is not None and day >= self.d1:
            return False
        b = self.bounds
        return (b[0] <= kwh < b[1] and b[2] <= kw < b[3] and b[4] <= amps < b[5]
                and b[6] <= elapsed < b[7])


def price_session(tariff: Tariff, segments: Sequence[ChargeSegment], start: datetime, *,
                  volts: int, phases: int = 1, parking_s: float = 0.0, reserved: bool = False,
                  step_s: float = 60.0) -> SessionCost:
    """The cost of charging along `segments` from local time `start`, then parking_s idle."""
    if step_s <= 0 or parking_s < 0:
        raise TariffError("step_s must be positive and parking_s not negative")
    volts_total = float(max(volts, 1))  # sum of phase currents = P / V(line-neutral)
    rules = [None if el.restrictions is None else _Rule.of(el.restrictions)
             for el in tariff.elements]
    by_type: dict[str, list[tuple[int, PriceComponent]]] = {}
    for k, el in enumerate(tariff.elements):
        for ptype in PRICE_TYPES:
            comp = next((c for c in el.components if c.type == ptype), None)
            if comp is not None:
                by_type.setdefault(ptype, []).append((k, comp))
    qty: dict[tuple[str, int], float] = {}  # (type, element) -> Wh or seconds
    last: dict[str, tuple[int, PriceComponent]] = {}
    start_min = start.hour * 60 + start.minute + start.second / 60.0
    start_day = start.date().toordinal()
    start_wd = start.weekday()

    def active(ptype: str, elapsed: float, kwh: float, kw: float) -> tuple[int, PriceComponent
                                                                           ] | None:
        cands = by_type.get(ptype)
        if not cands:
            return None
        total_min = start_min + elapsed / 60.0
        days = int(total_min // 1440)
        for k, comp in cands:
            rule = rules[k]
            if rule is None or rule.holds((start_wd + days) % 7, total_min - days * 1440,
                                          start_day + days, kwh, kw, kw * 1000 / volts_total,
                                          elapsed, reserved):
                return k, comp
        return None

    first_kw = segments[0].power_w / 1000.0 if segments else 0.0
    flat = active("FLAT", 0.0, 0.0, first_kw)
    pieces: list[tuple[float, float, str]] = [
        (seg.duration_s, seg.power_w, "TIME") for seg in segments if seg.duration_s > 0]
    if parking_s > 0:
        pieces.append((parking_s, 0.0, "PARKING_TIME"))
    static = all(r is None for r in rules)
    energy = elapsed = 0.0
    for duration, power, time_type in pieces:
        n = 1 if static else max(1, math.ceil(duration / step_s - 1e-9))
        dt = duration / n
        kw = power / 1000.0
        for _ in range(n):
            e_step = power * dt / 3600.0
            if power > 0:
                hit = active("ENERGY", elapsed, energy / 1000.0, kw)
                if hit is not None:
                    qty[("ENERGY", hit[0])] = qty.get(("ENERGY", hit[0]), 0.0) + e_step
                    last["ENERGY"] = hit
            hit = active(time_type, elapsed, energy / 1000.0, kw)
            if hit is not None:
                qty[(time_type, hit[0])] = qty.get((time_type, hit[0]), 0.0) + dt
                last[time_type] = hit
            energy += e_step
            elapsed += dt
    amounts: dict[str, Decimal] = {}
    incl = Decimal(0)
    if flat is not None:
        amounts["FLAT"] = flat[1].price
        incl += _with_vat(flat[1].price, flat[1])
    totals: dict[str, float] = {}
    for (ptype, k), q in qty.items():
        comp = next(c for kk, c in by_type[ptype] if kk == k)
        cost = comp.price * Decimal(repr(q)) / (1000 if ptype == "ENERGY" else 3600)
        amounts[ptype] = amounts.get(ptype, Decimal(0)) + cost
        incl += _with_vat(cost, comp)
        totals[ptype] = totals.get(ptype, 0.0) + q
    for ptype, (_, comp) in last.items():  # round the total up to the last step size
        if comp.step_size > 1:
            total = Decimal(repr(totals[ptype]))
            rounded = (total / comp.step_size).to_integral_value(ROUND_CEILING) * comp.step_size
            extra_units = (rounded - total) / (1000 if ptype == "ENERGY" else 3600)
            if extra_units > 0:
                amounts[ptype] += comp.price * extra_units
                incl += _with_vat(comp.price * extra_units, comp)
    excl = sum(amounts.values(), Decimal(0))
    bounded = excl
    if tariff.min_price is not None and bounded < tariff.min_price:
        bounded = tariff.min_price
    if tariff.max_price is not None and bounded > tariff.max_price:
        bounded = tariff.max_price
    if bounded != excl:
        incl = bounded if excl == 0 else incl * bounded / excl
    q6 = Decimal("0.000001")
    return SessionCost(tariff.currency, bounded.quantize(q6), incl.quantize(q6),
                       {k: v.quantize(q6) for k, v in amounts.items()})
