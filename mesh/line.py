"""A node's mobile (cellular) line status, as carried in HELLOs and gateway replies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

TECHNOLOGIES = ("none", "2g", "3g", "lte", "5g", "satellite", "wired", "other")


@dataclass(frozen=True, slots=True)
class LineStatus:
    """What a node knows of its own line to the backhaul.

    `connected`: the modem has a data bearer. `backhaul_reachable`: the backhaul answered
    the last probe. Only a node with both is a gateway. `signal_dbm` is RSRP/RSSI (0 when
    unknown); `rtt_ms` is the last backhaul round trip (0 when unknown).
    """

    connected: bool = False
    technology: str = "none"
    signal_dbm: int = 0
    backhaul_reachable: bool = False
    rtt_ms: int = 0

    @property
    def is_gateway(self) -> bool:
        return self.connected and self.backhaul_reachable

    def quality(self) -> float:
        """0..1 score used to rank gateways: stronger signal and shorter RTT rank higher."""
        if not self.is_gateway:
            return 0.0
        signal = 0.5 if self.signal_dbm == 0 else min(1.0, max(0.0, (self.signal_dbm + 120) / 60))
        rtt = 0.5 if self.rtt_ms == 0 else min(1.0, max(0.0, 1.0 - self.rtt_ms / 1000))
        return 0.5 * signal + 0.5 * rtt

    def to_wire(self) -> list[Any]:
        tech = TECHNOLOGIES.index(self.technology) if self.technology in TECHNOLOGIES else 7
        flags = (1 if self.connected else 0) | (2 if self.backhaul_reachable else 0)
        return [flags, tech, self.signal_dbm, self.rtt_ms]

    @classmethod
    def from_wire(cls, value: Any) -> LineStatus:
        """Decode; raises ValueError/TypeError/IndexError on a malformed value."""
        flags, tech, signal, rtt = value
        if not all(type(v) is int for v in (flags, tech, signal, rtt)):
            raise TypeError("line status fields must be integers")
        if not (0 <= flags <= 3 and 0 <= tech < len(TECHNOLOGIES)):
            raise ValueError("line status out of range")
        if not (-200 <= signal <= 0 and 0 <= rtt <= 600_000):
            raise ValueError("line status signal or rtt out of range")
        return cls(bool(flags & 1), TECHNOLOGIES[tech], signal, bool(flags & 2), rtt)


LINE_DOWN = LineStatus()
