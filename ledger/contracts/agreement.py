"""The agreement template: a service agreement (parent) or a per-session child of one.

Parameters: ``title`` (text), ``rules`` (see rules.py), ``children`` (templates it may spawn),
``select`` (selection rule among competing children), ``audit_children`` (children start
provisional and need an auditor), and ``terms`` (named integers such as ``price`` that a
selection rule may use). Usage records are checked against the rules, narrowed along the
parent chain, and always kept: a record that is not permitted is stored flagged, with reasons.
The server that records it may put its own determination in the transaction (the patent's
"transaction data with the determination"); every node recomputes it and stores whether the
server's claim agrees.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any, ClassVar

from ledger.contracts import lifecycle
from ledger.contracts.errors import InvalidTransaction, PermissionDenied
from ledger.contracts.model import (
    MEMBER,
    OPERATOR,
    OWNER,
    Context,
    Event,
    Result,
    StateView,
    Template,
    need,
)
from ledger.contracts.rules import Rules, determine, parse_rules, parse_usage

_KNOWN = {"title", "rules", "children", "select", "audit_children", "terms"}


class Agreement(Template):
    """Agreements, their children, and usage records checked against their rules."""

    NAME = "agreement"
    ROLES_FOR: ClassVar[Mapping[str, frozenset[str]]] = {
        **lifecycle.GENERIC_ROLES,
        "record_usage": frozenset({OPERATOR, MEMBER, OWNER}),
    }

    def validate_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(params) - _KNOWN)
        if unknown:
            raise InvalidTransaction(f"unknown agreement parameters {unknown}")
        out: dict[str, Any] = {"title": params.get("title", "")}
        if not isinstance(out["title"], str) or len(out["title"]) > 200:
            raise InvalidTransaction("title must be text of at most 200 characters")
        if "rules" in params:
            checked = parse_rules(params["rules"]).to_data()
            out["rules"] = {k: v for k, v in checked.items() if k in params["rules"]}
        children = params.get("children", [])
        if not isinstance(children, list) or any(c != self.NAME for c in children):
            raise InvalidTransaction(f"children may only be [{self.NAME!r}]")
        out["children"] = sorted(set(children))
        out["select"] = lifecycle.validate_select(params.get("select", "first"))
        out["audit_children"] = bool(params.get("audit_children", False))
        terms = params.get("terms", {})
        if not isinstance(terms, dict) or len(terms) > 32 or any(
                not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, int)
                for k, v in terms.items()):
            raise InvalidTransaction("terms must map names to integers (at most 32)")
        out["terms"] = {k: terms[k] for k in sorted(terms)}
        return out

    def on_created(self, state: StateView, record: dict[str, Any]) -> dict[str, Any]:
        """Store the effective rules: the parent's, narrowed by this contract's own."""
        base = Rules()
        if record["parent"] is not None:
            base = Rules.from_data(lifecycle.load(state, record["parent"])["rules"])
        own = record["params"].get("rules")
        narrow = None
        if own is not None:
            narrow = parse_rules(own)
            if "period_ms" not in own:
                narrow = replace(narrow, period_ms=base.period_ms)
        rules = base.narrowed_by(narrow)
        return {**record, "rules": rules.to_data()}

    def call_record_usage(self, ctx: Context, state: StateView, cid: str,
                          args: Mapping[str, Any]) -> Result:
        record = parse_usage(need(args, "record", dict))
        assert ctx.author is not None
        author_roles = lifecycle.roles_of(state, cid, ctx.author)
        if not author_roles & {OPERATOR, OWNER} and record.user != ctx.author:
            raise PermissionDenied("a member may record only its own usage")
        rec = lifecycle.load(state, cid)
        contract_ok: str | None = None
        if rec["status"] != lifecycle.DEFINITIVE:
            contract_ok = f"contract is {rec['status']}, not definitive"
        elif rec["selection"] == lifecycle.SUPERSEDED:
            contract_ok = "contract was superseded by another child"
        rules = rec["rules"]
        period = record.time_ms // rules["period_ms"]
        quota_key = f"q/{cid}/{record.user}/{period}"
        used_wh, used_count = state.get(quota_key) or (0, 0)
        is_member = bool(lifecycle.roles_of(state, cid, record.user) & {MEMBER, OWNER})
        reasons = determine(record, rules, is_member=is_member, block_time_ms=ctx.time_ms,
                            used_wh=used_wh, used_count=used_count, contract_ok=contract_ok)
        entry: dict[str, Any] = {"service": record.service, "user": record.user,
                                 "wh": record.wh, "time_ms": record.time_ms,
                                 "by": ctx.author, "tx": ctx.tx_id,
                                 "permitted": not reasons, "reasons": reasons}
        events = []
        claimed = args.get("determination")
        if claimed is not None:
            if (not isinstance(claimed, dict) or not isinstance(claimed.get("permitted"), bool)
                    or not isinstance(claimed.get("reasons"), list)):
                raise InvalidTransaction("determination must be {permitted: bool, reasons: []}")
            entry["claimed"] = {"permitted": claimed["permitted"],
                                "reasons": [str(r)[:300] for r in claimed["reasons"][:16]]}
            entry["agrees"] = entry["claimed"] == {"permitted": not reasons, "reasons": reasons}
            if not entry["agrees"]:
                events.append(Event("determination_differs", cid,
                                    f"{ctx.author} said permitted={claimed['permitted']}"))
        count_key = f"n/{cid}"
        n = state.get(count_key, 0)
        writes: dict[str, Any] = {count_key: n + 1, f"u/{cid}/{n:08d}": entry}
        if not reasons:
            writes[quota_key] = [used_wh + record.wh, used_count + 1]
        kind = "usage_permitted" if not reasons else "usage_flagged"
        return Result(writes=writes,
                      events=(Event(kind, cid, "; ".join(reasons)), *events))
