"""Usage rules of an agreement and the determination of one usage record (pure functions).

Usage records are plain dicts, as the charging and interchange modules produce them:
``{"service": "charging" | "interchange", "user": <hex node id>, "kwh": <number>,
"time_ms": <int>}``. Energy is kept as integer Wh (rounded) so that sums are exact.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ledger.contracts.errors import InvalidTransaction
from ledger.contracts.model import is_hex_id

SERVICES = ("charging", "interchange")
"""The services the agent hosts (agent/modules/charging and agent/modules/interchange)."""
DAY_MINUTES = 1440


@dataclass(frozen=True, slots=True)
class Rules:
    """Rules of one agreement. None means "no limit"."""

    services: tuple[str, ...] = SERVICES
    period_ms: int = 86_400_000
    limit_wh: int | None = None
    limit_count: int | None = None
    windows: tuple[tuple[int, int], ...] = ()
    """Allowed (start, end) minutes of the UTC day; empty means any time. end < start wraps."""

    def to_data(self) -> dict[str, Any]:
        return {"services": list(self.services), "period_ms": self.period_ms,
                "limit_wh": self.limit_wh, "limit_count": self.limit_count,
                "windows": [list(w) for w in self.windows]}

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Rules:
        """Rules from `to_data` output that this node stored itself (already validated)."""
        return cls(services=tuple(data["services"]), period_ms=data["period_ms"],
                   limit_wh=data["limit_wh"], limit_count=data["limit_count"],
                   windows=tuple((w[0], w[1]) for w in data["windows"]))

    def narrowed_by(self, child: Rules | None) -> Rules:
        """A child's rules can only narrow its parent's."""
        if child is None:
            return self
        services = tuple(s for s in self.services if s in child.services)
        return Rules(services=services, period_ms=child.period_ms,
                     limit_wh=_min(self.limit_wh, child.limit_wh),
                     limit_count=_min(self.limit_count, child.limit_count),
                     windows=child.windows or self.windows)


def _min(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def _opt_int(raw: Mapping[str, Any], name: str) -> int | None:
    value = raw.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidTransaction(f"rule {name!r} must be a non-negative integer")
    return value


def parse_rules(raw: Any) -> Rules:
    if not isinstance(raw, dict):
        raise InvalidTransaction("rules must be a map")
    unknown = sorted(set(raw) - {"services", "period_ms", "limit_wh", "limit_count", "windows"})
    if unknown:
        raise InvalidTransaction(f"unknown rule keys {unknown}")
    services = raw.get("services", list(SERVICES))
    if not isinstance(services, list) or any(s not in SERVICES for s in services):
        raise InvalidTransaction(f"services must be a list drawn from {SERVICES}")
    period = raw.get("period_ms", 86_400_000)
    if isinstance(period, bool) or not isinstance(period, int) or period <= 0:
        raise InvalidTransaction("period_ms must be a positive integer")
    windows_raw = raw.get("windows", [])
    if not isinstance(windows_raw, list) or len(windows_raw) > 24:
        raise InvalidTransaction("windows must be a list of at most 24 [start, end] minutes")
    windows: list[tuple[int, int]] = []
    for w in windows_raw:
        if (not isinstance(w, list) or len(w) != 2
                or not all(isinstance(m, int) and not isinstance(m, bool) for m in w)
                or not all(0 <= m <= DAY_MINUTES for m in w)):
            raise InvalidTransaction(f"window {w!r} is not [start, end] in 0..1440 minutes")
        windows.append((w[0], w[1]))
    return Rules(services=tuple(sorted(set(services))), period_ms=period,
                 limit_wh=_opt_int(raw, "limit_wh"), limit_count=_opt_int(raw, "limit_count"),
                 windows=tuple(windows))


@dataclass(frozen=True, slots=True)
class UsageRecord:
    service: str
    user: str
    wh: int
    time_ms: int


def parse_usage(raw: Any) -> UsageRecord:
    if not isinstance(raw, dict):
        raise InvalidTransaction("usage record must be a map")
    service, user, kwh, time_ms = (raw.get(k) for k in ("service", "user", "kwh", "time_ms"))
    if not isinstance(service, str) or not service or len(service) > 40:
        raise InvalidTransaction("usage record needs a service name")
    if not is_hex_id(user):
        raise InvalidTransaction("usage record needs the user's 16-digit hex node id")
    if isinstance(kwh, bool) or not isinstance(kwh, int | float) or not math.isfinite(kwh):
        raise InvalidTransaction("usage record needs a finite kwh")
    if kwh < 0 or kwh > 1_000_000:
        raise InvalidTransaction("usage kwh must be within 0..1,000,000")
    if isinstance(time_ms, bool) or not isinstance(time_ms, int) or time_ms < 0:
        raise InvalidTransaction("usage record needs time_ms, a non-negative integer")
    return UsageRecord(service=service, user=str(user), wh=round(kwh * 1000), time_ms=time_ms)


def in_windows(time_ms: int, windows: Sequence[Sequence[int]]) -> bool:
    if not windows:
        return True
    minute = (time_ms // 60_000) % DAY_MINUTES
    for start, end in windows:
        if start <= end and start <= minute < end:
            return True
        if start > end and (minute >= start or minute < end):
            return True
    return False


def determine(record: UsageRecord, rules: Mapping[str, Any], *, is_member: bool,
              block_time_ms: int, used_wh: int, used_count: int,
              contract_ok: str | None) -> list[str]:
    """Reasons why `record` is not permitted (empty list: permitted).

    `rules` is `Rules.to_data()` output; `used_wh`/`used_count` are the user's permitted
    totals in the record's period so far; `contract_ok` is None when the contract may be
    used, else why not.
    """
    reasons: list[str] = []
    if contract_ok is not None:
        reasons.append(contract_ok)
    services = rules["services"]
    if record.service not in services:
        reasons.append(f"service {record.service!r} not allowed (allowed: "
                       f"{', '.join(services) or 'none'})")
    if not is_member:
        reasons.append(f"user {record.user} is not a member of the group")
    if record.time_ms > block_time_ms:
        reasons.append("usage time is after the block time")
    if not in_windows(record.time_ms, rules["windows"]):
        reasons.append("usage time is outside the allowed time windows")
    limit_wh, limit_count = rules["limit_wh"], rules["limit_count"]
    if limit_wh is not None and used_wh + record.wh > limit_wh:
        reasons.append(f"energy limit: {used_wh} + {record.wh} Wh > {limit_wh} Wh "
                       f"per {rules['period_ms']} ms")
    if limit_count is not None and used_count + 1 > limit_count:
        reasons.append(f"count limit: {limit_count} uses per {rules['period_ms']} ms")
    return reasons
