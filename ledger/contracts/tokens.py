"""The tokens template: integer balances, scheduled transfers, fees from settled history.

A transfer is two linked transactions by the same author: ``transfer`` (amount, recipient,
scheduled time) and ``fee`` (the fee quantity, naming the transfer). Each holds its tokens
when it is applied, so no available balance ever goes negative: of two spends of the same
tokens (say by two vehicles sharing a fleet account in two partitions), the one later in the
canonical order fails with ``insufficient_funds``, visibly, on every node.

At the scheduled time the engine fires ``settle``: the fee due is a pure function of the
payer's *settled* outgoing volume in the window before that time (volume tiers). The fee
transaction's quantity must cover it; the due fee is charged and any excess released. A fee
that does not cover it fails the transfer (``fee_mismatch``) and releases both holds.
Tiers must not raise the rate with volume, so a quote made from the history a node knows
(`quote_fee`) always covers the fee due later: more settled history only lowers the rate.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from ledger.contracts import lifecycle
from ledger.contracts.errors import (
    FeeMismatch,
    InsufficientFunds,
    InvalidTransaction,
    PermissionDenied,
    WrongStatus,
)
from ledger.contracts.model import (
    ANYONE,
    OPERATOR,
    OWNER,
    Context,
    Event,
    Result,
    StateView,
    Template,
    Timer,
    need,
    need_hex_id,
)

MAX_AMOUNT = 10**15
MAX_SCHEDULE_MS = 366 * 86_400_000
"""Furthest ahead of its block a transfer may be scheduled (tokens stay held until then)."""
MAX_HISTORY = 1000
"""Settled entries an account keeps before entries older than two windows are dropped."""


def fee_for(amount: int, volume: int, tiers: Sequence[Sequence[int]], min_fee: int) -> int:
    """Fee for `amount` given the payer's settled `volume` in the window.

    `tiers` are (min_volume, basis points) sorted by min_volume; the highest tier reached
    applies. The fee is rounded up, and never below `min_fee`.
    """
    bps = tiers[0][1] if tiers else 0
    for min_volume, rate in tiers:
        if volume >= min_volume:
            bps = rate
    return max(min_fee, -(-amount * bps // 10_000))


def _settled_before(history: Sequence[Sequence[int]], t_ms: int) -> int:
    """Total settled strictly before `t_ms`. Entries are [time, amount, running total]."""
    i = bisect_left(history, t_ms, key=lambda e: e[0])
    if i > 0:
        return int(history[i - 1][2])
    return int(history[0][2] - history[0][1]) if history else 0


def window_volume(history: Sequence[Sequence[int]], at_ms: int, window_ms: int) -> int:
    """Sum of settled amounts with time in [at_ms - window_ms, at_ms): two binary searches."""
    return _settled_before(history, at_ms) - _settled_before(history, at_ms - window_ms)


def with_entry(history: Sequence[Sequence[int]], at_ms: int, amount: int) -> list[list[int]]:
    """A new history with a settlement inserted in time order (running totals redone)."""
    entries = sorted([[e[0], e[1]] for e in history] + [[at_ms, amount]], key=lambda e: e[0])
    total = _settled_before(history, -(1 << 62))
    out = []
    for t, a in entries:
        total += a
        out.append([t, a, total])
    return out


def _amount(args: Mapping[str, Any], name: str) -> int:
    value = need(args, name, int)
    if value <= 0 or value > MAX_AMOUNT:
        raise InvalidTransaction(f"{name} must be within 1..{MAX_AMOUNT}")
    return int(value)


def _account(args: Mapping[str, Any], name: str) -> str:
    value = need(args, name, str)
    if value.startswith("shared:") and 7 < len(value) <= 64:
        return str(value)
    return need_hex_id(args, name)


class Tokens(Template):
    """One token: balances per account (a node id, or a ``shared:`` account with holders)."""

    NAME = "tokens"
    ROLES_FOR: ClassVar[Mapping[str, frozenset[str]]] = {
        **lifecycle.GENERIC_ROLES,
        "mint": frozenset({OWNER, OPERATOR}),
        "share": frozenset({OWNER}),
        "transfer": frozenset({ANYONE}),
        "fee": frozenset({ANYONE}),
    }
    TIMERS = frozenset({"settle"})

    def validate_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(params) - {"title", "fee_account", "window_ms", "tiers", "min_fee"})
        if unknown:
            raise InvalidTransaction(f"unknown tokens parameters {unknown}")
        fee_account = _account(params, "fee_account")
        window = params.get("window_ms", 30 * 86_400_000)
        min_fee = params.get("min_fee", 0)
        tiers = params.get("tiers", [[0, 0]])
        for name, value in (("window_ms", window), ("min_fee", min_fee)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidTransaction(f"{name} must be a non-negative integer")
        if not isinstance(tiers, list) or not 1 <= len(tiers) <= 16:
            raise InvalidTransaction("tiers must be a list of 1..16 [min_volume, bps]")
        last: tuple[int, int] | None = None
        for tier in tiers:
            if (not isinstance(tier, list) or len(tier) != 2
                    or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                               for v in tier) or tier[1] > 10_000):
                raise InvalidTransaction(f"tier {tier!r} is not [min_volume, bps<=10000]")
            if last is not None and (tier[0] <= last[0] or tier[1] > last[1]):
                raise InvalidTransaction("tiers need rising min_volume and non-rising bps")
            last = (tier[0], tier[1])
        title = params.get("title", "")
        if not isinstance(title, str) or len(title) > 200:
            raise InvalidTransaction("title must be text of at most 200 characters")
        return {"title": title, "fee_account": fee_account, "window_ms": window,
                "tiers": tiers, "min_fee": min_fee}

    @staticmethod
    def _active(state: StateView, cid: str) -> dict[str, Any]:
        rec = lifecycle.load(state, cid)
        if rec["status"] != lifecycle.DEFINITIVE:
            raise WrongStatus(f"token contract {cid} is {rec['status']}")
        return rec

    @staticmethod
    def _may_spend(state: StateView, cid: str, account: str, who: str) -> None:
        if account == who:
            return
        holders = state.get(f"a/{cid}/{account}")
        if holders is None or who not in holders:
            raise PermissionDenied(f"{who} may not spend from {account}")

    def call_mint(self, ctx: Context, state: StateView, cid: str,
                  args: Mapping[str, Any]) -> Result:
        self._active(state, cid)
        account = _account(args, "account")
        amount = _amount(args, "amount")
        key = f"b/{cid}/{account}"
        balance = state.get(key, 0) + amount
        if balance > MAX_AMOUNT:
            raise InvalidTransaction("balance would exceed the maximum amount")
        return Result(writes={key: balance},
                      events=(Event("minted", cid, f"{amount} to {account}"),))

    def call_share(self, ctx: Context, state: StateView, cid: str,
                   args: Mapping[str, Any]) -> Result:
        self._active(state, cid)
        account = _account(args, "account")
        if not account.startswith("shared:"):
            raise InvalidTransaction("a shared account name starts with 'shared:'")
        holders = need(args, "holders", list)
        if not holders or len(holders) > 64:
            raise InvalidTransaction("holders must list 1..64 node ids")
        ids = sorted({need_hex_id({"h": h}, "h") for h in holders})
        return Result(writes={f"a/{cid}/{account}": ids},
                      events=(Event("shared", cid, f"{account}: {', '.join(ids)}"),))

    def call_transfer(self, ctx: Context, state: StateView, cid: str,
                      args: Mapping[str, Any]) -> Result:
        self._active(state, cid)
        assert ctx.author is not None
        source = _account(args, "from")
        target = _account(args, "to")
        amount = _amount(args, "amount")
        at_ms = max(int(need(args, "at_ms", int)), ctx.time_ms)
        if at_ms > ctx.time_ms + MAX_SCHEDULE_MS:
            raise InvalidTransaction(f"a transfer is scheduled at most {MAX_SCHEDULE_MS} ms "
                                     f"after its block")
        self._may_spend(state, cid, source, ctx.author)
        balance = state.get(f"b/{cid}/{source}", 0)
        held = state.get(f"h/{cid}/{source}", 0)
        if balance - held < amount:
            raise InsufficientFunds(f"{source} has {balance - held} available, "
                                    f"transfer needs {amount}")
        transfer = {"from": source, "to": target, "amount": amount, "at_ms": at_ms,
                    "author": ctx.author, "time_ms": ctx.time_ms, "status": "scheduled",
                    "fee_tx": None, "fee": 0, "fee_charged": None, "reason": ""}
        return Result(
            writes={f"h/{cid}/{source}": held + amount, f"t/{cid}/{ctx.tx_id}": transfer},
            events=(Event("scheduled", cid, f"{amount} {source}->{target} at {at_ms}"),),
            timers=(Timer(at_ms, cid, "settle", {"transfer": ctx.tx_id}),))

    def call_fee(self, ctx: Context, state: StateView, cid: str,
                 args: Mapping[str, Any]) -> Result:
        self._active(state, cid)
        transfer_id = need(args, "transfer", str)
        fee = need(args, "fee", int)
        if fee < 0 or fee > MAX_AMOUNT:
            raise InvalidTransaction(f"fee must be within 0..{MAX_AMOUNT}")
        key = f"t/{cid}/{transfer_id}"
        transfer = state.get(key)
        if transfer is None:
            failed = state.get("x/" + transfer_id)
            if failed is not None:
                raise WrongStatus(f"transfer {transfer_id} failed ({failed[0]}): no fee held")
            raise InvalidTransaction(f"no scheduled transfer {transfer_id} to pay a fee for")
        if transfer["author"] != ctx.author:
            raise PermissionDenied("only the transfer's author pays its fee")
        if transfer["status"] != "scheduled" or transfer["fee_tx"] is not None:
            raise WrongStatus(f"transfer {transfer_id} is {transfer['status']} "
                              f"with fee tx {transfer['fee_tx']}")
        source = transfer["from"]
        balance = state.get(f"b/{cid}/{source}", 0)
        held = state.get(f"h/{cid}/{source}", 0)
        if balance - held < fee:
            raise InsufficientFunds(f"{source} has {balance - held} available, fee needs {fee}")
        updated = dict(transfer)
        updated["fee_tx"] = ctx.tx_id
        updated["fee"] = fee
        return Result(writes={key: updated, f"h/{cid}/{source}": held + fee,
                              f"f/{cid}/{ctx.tx_id}": {"transfer": transfer_id, "fee": fee}},
                      events=(Event("fee_held", cid, f"{fee} for {transfer_id}"),))

    def call_settle(self, ctx: Context, state: StateView, cid: str,
                    args: Mapping[str, Any]) -> Result:
        """Fired by the engine at the scheduled time; failures are written, not raised."""
        rec = lifecycle.load(state, cid)
        transfer_id = need(args, "transfer", str)
        key = f"t/{cid}/{transfer_id}"
        transfer = dict(state.get(key))
        if transfer["status"] != "scheduled":
            return Result()
        source, target = transfer["from"], transfer["to"]
        amount, fee = transfer["amount"], transfer["fee"]
        at_ms = transfer["at_ms"]
        held_key = f"h/{cid}/{source}"
        held = state.get(held_key, 0)
        hist_key = f"v/{cid}/{source}"
        history = state.get(hist_key, [])
        params = rec["params"]
        ctx.meter.step(2)
        due = fee_for(amount, window_volume(history, at_ms, params["window_ms"]),
                      params["tiers"], params["min_fee"])
        writes: dict[str, Any] = {held_key: held - amount - fee}
        if transfer["fee_tx"] is None or fee < due:
            why = (FeeMismatch(f"fee {fee} does not cover the {due} due")
                   if transfer["fee_tx"] is not None
                   else FeeMismatch(f"no fee transaction before {at_ms}; {due} due"))
            transfer.update(status="failed", reason=f"{why.code}: {why}")
            writes[key] = transfer
            return Result(writes=writes, events=(Event("transfer_failed", cid,
                                                       transfer["reason"]),))
        fee_account = params["fee_account"]
        deltas: dict[str, int] = {source: -amount - due}
        deltas[target] = deltas.get(target, 0) + amount
        deltas[fee_account] = deltas.get(fee_account, 0) + due
        for account in sorted(deltas):
            k = f"b/{cid}/{account}"
            writes[k] = writes.get(k, state.get(k, 0)) + deltas[account]
        appends: dict[str, tuple[Any, ...]] = {}
        horizon = at_ms - 2 * params["window_ms"]
        if history and (history[-1][0] > at_ms or (len(history) > MAX_HISTORY
                                                    and history[0][0] < horizon)):
            ctx.meter.step(len(history))
            writes[hist_key] = [e for e in with_entry(history, at_ms, amount)
                                if e[0] >= horizon]
        else:
            total = history[-1][2] if history else 0
            appends[hist_key] = ([at_ms, amount, total + amount],)
        transfer.update(status="settled", fee_charged=due)
        writes[key] = transfer
        return Result(writes=writes, appends=appends,
                      events=(Event("settled", cid, f"{amount} {source}->{target}, fee {due}"),))


def quote_fee(state: Mapping[str, Any], cid: str, account: str, amount: int,
              at_ms: int) -> int:
    """The fee to put in a fee transaction, from the settled history this node knows."""
    params = state[f"c/{cid}"]["params"]
    history = state.get(f"v/{cid}/{account}", [])
    return fee_for(amount, window_volume(history, at_ms, params["window_ms"]),
                   params["tiers"], params["min_fee"])
