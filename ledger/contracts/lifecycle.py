"""What every contract shares: creation, roles, the auditor's flags, and parent/child spawning.

One record per contract at key ``c/<id>``. Its ``log`` is append-only: the provisional flag,
then the definitive flag (an auditor approved) or the rejected flag, each with who signed it,
when, in which transaction and why. Nothing is ever rewritten except by appending.

Children compete per *slot* of their parent (say one charging session or one interchange):
all are recorded, and the parent's selection rule picks one, deterministically:

* ``first``: the earliest candidate in canonical replay order;
* ``lowest:<term>``: the smallest integer term of the child (a price, say), ties to the
  earlier one; a child without that term loses to any that has it.

Rejected candidates never win. The others are marked ``superseded``. Because the rule is a
function of the candidate set and the canonical order only, every node that holds the same
transactions selects the same child, even if it saw the children in another order.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ledger.contracts import codec
from ledger.contracts.errors import (
    InvalidTransaction,
    PermissionDenied,
    UnknownContract,
    WrongStatus,
)
from ledger.contracts.model import (
    AUDITOR,
    MEMBER,
    OPERATOR,
    OWNER,
    ROLES,
    Context,
    Event,
    Result,
    StateView,
    Template,
    need,
    need_hex_id,
)

PROVISIONAL = "provisional"
DEFINITIVE = "definitive"
REJECTED = "rejected"
SELECTED = "selected"
SUPERSEDED = "superseded"
MAX_DEPTH = 8
"""Deepest parent chain a spawn may build (keeps role look-ups bounded)."""
MAX_CANDIDATES = 64
"""Competing children per slot that are recorded; more are refused."""

GENERIC_ROLES: Mapping[str, frozenset[str]] = {
    "grant": frozenset({OWNER}),
    "revoke": frozenset({OWNER}),
    "approve": frozenset({AUDITOR}),
    "reject": frozenset({AUDITOR}),
    "spawn": frozenset({OWNER, MEMBER, OPERATOR}),
}


def created_id(tx_id: bytes) -> str:
    """The id that a ``create`` transaction with this id gives its contract."""
    return codec.digest(b"contract", tx_id)[:12].hex()


def child_id(parent: str, template: str, slot: str, params: Mapping[str, Any]) -> str:
    """A child's id: from its parent, template, slot and parameters (as the spawn gave them)."""
    return codec.digest(b"child", parent.encode(), template.encode(), slot.encode(),
                        codec.encode(dict(params)))[:12].hex()


def contract_key(cid: str) -> str:
    return "c/" + cid


def load(state: StateView, cid: str) -> dict[str, Any]:
    rec = state.get(contract_key(cid))
    if rec is None:
        raise UnknownContract(f"no contract {cid}")
    return dict(rec)


def roles_of(state: StateView, cid: str, who: str) -> set[str]:
    """Roles `who` holds on `cid`: its own grants plus those of every ancestor."""
    found: set[str] = set()
    current: str | None = cid
    depth = 0
    while current is not None and depth <= MAX_DEPTH:
        rec = state.get(contract_key(current))
        if rec is None:
            break
        roles = rec["roles"]
        for role in ROLES:
            if who in roles.get(role, ()):
                found.add(role)
        current = rec.get("parent")
        depth += 1
    return found


def _roles_arg(raw: Any, owner: str) -> dict[str, list[str]]:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InvalidTransaction("roles must be a map of role -> list of node ids")
    roles: dict[str, list[str]] = {role: [] for role in ROLES}
    for role in sorted(raw):
        if role not in ROLES:
            raise InvalidTransaction(f"unknown role {role!r}")
        ids = raw[role]
        if not isinstance(ids, list) or len(ids) > 256:
            raise InvalidTransaction(f"role {role!r} needs a list of at most 256 node ids")
        roles[role] = sorted({need_hex_id({"id": i}, "id") for i in ids})
    if owner not in roles[OWNER]:
        roles[OWNER] = sorted([*roles[OWNER], owner])
    return roles


def _flag(flag: str, ctx: Context, reason: str) -> dict[str, Any]:
    return {"flag": flag, "by": ctx.author, "time_ms": ctx.time_ms, "tx": ctx.tx_id,
            "reason": reason}


def create(ctx: Context, state: StateView, templates: Mapping[str, Template],
           payload: Mapping[str, Any]) -> Result:
    """A new top-level contract; its author is an owner. With auditors it starts provisional."""
    name = need(payload, "template", str)
    template = templates.get(name)
    if template is None:
        raise UnknownContract(f"no template {name!r}")
    assert ctx.author is not None
    params = template.validate_params(need(payload, "params", dict))
    roles = _roles_arg(payload.get("roles"), ctx.author)
    cid = created_id(bytes.fromhex(ctx.tx_id))
    status = PROVISIONAL if roles[AUDITOR] else DEFINITIVE
    rec = {"id": cid, "template": name, "parent": None, "slot": None, "selection": None,
           "params": params, "roles": roles, "status": status, "created_by": ctx.author,
           "created_ms": ctx.time_ms, "tx": ctx.tx_id,
           "log": [_flag(status, ctx, "created")]}
    rec = template.on_created(state, rec)
    return Result(writes={contract_key(cid): rec},
                  events=(Event("created", cid, f"{name} {status}"),))


def grant(ctx: Context, state: StateView, cid: str, args: Mapping[str, Any],
          add: bool) -> Result:
    role = need(args, "role", str)
    if role not in ROLES:
        raise InvalidTransaction(f"unknown role {role!r}")
    node = need_hex_id(args, "node")
    rec = load(state, cid)
    roles = {r: list(ids) for r, ids in rec["roles"].items()}
    members = set(roles.get(role, ()))
    if add:
        members.add(node)
    else:
        if role == OWNER and members == {node}:
            raise InvalidTransaction("cannot remove the last owner")
        members.discard(node)
    roles[role] = sorted(members)
    rec["roles"] = roles
    verb = "granted" if add else "revoked"
    return Result(writes={contract_key(cid): rec},
                  events=(Event(verb, cid, f"{role} {node}"),))


def decide(ctx: Context, state: StateView, cid: str, args: Mapping[str, Any],
           approve: bool) -> Result:
    """An auditor's approval (definitive flag) or rejection of a provisional contract."""
    reason = need(args, "reason", str)
    if len(reason) > 500:
        raise InvalidTransaction("reason longer than 500 characters")
    rec = load(state, cid)
    if rec["status"] != PROVISIONAL:
        raise WrongStatus(f"contract {cid} is {rec['status']}, not provisional")
    flag = DEFINITIVE if approve else REJECTED
    rec["status"] = flag
    rec["log"] = [*rec["log"], _flag(flag, ctx, reason)]
    writes: dict[str, Any] = {contract_key(cid): rec}
    events = [Event(flag, cid, reason)]
    if rec["parent"] is not None and rec["slot"] is not None:
        sel = reselect(state, rec["parent"], rec["slot"], {cid: rec})
        writes.update(sel.writes)
        events.extend(sel.events)
    return Result(writes=writes, events=tuple(events))


def spawn(ctx: Context, state: StateView, templates: Mapping[str, Template], parent_id: str,
          args: Mapping[str, Any]) -> Result:
    """A child of `parent_id` whose id is derived from parent, template and parameters."""
    parent = load(state, parent_id)
    if parent["status"] != DEFINITIVE or parent["selection"] == SUPERSEDED:
        raise WrongStatus(f"parent {parent_id} is {parent['status']}/{parent['selection']}")
    name = need(args, "template", str)
    allowed = parent["params"].get("children", [])
    if name not in allowed:
        raise PermissionDenied(f"parent {parent_id} does not spawn {name!r} (allows {allowed})")
    template = templates[name]
    raw_params = need(args, "params", dict)
    params = template.validate_params(raw_params)
    slot = need(args, "slot", str)
    if not slot or len(slot) > 100:
        raise InvalidTransaction("slot must be 1..100 characters")
    depth, cur = 0, parent
    while cur.get("parent") is not None:
        depth += 1
        if depth >= MAX_DEPTH:
            raise InvalidTransaction(f"children nest at most {MAX_DEPTH} deep")
        cur = load(state, cur["parent"])
    cid = child_id(parent_id, name, slot, raw_params)
    if contract_key(cid) in state:
        return Result(events=(Event("duplicate_child", cid, f"already spawned in {slot}"),))
    assert ctx.author is not None
    audited = bool(parent["params"].get("audit_children")) and bool(parent["roles"][AUDITOR])
    status = PROVISIONAL if audited else DEFINITIVE
    rec = {"id": cid, "template": name, "parent": parent_id, "slot": slot, "selection": None,
           "params": params, "roles": _roles_arg({}, ctx.author), "status": status,
           "created_by": ctx.author, "created_ms": ctx.time_ms, "tx": ctx.tx_id,
           "log": [_flag(status, ctx, f"spawned from {parent_id}")]}
    rec = template.on_created(state, rec)
    sel = reselect(state, parent_id, slot, {cid: rec}, new=cid)
    writes: dict[str, Any] = {contract_key(cid): rec}
    writes.update(sel.writes)
    return Result(writes=writes, events=(Event("spawned", cid, f"{parent_id}/{slot}"),
                                         *sel.events))


def slot_key(parent_id: str, slot: str) -> str:
    return f"s/{parent_id}/{slot}"


def reselect(state: StateView, parent_id: str, slot: str,
             pending: dict[str, dict[str, Any]], new: str | None = None) -> Result:
    """Apply the parent's selection rule to the slot's candidates; mark winner and losers.

    `pending` holds child records already changed in this call (not yet in the state).
    """
    parent = load(state, parent_id)
    rule = parent["params"].get("select", "first")
    slot_rec = state.get(slot_key(parent_id, slot)) or {"candidates": [], "selected": None}
    candidates = list(slot_rec["candidates"])
    if new is not None:
        if len(candidates) >= MAX_CANDIDATES:
            raise InvalidTransaction(f"slot {slot} already has {MAX_CANDIDATES} candidates")
        candidates.append(new)
    recs = {c: pending[c] if c in pending else dict(state.get(contract_key(c)))
            for c in candidates}
    eligible = [c for c in candidates if recs[c]["status"] != REJECTED]
    winner: str | None = None
    if eligible:
        if rule == "first":
            winner = eligible[0]
        else:
            param = rule.split(":", 1)[1]
            order = {c: i for i, c in enumerate(candidates)}
            winner = min(eligible, key=lambda c: (_int_param(recs[c], param), order[c]))
    writes: dict[str, Any] = {slot_key(parent_id, slot): {"candidates": candidates,
                                                          "selected": winner}}
    events: list[Event] = []
    for c in candidates:
        mark = SELECTED if c == winner else SUPERSEDED
        if recs[c]["selection"] != mark:
            rec = dict(recs[c])
            rec["selection"] = mark
            writes[contract_key(c)] = rec
            events.append(Event(mark, c, f"{parent_id}/{slot}"))
        elif c in pending:
            writes[contract_key(c)] = recs[c]
    return Result(writes=writes, events=tuple(events))


def _int_param(rec: Mapping[str, Any], name: str) -> int:
    value = rec["params"].get("terms", {}).get(name)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return 1 << 62


def validate_select(value: Any) -> str:
    """A selection rule: "first" or "lowest:<param>"."""
    if value == "first":
        return "first"
    if isinstance(value, str) and value.startswith("lowest:") and len(value) > 7:
        return value
    raise InvalidTransaction(f"select must be 'first' or 'lowest:<param>', got {value!r}")
