"""Builders of contract transaction bodies (what an author appends to its ledger).

A body is a plain map, registered with the ledger as transaction type ``contract.tx``:

* ``{"v": 1, "op": "create", "template": T, "params": {...}, "roles": {role: [node ids]}}``
* ``{"v": 1, "op": "call", "contract": ID, "method": M, "args": {...}}``

Generic methods of every contract: ``grant``/``revoke`` (role, node), ``approve``/``reject``
(reason), ``spawn`` (template, slot, params). Template methods: agreement ``record_usage``
(record); tokens ``mint``, ``share``, ``transfer``, ``fee`` (see their modules).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ledger.contracts import TX_TYPE as TX_TYPE
from ledger.contracts.lifecycle import child_id, created_id

PAYLOAD_VERSION = 1


def create(template: str, params: Mapping[str, Any],
           roles: Mapping[str, Sequence[str]] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"v": PAYLOAD_VERSION, "op": "create", "template": template,
                            "params": dict(params)}
    if roles:
        body["roles"] = {k: list(v) for k, v in roles.items()}
    return body


def call(contract: str, method: str, **args: Any) -> dict[str, Any]:
    return {"v": PAYLOAD_VERSION, "op": "call", "contract": contract, "method": method,
            "args": args}


__all__ = ["PAYLOAD_VERSION", "TX_TYPE", "call", "child_id", "create", "created_id"]
