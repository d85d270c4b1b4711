"""Radio propagation models and per-frame airtime.

A model answers one question per (sender, receiver, frame): is the frame received, given
the distance? `reach_m` is the distance beyond which no frame is ever received, which the
spatial hash uses to find candidate receivers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from random import Random

PHY_OVERHEAD_BYTES = 34
"""MAC header and FCS added to every frame on the air (802.11 data frame: 24 + 4 + LLC 6)."""
PREAMBLE_S = 192e-6
"""PHY preamble and header time (802.11b long preamble)."""


def airtime_s(size_bytes: int, bitrate_bps: int) -> float:
    """How long a frame of `size_bytes` occupies the channel."""
    return PREAMBLE_S + (size_bytes + PHY_OVERHEAD_BYTES) * 8.0 / bitrate_bps


@dataclass(frozen=True, slots=True)
class UnitDisk:
    """Received within `range_m`, never beyond; each frame then lost with probability `loss`."""

    range_m: float
    loss: float = 0.0

    @property
    def reach_m(self) -> float:
        return self.range_m

    def received(self, distance_m: float, rng: Random) -> bool:
        if distance_m > self.range_m:
            return False
        return self.loss <= 0.0 or rng.random() >= self.loss


@dataclass(frozen=True, slots=True)
class LogDistance:
    """Log-distance path loss with log-normal shadowing and a reception threshold.

    Received power = tx_power - (reference_loss + 10 n log10(d / 1 m)) + N(0, shadowing);
    the frame is received when that is at least `threshold_dbm`, then lost with `loss`.
    Shadowing is drawn per frame (fast fading folded in), so links near the edge flicker.
    """

    tx_power_dbm: float
    reference_loss_db: float
    exponent: float
    shadowing_db: float
    threshold_dbm: float
    loss: float = 0.0

    def mean_range_m(self) -> float:
        """Distance at which the mean received power equals the threshold."""
        budget = self.tx_power_dbm - self.reference_loss_db - self.threshold_dbm
        return float(10 ** (budget / (10 * self.exponent)))

    @property
    def reach_m(self) -> float:
        budget = (self.tx_power_dbm - self.reference_loss_db - self.threshold_dbm
                  + 3.0 * self.shadowing_db)
        return float(10 ** (budget / (10 * self.exponent)))

    def received(self, distance_m: float, rng: Random) -> bool:
        d = max(distance_m, 1.0)
        power = self.tx_power_dbm - self.reference_loss_db - 10 * self.exponent * math.log10(d)
        if self.shadowing_db > 0:
            power += rng.gauss(0.0, self.shadowing_db)
        if power < self.threshold_dbm:
            return False
        return self.loss <= 0.0 or rng.random() >= self.loss


RadioModel = UnitDisk | LogDistance
