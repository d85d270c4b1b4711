"""A charging session as it happened, for the ledger: which plan it followed, where, how much
energy, what it cost. The agent fills it in from the charger's (or the car's) meter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent.modules.charging.errors import ChargingError
from agent.modules.charging.recommend import Recommendation

STATUSES = frozenset({"planned", "charging", "completed", "aborted"})


@dataclass(frozen=True, slots=True)
class ChargingSession:
    plan_id: str
    vehicle_id: str
    location_id: str
    connector: str
    status: str
    started_at: int  # unix seconds
    ended_at: int | None
    metered_wh: int
    cost_milli: int | None
    currency: str
    planned_wh: int
    planned_cost_milli: int | None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ChargingError(f"session status {self.status!r} not in {sorted(STATUSES)}")
        if self.metered_wh < 0 or (self.ended_at is not None
                                   and self.ended_at < self.started_at):
            raise ChargingError("metered energy must be >= 0 and the end after the start")

    @classmethod
    def planned(cls, plan_id: str, vehicle_id: str, rec: Recommendation, started_at: int
                ) -> ChargingSession:
        """The session as the chosen recommendation foresees it, before any energy flows."""
        return cls(plan_id, vehicle_id, rec.location_id, rec.connector, "planned", started_at,
                   None, 0, None, rec.currency, rec.metered_wh, rec.cost_milli)

    def finished(self, *, ended_at: int, metered_wh: int, cost_milli: int | None,
                 aborted: bool = False) -> ChargingSession:
        return ChargingSession(self.plan_id, self.vehicle_id, self.location_id, self.connector,
                               "aborted" if aborted else "completed", self.started_at,
                               ended_at, metered_wh, cost_milli, self.currency,
                               self.planned_wh, self.planned_cost_milli)

    def to_record(self) -> dict[str, Any]:
        return {"type": "charging.session", "plan_id": self.plan_id,
                "vehicle": self.vehicle_id, "location": self.location_id,
                "connector": self.connector, "status": self.status,
                "started_at": self.started_at, "ended_at": self.ended_at,
                "metered_wh": self.metered_wh, "cost_milli": self.cost_milli,
                "currency": self.currency, "planned_wh": self.planned_wh,
                "planned_cost_milli": self.planned_cost_milli}
