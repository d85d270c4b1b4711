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
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal

from agent.modules.charging.errors import TariffError
from agent.modules.charging.ocpi import DAYS, PriceComponent, Restrictions, Tariff
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
    if r.reservation is not None and not reserved:
        return False
    if r.day_of_week and DAYS[s.when.weekday()] not in r.day_of_week:
        return False
    if r.start_time is not None or r.end_time is not None:
        now = s.when.hour * 60 + s.when.minute + s.when.second / 60.0
        start = _minutes(r.start_time) if r.start_time else 0
        end = _minutes(r.end_time) if r.end_time else 24 * 60
        inside = start <= now < end if start <= end else (now >= start or now < end)
        if not inside:
            return False
    day = s.when.date().isoformat()
    if r.start_date is not None and day < r.start_date:
        return False
    if r.end_date is not None and day >= r.end_date:
        return False
    kwh = Decimal(repr(s.energy_wh / 1000.0))
    kw = Decimal(repr(s.power_w / 1000.0))
    amps = Decimal(repr(s.current_a))
    checks = ((r.min_kwh, kwh, True), (r.max_kwh, kwh, False),
              (r.min_power, kw, True), (r.max_power, kw, False),
              (r.min_current, amps, True), (r.max_current, amps, False))
    for bound, value, is_min in checks:
        if bound is not None and (value < bound if is_min else value >= bound):
            return False
    if r.min_duration is not None and s.elapsed_s < r.min_duration:
        return False
    return not (r.max_duration is not None and s.elapsed_s >= r.max_duration)


def _active(tariff: Tariff, ptype: str, s: _State, reserved: bool) -> PriceComponent | None:
    for el in tariff.elements:
        comp = next((c for c in el.components if c.type == ptype), None)
        if comp is not None and restrictions_hold(el.restrictions, s, reserved=reserved):
            return comp
    return None


def _with_vat(amount: Decimal, comp: PriceComponent) -> Decimal:
    return amount * (1 + (comp.vat or 0) / Decimal(100))


def price_session(tariff: Tariff, segments: Sequence[ChargeSegment], start: datetime, *,
                  volts: int, phases: int = 1, parking_s: float = 0.0, reserved: bool = False,
                  step_s: float = 60.0) -> SessionCost:
    """The cost of charging along `segments` from local time `start`, then parking_s idle."""
    if step_s <= 0 or parking_s < 0:
        raise TariffError("step_s must be positive and parking_s not negative")
    volts_total = max(volts, 1)  # sum of phase currents = P / V(line-neutral)
    amounts: dict[str, Decimal] = {}
    incl = Decimal(0)
    last: dict[str, PriceComponent] = {}
    qty: dict[str, float] = {"ENERGY": 0.0, "TIME": 0.0, "PARKING_TIME": 0.0}
    billed: dict[str, Decimal] = {}

    def add(ptype: str, comp: PriceComponent, quantity: float) -> None:
        nonlocal incl
        unit = Decimal(repr(quantity / (1000.0 if ptype == "ENERGY" else 3600.0)))
        cost = comp.price * unit
        amounts[ptype] = amounts.get(ptype, Decimal(0)) + cost
        incl += _with_vat(cost, comp)
        last[ptype] = comp
        qty[ptype] += quantity
        billed[ptype] = billed.get(ptype, Decimal(0))

    energy = elapsed = 0.0
    first = _State(start, 0.0, 0.0, segments[0].power_w if segments else 0.0,
                   (segments[0].power_w if segments else 0.0) / volts_total)
    flat = _active(tariff, "FLAT", first, reserved)
    if flat is not None:
        amounts["FLAT"] = flat.price
        incl += _with_vat(flat.price, flat)
    pieces: list[tuple[float, float, str]] = [
        (seg.duration_s, seg.power_w, "TIME") for seg in segments if seg.duration_s > 0]
    if parking_s > 0:
        pieces.append((parking_s, 0.0, "PARKING_TIME"))
    for duration, power, time_type in pieces:
        n = max(1, math.ceil(duration / step_s - 1e-9))
        dt = duration / n
        for _ in range(n):
            s = _State(start + timedelta(seconds=elapsed), elapsed, energy, power,
                       power / volts_total)
            e_step = power * dt / 3600.0
            if power > 0:
                comp = _active(tariff, "ENERGY", s, reserved)
                if comp is not None:
                    add("ENERGY", comp, e_step)
            comp = _active(tariff, time_type, s, reserved)
            if comp is not None:
                add(time_type, comp, dt)
            energy += e_step
            elapsed += dt
    for ptype, comp in last.items():  # round the dimension's total up to the last step size
        if comp.step_size > 1:
            total = Decimal(repr(qty[ptype]))
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
    q = Decimal("0.000001")
    return SessionCost(tariff.currency, bounded.quantize(q), incl.quantize(q),
                       {k: v.quantize(q) for k, v in amounts.items()})
