"""PNG plots of a run (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from sim_radio.coverage import Coverage
from sim_radio.engine import Result, Snapshot


def _coverage(ax: Any, coverage: Coverage, t: float) -> None:
    for cell in coverage.cells:
        ax.add_patch(plt.Circle((cell.x, cell.y), cell.radius_m, color="tab:green",
                                alpha=0.06, zorder=0))
    for area in coverage.outages:
        if not area.active(t):
            continue
        if area.rect is not None:
            x0, y0, x1, y1 = area.rect
            patch: Any = plt.Rectangle((x0, y0), x1 - x0, y1 - y0, color="tab:red", alpha=0.1,
                                       zorder=0)
        else:
            patch = plt.Circle((area.x, area.y), area.radius_m, color="tab:red", alpha=0.1,
                               zorder=0)
        ax.add_patch(patch)


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _topology(snap: Snapshot, width: float, height: float, title: str, path: Path,
              coverage: Coverage | None) -> None:
    aspect = height / width if width > 0 else 1.0
    fig, ax = plt.subplots(figsize=(10, max(2.5, min(10.0, 10 * aspect + 1))))
    if coverage is not None:
        _coverage(ax, coverage, snap.time)
    pos = snap.positions
    for i, j in snap.links:
        ax.plot([pos[i][0], pos[j][0]], [pos[i][1], pos[j][1]], color="0.85", lw=0.6, zorder=1)
    for i, j in snap.gateway_edges:
        ax.annotate("", xy=pos[j], xytext=pos[i], zorder=2,
                    arrowprops={"arrowstyle": "->", "color": "tab:blue", "lw": 1.0})
    for i, j in snap.route_edges:
        ax.annotate("", xy=pos[j], xytext=pos[i], zorder=3,
                    arrowprops={"arrowstyle": "->", "color": "tab:red", "lw": 1.4})
    gws = set(snap.gateways)
    others = [p for k, p in enumerate(pos) if k not in gws]
    if others:
        ax.scatter([p[0] for p in others], [p[1] for p in others], s=14, c="0.2", zorder=4,
                   label="no line")
    if gws:
        ax.scatter([pos[k][0] for k in gws], [pos[k][1] for k in gws], s=30, c="tab:green",
                   marker="s", zorder=5, label="gateway (line up)")
    ax.plot([], [], color="tab:red", label="routes of flows")
    ax.plot([], [], color="tab:blue", label="next hop to gateway")
    ax.set_xlim(-0.02 * width, 1.02 * width)
    ax.set_ylim(-0.02 * height, 1.02 * height)
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    ax.set_title(f"{title}: t = {snap.time:g} s, {len(snap.links)} links"
                 + ("" if coverage is None or not coverage.outages else
                    " (red: line outage zone)"))
    ax.legend(loc="upper right", fontsize="small")
    _save(fig, path)


def _series(series: dict[str, list[float | None]], key: str,
            t_key: str = "t") -> tuple[list[float], list[float]]:
    ts, vs = [], []
    for t, v in zip(series[t_key], series[key], strict=True):
        if v is not None:
            ts.append(float(t) if t is not None else 0.0)
            vs.append(v)
    return ts, vs


def write(result: Result, out_dir: str | Path, *, width_m: float, height_m: float,
          title: str, coverage: Coverage | None = None) -> list[Path]:
    """Write the run's plots into `out_dir`; return the files written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for snap in result.snapshots:
        path = out / f"topology_t{snap.time:07.1f}s.png"
        _topology(snap, width_m, height_m, title, path, coverage)
        written.append(path)
    s = result.series
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    ts, pdr = _series(s, "pdr")
    a1.plot(ts, pdr, lw=1.0)
    a1.set_ylabel("PDR (by send time)")
    a1.set_ylim(-0.02, 1.05)
    ts, delay = _series(s, "delay_s")
    a2.plot(ts, delay, lw=1.0, color="tab:orange")
    a2.set_ylabel("mean delay (s)")
    a2.set_xlabel("simulated time (s)")
    a1.set_title(f"{title}: delivery and delay over time")
    written.append(_save(fig, out / "pdr_delay.png"))
    fig, ax = plt.subplots(figsize=(9, 3.5))
    ts, ctrl = _series(s, "control_per_s")
    ax.plot(ts, ctrl, lw=1.0, color="tab:purple")
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel("control frames / s")
    ax.set_title(f"{title}: routing overhead over time")
    written.append(_save(fig, out / "overhead.png"))
    if "ledger_t" in s:
        fig, ax = plt.subplots(figsize=(9, 3.5))
        for key, label in (("ledger_written", "blocks signed"),
                           ("ledger_at_backhaul", "of those, at the backhaul")):
            ax.plot(*_series(s, key, "ledger_t"), lw=1.2, label=label)
        ax.set_xlabel("simulated time (s)")
        ax.set_ylabel("blocks (whole fleet)")
        ax.legend(loc="upper left")
        ax.set_title(f"{title}: ledger history reaching the backhaul")
        written.append(_save(fig, out / "ledger.png"))
    return written


def sweep_plot(rows: list[dict[str, Any]], param: str, metrics: list[str],
               path: str | Path) -> Path:
    """Mean and 95 % confidence interval (Student t) of each metric per parameter value."""
    from scipy import stats

    values: list[Any] = []
    for row in rows:
        if row["value"] not in values:
            values.append(row["value"])
    fig, axes = plt.subplots(len(metrics), 1, figsize=(8, 2.8 * len(metrics)), sharex=True)
    if len(metrics) == 1:
        axes = [axes]
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    xs = values if numeric else list(range(len(values)))
    for ax, metric in zip(axes, metrics, strict=True):
        means, errs = [], []
        for v in values:
            sample = [float(r[metric]) for r in rows
                      if r["value"] == v and r.get(metric) not in (None, "")]
            if not sample:
                means.append(float("nan"))
                errs.append(0.0)
                continue
            mean = sum(sample) / len(sample)
            if len(sample) > 1:
                sem = stats.sem(sample)
                half = float(sem * stats.t.ppf(0.975, len(sample) - 1))
            else:
                half = 0.0
            means.append(mean)
            errs.append(half if half == half else 0.0)
        ax.errorbar(xs, means, yerr=errs, fmt="o-", capsize=4)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel(param)
    if not numeric:
        axes[-1].set_xticks(xs, [str(v) for v in values])
    axes[0].set_title(f"sweep of {param}: mean and 95 % CI over seeds")
    return _save(fig, Path(path))
