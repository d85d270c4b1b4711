"""The replay engine: canonical order in, state, state hash and history out.

`Engine.replay` sorts the transactions (see tx.py for the order and why), then applies them
one by one. Before each transaction it fires the timers due strictly before that
transaction's block time, in (time, scheduling order) order: a timer set for time T runs after
every transaction stamped T or earlier, so a transfer and its fee signed in one block at T are
both seen by a settlement at T. A call that raises a `ContractError` changes
nothing but is recorded, in the history and in the state (``x/<tx id>``), so that the state
hash also proves that every node refused the same transactions for the same reason.

Finality: the transactions covered by backhaul checkpoints come first in the order; after the
last of them the engine fires the timers due by the newest checkpoint's time and takes the
*final* state hash. Everything after that is provisional.
"""

from __future__ import annotations

import copy
import hashlib
import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ledger.contracts import codec, lifecycle
from ledger.contracts.agreement import Agreement
from ledger.contracts.errors import (
    ContractError,
    InvalidTransaction,
    PermissionDenied,
    UnknownContract,
    UnknownMethod,
)
from ledger.contracts.model import ANYONE, Context, Event, Meter, Result, StateView, Template
from ledger.contracts.payloads import PAYLOAD_VERSION
from ledger.contracts.snapshot import Snapshot, TimerRow
from ledger.contracts.tokens import Tokens
from ledger.contracts.tx import NOT_FINAL, Checkpoint, ContractTx, canonical_order

DEFAULT_STEP_BUDGET = 10_000


def default_templates() -> dict[str, Template]:
    """A fresh template table: the agreement and tokens templates."""
    return {Agreement.NAME: Agreement(), Tokens.NAME: Tokens()}


class HistoryEntry(NamedTuple):
    """One applied transaction or fired timer, in replay order (immutable)."""

    position: int
    tx_id: str
    author: str | None
    time_ms: int
    op: str
    contract: str | None
    method: str
    ok: bool
    code: str
    message: str
    events: tuple[Event, ...]
    final: bool


@dataclass(slots=True)
class Replay:
    """The outcome of one replay. `state` maps keys to plain data (see model.py)."""

    state: dict[str, Any]
    history: list[HistoryEntry]
    state_hash: str
    final_hash: str
    final_count: int
    """Transactions of this replay's history that are final."""
    final_state: dict[str, Any] = field(default_factory=dict)
    final_heights: dict[bytes, int] = field(default_factory=dict)
    """Per author node id, the highest feed height in the final state."""
    final_time_ms: int | None = None
    final_timers: tuple[TimerRow, ...] = ()
    final_timer_seq: int = 0
    final_total: int = 0
    """Final transactions including those a base snapshot covered."""

    def snapshot(self) -> Snapshot | None:
        """The final state as a snapshot to replay from later (None: nothing final)."""
        if self.final_time_ms is None:
            return None
        raw = codec.encode(self.final_state)
        return Snapshot(heights=dict(self.final_heights), time_ms=self.final_time_ms,
                        raw_state=raw, state_hash=self.final_hash, timers=self.final_timers,
                        timer_seq=self.final_timer_seq, count=self.final_total)

    @property
    def applied(self) -> int:
        return sum(1 for h in self.history if h.op != "timer")

    @property
    def failed(self) -> int:
        return sum(1 for h in self.history if not h.ok)

    def contracts(self) -> list[dict[str, Any]]:
        return [v for k, v in sorted(self.state.items()) if k.startswith("c/")]

    def pending_for(self, auditor: str | None) -> list[dict[str, Any]]:
        """Provisional contracts that `auditor` may decide (all of them when None)."""
        view = StateView(self.state, Meter(1 << 62))
        return [c for c in self.contracts() if c["status"] == lifecycle.PROVISIONAL and (
            auditor is None or "auditor" in lifecycle.roles_of(view, c["id"], auditor))]

    def is_final(self, key: str) -> bool:
        """True when `key` has the same value in the final state (a checkpoint covers it)."""
        return key in self.final_state and self.final_state[key] == self.state.get(key)


def state_hash(state: Mapping[str, Any]) -> str:
    return hashlib.sha256(codec.encode(dict(state))).hexdigest()


class Engine:
    """Replays contract transactions. Holds only configuration, so one engine serves many."""

    def __init__(self, *, templates: Mapping[str, Template] | None = None,
                 step_budget: int = DEFAULT_STEP_BUDGET) -> None:
        self.templates = dict(templates) if templates is not None else default_templates()
        self.step_budget = step_budget

    def replay(self, txs: Iterable[ContractTx], checkpoints: Sequence[Checkpoint] = (),
               as_of_ms: int | None = None, base: Snapshot | None = None) -> Replay:
        """Rebuild state from nothing, or from `base` (transactions it covers are skipped).

        `as_of_ms` (default: newest block or checkpoint time) is the time up to which
        scheduled timers fire at the end.
        """
        run = _Run(self)
        cp_time = max((c.time_ms for c in checkpoints), default=None)
        heights: dict[bytes, int] = {}
        if base is not None:
            run.state = base.state()
            run.timers = [(*t[:5], dict(t[5])) for t in base.timers]
            heapq.heapify(run.timers)
            run.seq = base.timer_seq
            txs = [tx for tx in txs if not base.covers(tx)]
            cp_time = max(cp_time if cp_time is not None else base.time_ms, base.time_ms)
            heights.update(base.heights)
        ordered = canonical_order(txs, checkpoints)
        in_final = True
        latest = cp_time if cp_time is not None else 0
        for epoch, tx in ordered:
            if in_final and epoch == NOT_FINAL:
                in_final = False
                run.seal_final(cp_time)
            latest = max(latest, tx.time_ms)
            run.fire_timers(tx.time_ms - 1, final=in_final and epoch != NOT_FINAL)
            run.apply(tx, final=epoch != NOT_FINAL)
            if epoch != NOT_FINAL:
                heights[tx.author] = max(heights.get(tx.author, -1), tx.height)
        if in_final:
            run.seal_final(cp_time)
        run.fire_timers(latest if as_of_ms is None else as_of_ms, final=False)
        return Replay(state=run.state, history=run.history, state_hash=state_hash(run.state),
                      final_hash=run.final_hash, final_count=run.final_count,
                      final_state=run.final_state, final_heights=heights,
                      final_time_ms=cp_time, final_timers=run.final_timers,
                      final_timer_seq=run.final_seq,
                      final_total=(base.count if base is not None else 0) + run.final_count)

    def preview(self, state: dict[str, Any], author: bytes, time_ms: int,
                payload: Mapping[str, Any]) -> Preview:
        """Run one transaction against `state` (a replay's) without changing it: what the
        CLI checks before it appends, and what an operator reports as its determination.
        Timers due before `time_ms` are not fired first."""
        run = _Run(self)
        run.state = state
        run.dry_run = []
        tx = ContractTx(tx_id=codec.digest(b"preview", author, codec.encode(dict(payload))),
                        author=author, time_ms=time_ms, height=0, index=0,
                        payload=dict(payload))
        run.apply(tx, final=False)
        if run.dry_run:
            return Preview(True, "ok", "", run.dry_run[0])
        entry = run.history[-1]
        return Preview(False, entry.code, entry.message, None)


def _execute(call: Any) -> Result | ContractError:
    try:
        result: Result = call()
    except ContractError as exc:
        return exc
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, ArithmeticError,
            RecursionError) as exc:
        # Untrusted data reached a corner the validators missed: refuse the transaction,
        # deterministically (the class name only: messages differ between versions).
        return InvalidTransaction(f"rejected by the contract ({type(exc).__name__})")
    return result


@dataclass(frozen=True, slots=True)
class Preview:
    """What a transaction would do if applied now: its outcome and, if accepted, its writes."""

    ok: bool
    code: str
    message: str
    result: Result | None


class _Run:
    """The mutable part of one replay (kept out of Engine so that engines are reusable)."""

    def __init__(self, engine: Engine) -> None:
        self.templates = engine.templates
        self.budget = engine.step_budget
        self.dry_run: list[Result] | None = None
        self.state: dict[str, Any] = {}
        self.history: list[HistoryEntry] = []
        self.timers: list[TimerRow] = []
        self.seq = 0
        self.final_hash = state_hash({})
        self.final_state: dict[str, Any] = {}
        self.final_count = 0
        self.final_timers: tuple[TimerRow, ...] = ()
        self.final_seq = 0

    def seal_final(self, cp_time: int | None) -> None:
        """Close the final prefix: fire the timers due by the checkpoint, keep its state."""
        if cp_time is None:
            return
        self.fire_timers(cp_time, final=True)
        self.final_hash = state_hash(self.state)
        self.final_state = copy.deepcopy(self.state)
        self.final_count = sum(1 for h in self.history if h.op != "timer")
        self.final_timers = tuple(sorted((*t[:5], dict(t[5])) for t in self.timers))
        self.final_seq = self.seq

    def fire_timers(self, now_ms: int, *, final: bool) -> None:
        while self.timers and self.timers[0][0] <= now_ms:
            at_ms, _, origin, cid, method, args = heapq.heappop(self.timers)
            ctx = Context(time_ms=at_ms, author=None, tx_id=origin, meter=Meter(self.budget))
            rec = self.state.get(lifecycle.contract_key(cid))
            template = self.templates[rec["template"]] if rec is not None else None
            if template is None or method not in template.TIMERS:
                self._record(ctx, "timer", cid, method, None, final)
                continue
            view = StateView(self.state, ctx.meter)
            self._run(ctx, "timer", cid, method, final,
                      lambda t=template, v=view, c=ctx, i=cid, m=method, a=args:
                      t.method(m)(c, v, i, a))

    def apply(self, tx: ContractTx, *, final: bool) -> None:
        ctx = Context(time_ms=tx.time_ms, author=tx.author.hex(), tx_id=tx.tx_id.hex(),
                      meter=Meter(self.budget))
        try:
            payload = codec.decode(tx.payload) if isinstance(tx.payload, bytes) else tx.payload
            if not isinstance(payload, dict) or payload.get("v") != PAYLOAD_VERSION:
                raise InvalidTransaction(f"payload must be a map with v={PAYLOAD_VERSION}")
            op = payload.get("op")
        except ContractError as exc:
            self._record(ctx, "?", None, "?", exc, final)
            return
        view = StateView(self.state, ctx.meter)
        if op == "create":
            self._run(ctx, "create", None, str(payload.get("template", "?"))[:40], final,
                      lambda: lifecycle.create(ctx, view, self.templates, payload))
            return
        if op != "call":
            self._record(ctx, str(op)[:20], None, "?",
                         InvalidTransaction(f"unknown op {str(op)[:20]!r}"), final)
            return
        cid = payload.get("contract")
        method = payload.get("method")
        args = payload.get("args", {})
        if not isinstance(cid, str) or not isinstance(method, str) or not isinstance(args, dict):
            self._record(ctx, "call", None, "?",
                         InvalidTransaction("call needs contract, method (text), args (map)"),
                         final)
            return
        self._run(ctx, "call", cid[:40], method[:40], final,
                  lambda: self._call(ctx, view, cid, method, args))

    def _call(self, ctx: Context, view: StateView, cid: str, method: str,
              args: Mapping[str, Any]) -> Result:
        rec = view.get(lifecycle.contract_key(cid))
        if rec is None:
            raise UnknownContract(f"no contract {cid}")
        template = self.templates[rec["template"]]
        allowed = template.ROLES_FOR.get(method)
        if allowed is None:
            raise UnknownMethod(f"{rec['template']} has no method {method!r}")
        assert ctx.author is not None
        if ANYONE not in allowed:
            held = lifecycle.roles_of(view, cid, ctx.author)
            if not held & allowed:
                raise PermissionDenied(f"{method} needs one of {sorted(allowed)}; "
                                       f"{ctx.author} holds {sorted(held) or 'no role'}")
        if method == "spawn":
            return lifecycle.spawn(ctx, view, self.templates, cid, args)
        if method in ("grant", "revoke"):
            return lifecycle.grant(ctx, view, cid, args, add=method == "grant")
        if method in ("approve", "reject"):
            return lifecycle.decide(ctx, view, cid, args, approve=method == "approve")
        return template.method(method)(ctx, view, cid, args)

    def _run(self, ctx: Context, op: str, cid: str | None, method: str, final: bool,
             call: Any) -> None:
        result = _execute(call)
        if isinstance(result, ContractError):
            self._record(ctx, op, cid, method, result, final)
            return
        if self.dry_run is not None:
            self.dry_run.append(result)
            return
        state = self.state
        for key, value in result.writes.items():
            if value is None:
                state.pop(key, None)
            else:
                state[key] = value
        for key, items in result.appends.items():
            state.setdefault(key, []).extend(items)
        for timer in result.timers:
            self.seq += 1
            heapq.heappush(self.timers, (timer.at_ms, self.seq, ctx.tx_id, timer.contract,
                                         timer.method, dict(timer.args)))
        self.history.append(HistoryEntry(
            position=len(self.history), tx_id=ctx.tx_id, author=ctx.author,
            time_ms=ctx.time_ms, op=op, contract=cid if cid is not None else _created(result),
            method=method, ok=True, code="ok", message="", events=result.events, final=final))

    def _record(self, ctx: Context, op: str, cid: str | None, method: str,
                exc: ContractError | None, final: bool) -> None:
        code = exc.code if exc is not None else "no_timer"
        message = str(exc) if exc is not None else f"{method} is not a timer of {cid}"
        if op != "timer" and self.dry_run is None:
            self.state["x/" + ctx.tx_id] = [code, message]
        self.history.append(HistoryEntry(
            position=len(self.history), tx_id=ctx.tx_id, author=ctx.author, time_ms=ctx.time_ms,
            op=op, contract=cid, method=method, ok=False, code=code, message=message,
            events=(), final=final))


def _created(result: Result) -> str | None:
    for event in result.events:
        if event.kind == "created":
            return event.contract
    return None
