"""What a run measured: deliveries, delays, control overhead, discoveries, reachability.

Counting rules (also in docs/sim-radio.md): `data_sent` counts payloads handed to the
sources' cores; a packet is delivered once, when its destination's core hands it up (or,
for backhaul flows, when any gateway emits it as BackhaulData); duplicates are ignored.
`control_frames` counts every non-data frame a core put on the air (each hop, each
fragment), HELLOs included, as ns-2 studies count routing packets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(slots=True)
class FlowStats:
    src: int
    dst: int | None
    sent: int = 0
    delivered: int = 0
    delay_sum: float = 0.0
    seen: set[int] = field(default_factory=set)


class Metrics:
    """Counters filled by the engine while it runs."""

    def __init__(self, duration_s: float, bin_s: float) -> None:
        self.bin_s = bin_s
        bins = math.ceil(duration_s / bin_s) + 1
        self.sent_bins = [0] * bins
        self.delivered_bins = [0] * bins
        self.delay_bins = [0.0] * bins
        self.control_bins = [0] * bins
        self.flows: dict[int, FlowStats] = {}
        self.delays: list[float] = []
        self.control_frames = 0
        self.control_bytes = 0
        self.data_frames = 0
        self.control_by_kind: dict[str, int] = {}
        self.reach_samples = 0
        self.reach_hits = 0
        self.mac: dict[str, int] = {"rx_collisions": 0, "retries": 0, "drops": 0,
                                    "queue_drops": 0, "deferrals": 0}

    def _bin(self, t: float) -> int:
        return min(int(t / self.bin_s), len(self.sent_bins) - 1)

    def transmitted(self, kind: str, size: int, now: float) -> None:
        if kind == "data":
            self.data_frames += 1
            return
        self.control_frames += 1
        self.control_bytes += size
        self.control_by_kind[kind] = self.control_by_kind.get(kind, 0) + 1
        self.control_bins[self._bin(now)] += 1

    def sent(self, flow: int, now: float) -> None:
        self.flows[flow].sent += 1
        self.sent_bins[self._bin(now)] += 1

    def delivered(self, flow: int, seq: int, sent: float, now: float) -> None:
        stats = self.flows.get(flow)
        if stats is None or seq in stats.seen:
            return
        stats.seen.add(seq)
        delay = now - sent
        stats.delivered += 1
        stats.delay_sum += delay
        self.delays.append(delay)
        b = self._bin(sent)
        self.delivered_bins[b] += 1
        self.delay_bins[b] += delay

    def summary(self) -> dict[str, object]:
        sent = sum(f.sent for f in self.flows.values())
        delivered = sum(f.delivered for f in self.flows.values())
        delays = sorted(self.delays)
        p95 = delays[min(len(delays) - 1, math.ceil(0.95 * len(delays)) - 1)] if delays \
            else None
        return {
            "data_sent": sent,
            "data_delivered": delivered,
            "pdr": delivered / sent if sent else None,
            "mean_delay_s": sum(delays) / len(delays) if delays else None,
            "p95_delay_s": p95,
            "control_frames": self.control_frames,
            "control_bytes": self.control_bytes,
            "control_by_kind": dict(sorted(self.control_by_kind.items())),
            "data_frames": self.data_frames,
            "normalized_routing_load": self.control_frames / delivered if delivered else None,
            "gateway_reachability": (self.reach_hits / self.reach_samples
                                     if self.reach_samples else None),
            "mac": dict(self.mac),
            "flows": [
                {"flow": k, "src": f.src, "dst": "backhaul" if f.dst is None else f.dst,
                 "sent": f.sent, "delivered": f.delivered,
                 "pdr": f.delivered / f.sent if f.sent else None,
                 "mean_delay_s": f.delay_sum / f.delivered if f.delivered else None}
                for k, f in sorted(self.flows.items())
            ],
        }

    def series(self) -> dict[str, list[float | None]]:
        """Per time bin (by send time): PDR, mean delay; control frames per second."""
        t = [k * self.bin_s for k in range(len(self.sent_bins))]
        pdr: list[float | None] = [d / s if s else None
                                   for s, d in zip(self.sent_bins, self.delivered_bins,
                                                   strict=True)]
        delay: list[float | None] = [ds / d if d else None
                                     for d, ds in zip(self.delivered_bins, self.delay_bins,
                                                      strict=True)]
        ctrl: list[float | None] = [c / self.bin_s for c in self.control_bins]
        return {"t": list(t), "pdr": pdr, "delay_s": delay, "control_per_s": ctrl}
