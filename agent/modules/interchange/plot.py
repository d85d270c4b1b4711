"""The timeline plot: site balances before and after the plan, and each vehicle's moves."""

from __future__ import annotations

from pathlib import Path

from agent.modules.interchange.model import Scenario
from agent.modules.interchange.plan import Plan


def plot_plan(scenario: Scenario, plan: Plan, path: str | Path) -> None:
    """Write a PNG: top, net balance per site (solid: without vehicles, dashed: with the
    plan); bottom, one row per vehicle with its stays (labelled by site), charging (green)
    and discharging (red)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = scenario.n_slots
    hours = [t * scenario.slot_h for t in range(n)]
    delta = {s.id: [0.0] * n for s in scenario.sites}
    for vp in plan.vehicles:
        for stop in vp.stops:
            for t, wh in stop.charge.items():
                delta[stop.site][t] -= wh
            for t, wh in stop.discharge.items():
                delta[stop.site][t] += wh
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 4 + 0.35 * len(plan.vehicles)),
                                      sharex=True,
                                      gridspec_kw={"height_ratios": [2, 1]})
    for k, s in enumerate(scenario.sites):
        color = f"C{k % 10}"
        net = [s.net_wh(t) / 1000 for t in range(n)]
        after = [net[t] + delta[s.id][t] / 1000 for t in range(n)]
        top.step(hours, net, where="post", color=color, lw=1,
                 label=f"{s.id} ({s.aggregator})")
        if any(delta[s.id]):
            top.step(hours, after, where="post", color=color, lw=1.5, ls="--")
    top.axhline(0, color="black", lw=0.5)
    top.set_ylabel("generation - load, kWh/slot")
    top.set_title(f"{scenario.name}: {plan.solver} plan, saved {plan.figures.saved / 1000:.2f}"
                  f", interchanged {plan.figures.interchanged_wh / 1000:.1f} kWh "
                  f"(dashed: with vehicles)")
    top.legend(fontsize=7, ncol=4, loc="upper left")
    for row, vp in enumerate(plan.vehicles):
        for stop in vp.stops:
            x0, x1 = stop.arrive * scenario.slot_h, stop.depart * scenario.slot_h
            bottom.barh(row, x1 - x0, left=x0, height=0.5, color="lightgrey",
                        edgecolor="grey")
            if x1 > x0:
                bottom.text((x0 + x1) / 2, row, stop.site, ha="center", va="center",
                            fontsize=7)
            for t in stop.charge:
                bottom.barh(row + 0.3, scenario.slot_h, left=t * scenario.slot_h,
                            height=0.15, color="tab:green")
            for t in stop.discharge:
                bottom.barh(row - 0.3, scenario.slot_h, left=t * scenario.slot_h,
                            height=0.15, color="tab:red")
    bottom.set_yticks(range(len(plan.vehicles)), [vp.vehicle for vp in plan.vehicles])
    bottom.set_xlabel("hours from the first slot" + (f" ({scenario.start_label})"
                                                     if scenario.start_label else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
