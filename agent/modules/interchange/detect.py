"""Deficits and surpluses per consumer and slot, over a forecast horizon, with a threshold."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent.modules.interchange.model import InterchangeError, Scenario


@dataclass(frozen=True, slots=True)
class Imbalance:
    """A run of consecutive slots [start, end) where a site is short (deficit) or long."""

    site: str
    aggregator: str
    kind: str  # "deficit" or "surplus"
    start: int
    end: int
    energy_wh: int  # total over the run (above nothing: the whole imbalance counts)
    peak_wh: int

    def to_record(self) -> dict[str, Any]:
        return {"site": self.site, "aggregator": self.aggregator, "kind": self.kind,
                "start": self.start, "end": self.end, "energy_wh": self.energy_wh,
                "peak_wh": self.peak_wh}


def caps(scenario: Scenario) -> tuple[list[list[int]], list[list[int]]]:
    """(surplus, deficit) Wh per site and slot, zero where below the threshold: what vehicles
    may take from a site and give to it."""
    surplus, deficit = [], []
    thr = scenario.threshold_wh
    for s in scenario.sites:
        net = [s.net_wh(t) for t in range(scenario.n_slots)]
        surplus.append([n if n > 0 and n >= thr else 0 for n in net])
        deficit.append([-n if n < 0 and -n >= thr else 0 for n in net])
    return surplus, deficit


def detect(scenario: Scenario, *, start: int = 0, horizon: int | None = None
           ) -> list[Imbalance]:
    """Runs of deficit and surplus in slots [start, start + horizon), by site then time."""
    end = scenario.n_slots if horizon is None else start + horizon
    if not 0 <= start < end <= scenario.n_slots:
        raise InterchangeError(f"horizon {start}..{end} outside the scenario's "
                               f"0..{scenario.n_slots} slots")
    surplus, deficit = caps(scenario)
    found: list[Imbalance] = []
    for i, site in enumerate(scenario.sites):
        for kind, series in (("deficit", deficit[i]), ("surplus", surplus[i])):
            t = start
            while t < end:
                if series[t] <= 0:
                    t += 1
                    continue
                t0 = t
                while t < end and series[t] > 0:
                    t += 1
                run = series[t0:t]
                found.append(Imbalance(site.id, site.aggregator, kind, t0, t, sum(run),
                                       max(run)))
    found.sort(key=lambda m: (m.site, m.start, m.kind))
    return found
