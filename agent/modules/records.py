"""Ledger transaction types for what the modules plan and do (a ledger plugin).

The planners' `to_record()` dicts carry their type under "type"; the rest is the body. The
schemas pin the top-level fields and leave the nested plan detail to the plain-CBOR check,
so a record the planners write is accepted and a mistyped one is refused.
"""

from __future__ import annotations

import argparse
from typing import Any

from ledger.ledger import Ledger
from ledger.tx import Any_, Bytes, Float, Int, List, Str, TxRegistry, TxType
from mesh.identity import Identity

_OPT_INT = Int(optional=True)

TX_TYPES = (
    TxType("charging.plan", "A charging recommendation chosen on the vehicle.",
           {"plan_id": Str(64), "vehicle": Any_(), "soc_permille": Int(0, 1000),
            "lat_e6": Int(-90_000_000, 90_000_000), "lon_e6": Int(-180_000_000, 180_000_000),
            "range_m": Int(0), "recommendations": List(Any_(), 1000), "excluded": Any_(),
            "considered": Int(0)}),
    TxType("charging.session", "A charging session, planned, completed or aborted.",
           {"plan_id": Str(64), "vehicle": Str(256), "location": Str(256), "connector": Str(256),
            "status": Str(16), "started_at": Int(0), "ended_at": _OPT_INT,
            "metered_wh": Int(0), "cost_milli": _OPT_INT, "currency": Str(8, optional=True),
            "planned_wh": Int(0), "planned_cost_milli": _OPT_INT}),
    TxType("interchange.plan", "A power-interchange plan: which vehicle carries energy where.",
           {"plan_id": Str(64), "version": Int(0), "scenario": Str(256), "solver": Str(32),
            "status": Str(64), "runtime_ms": Int(0), "bound": Float(optional=True),
            "figures": Any_(), "vehicles": List(Any_(), 10_000)}),
    TxType("interchange.answer", "A vehicle's answer to its part of a plan (either side's view).",
           {"plan_id": Str(64), "version": Int(0), "vehicle": Str(256),
            "coordinator": Bytes(8, 8), "vehicle_node": Bytes(0, 8), "answer": Str(16),
            "reason": Str(32), "detail": Str(1024), "plan": Any_(optional=True)}),
    TxType("interchange.transmission", "How sending a plan ended: settled or failed, answers.",
           {"state": Str(16), "version": Int(0), "coordinator": Bytes(8, 8),
            "plan": Any_(optional=True), "answers": Any_(), "history": List(Any_(), 1000)}),
)


def register_tx_types(registry: TxRegistry) -> None:
    """The ledger's plugin hook (see ledger.tx.DEFAULT_PLUGINS)."""
    for tx_type in TX_TYPES:
        registry.register(tx_type)


def record(ledger: Ledger, rec: dict[str, Any], now: float) -> None:
    """Append a planner's record as a transaction and make it durable."""
    body = {k: v for k, v in rec.items() if k != "type"}
    ledger.append(ledger.registry.make(rec["type"], body), now)
    ledger.flush(now)


def add_ledger_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ledger", metavar="DB", help="record the result in this ledger file")
    parser.add_argument("--key", metavar="KEYFILE", help="node key that signs the record")


def record_if_asked(args: argparse.Namespace, rec: dict[str, Any], now: float) -> str | None:
    """Record `rec` when --ledger and --key were given; return an error message, or None."""
    if args.ledger is None and args.key is None:
        return None
    if args.ledger is None or args.key is None:
        return "--ledger and --key go together"
    from ledger.errors import LedgerError
    from mesh.identity import IdentityError

    try:
        with Ledger.open(args.ledger, Identity.load(args.key)) as led:
            record(led, rec, now)
    except (LedgerError, IdentityError, OSError) as exc:
        return f"cannot record in the ledger: {exc}"
    return None
