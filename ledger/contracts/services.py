"""Usage records from the agent's two services, charging and power interchange.

Both modules write plain records to the ledger (their `to_record()`); these functions turn
such a record into the usage-record dicts an agreement checks, so the contract package does
not import the modules (the ledger stays below the agent in the layering).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ledger.contracts import payloads as P
from ledger.contracts.engine import Engine
from ledger.contracts.errors import ContractError, InvalidTransaction
from ledger.contracts.model import is_hex_id


def charging_usage(session: Mapping[str, Any], user: str) -> dict[str, Any]:
    """A finished `charging.session` record (agent/modules/charging/session.py) as usage."""
    if not is_hex_id(user):
        raise InvalidTransaction("user must be a 16-digit hex node id")
    if session.get("type") != "charging.session":
        raise InvalidTransaction("not a charging.session record")
    if session.get("status") not in ("completed", "aborted"):
        raise InvalidTransaction(f"session is {session.get('status')!r}, not finished")
    wh, ended = session.get("metered_wh"), session.get("ended_at")
    if not isinstance(wh, int) or not isinstance(ended, int) or wh < 0 or ended < 0:
        raise InvalidTransaction("session needs metered_wh and ended_at (integers)")
    return {"service": "charging", "user": user, "kwh": wh / 1000, "time_ms": ended * 1000}


def interchange_usage(vehicle_plan: Mapping[str, Any], user: str, *, slot0_ms: int,
                      slot_minutes: int) -> list[dict[str, Any]]:
    """One usage record per stop of an interchange vehicle plan that moved energy
    (agent/modules/interchange/plan.py `VehiclePlan.to_record()`), energy taken plus given."""
    if not is_hex_id(user):
        raise InvalidTransaction("user must be a 16-digit hex node id")
    stops = vehicle_plan.get("stops")
    if not isinstance(stops, list):
        raise InvalidTransaction("vehicle plan record needs a list of stops")
    out = []
    for stop in stops:
        try:
            moved = sum(int(e) for _, e in stop["charge"]) + sum(
                int(e) for _, e in stop["discharge"])
            arrive = int(stop["arrive"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidTransaction(f"malformed stop {stop!r}") from exc
        if moved:
            out.append({"service": "interchange", "user": user, "kwh": moved / 1000,
                        "time_ms": slot0_ms + arrive * slot_minutes * 60_000})
    return out


def determination(engine: Engine, state: dict[str, Any], operator: bytes, time_ms: int,
                  contract: str, record: Mapping[str, Any]) -> dict[str, Any]:
    """What the contract decides for `record` now (the operator puts it in its transaction):
    ``{"permitted": bool, "reasons": [...]}``. Raises the `ContractError` of a refused call."""
    preview = engine.preview(state, operator, time_ms,
                             P.call(contract, "record_usage", record=dict(record)))
    if preview.result is None:
        raise ContractError(f"{preview.code}: {preview.message}")
    entry = next(v for k, v in preview.result.writes.items() if k.startswith("u/"))
    return {"permitted": entry["permitted"], "reasons": list(entry["reasons"])}
