"""`manet-agent contracts ...`: rebuild contract state from the ledger, show it, audit.

    contracts show [--json]                 state hash, final hash, contracts, balances
    contracts history [--contract ID] [-n N]
    contracts replay                        rebuild from an empty state, with timing, and
                                            check it against the final-state snapshot
    contracts pending [--all]               provisional contracts this node may audit
    contracts approve|reject ID --reason TEXT
    contracts submit --body JSON [--force]  append a contract transaction (create, call);
                                            refused ones are not appended without --force

The ledger file and key come from --ledger/--key, or from the agent's --config
(node.key_file, ledger.path or <node.state_dir>/ledger.sqlite). Commands replay from the
final-state snapshot beside the ledger (<ledger>.contracts-final) and refresh it when more
has become final; `replay` starts from nothing.
Exit codes: 0 success, 1 runtime failure (no ledger, refused transaction), 2 usage error.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ledger.contracts import snapshot
from ledger.contracts.engine import Engine, Replay
from ledger.contracts.errors import StoreError
from ledger.contracts.snapshot import Snapshot
from ledger.contracts.source import LedgerSource
from ledger.contracts.tx import ContractTx
from ledger.errors import LedgerError
from ledger.ledger import Ledger
from mesh.identity import Identity, IdentityError

DEFAULT_CONFIG = "/etc/manet-agent/agent.toml"


class CliError(Exception):
    """A command cannot run (missing ledger or key, bad arguments); exit code 1."""


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector around a replay (an edge decision, not the core's).

    Contract state is acyclic plain data that reference counting frees, yet a replay allocates
    so many containers that the collector's passes cost about a third of the replay time.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `contracts` subcommand to an argparse parser (manet-agent wires it in)."""
    top = subparsers.add_parser("contracts", help="contract state replayed from the ledger")
    sub = top.add_subparsers(dest="contracts_command", required=True, metavar="ACTION")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", default=None, help=f"agent configuration (default "
                       f"{DEFAULT_CONFIG} if it exists)")
        p.add_argument("--ledger", default=None, help="ledger SQLite file")
        p.add_argument("--key", default=None, help="this node's key file")
        p.add_argument("--json", action="store_true", help="print JSON")
        p.add_argument("--snapshot", default=None,
                       help="final-state snapshot file (default: <ledger>.contracts-final)")
        p.add_argument("--no-snapshot", action="store_true",
                       help="neither read nor write the snapshot")
        p.set_defaults(func=run)

    show = sub.add_parser("show", help="current state: hashes, contracts, balances")
    common(show)
    show.add_argument("--as-of-ms", type=int, default=None,
                      help="fire scheduled transfers due by this time (default: newest block)")
    hist = sub.add_parser("history", help="applied transactions in replay order")
    common(hist)
    hist.add_argument("--contract", default=None, help="only this contract id")
    hist.add_argument("-n", "--limit", type=int, default=50, help="last N entries (0: all)")
    common(sub.add_parser("replay", help="rebuild state from an empty state, timed"))
    pending = sub.add_parser("pending", help="provisional contracts this node may audit")
    common(pending)
    pending.add_argument("--all", action="store_true", help="every provisional contract")
    for name in ("approve", "reject"):
        p = sub.add_parser(name, help=f"{name} a provisional contract (as its auditor)")
        common(p)
        p.add_argument("contract")
        p.add_argument("--reason", required=True)
    submit = sub.add_parser("submit", help="append a contract transaction body (JSON)")
    common(submit)
    submit.add_argument("--body", required=True, help='e.g. {"v":1,"op":"create",...}')
    submit.add_argument("--force", action="store_true",
                        help="append even when the contract would refuse it now")


def _paths(args: argparse.Namespace) -> tuple[Path, Path]:
    ledger_path, key_path = args.ledger, args.key
    if ledger_path is None or key_path is None:
        config_path = args.config or (DEFAULT_CONFIG if Path(DEFAULT_CONFIG).exists() else None)
        if config_path is None:
            raise CliError("give --ledger and --key, or --config")
        from agent.config import ConfigError, load_config
        try:
            cfg = load_config(config_path)
        except ConfigError as exc:
            raise CliError(f"{config_path}: {exc}") from exc
        key_path = key_path or cfg.node.key_file
        ledger_path = ledger_path or cfg.ledger.path or str(
            Path(cfg.node.state_dir) / "ledger.sqlite")
    return Path(ledger_path), Path(key_path)


class _Replayer:
    """Replays a ledger from its final-state snapshot, and saves a newer one when more of
    the ledger has become final (see snapshot.py for why)."""

    def __init__(self, args: argparse.Namespace, source: LedgerSource) -> None:
        self.source = source
        self.path: Path | None = None
        self.base: Snapshot | None = None
        if not args.no_snapshot:
            self.path = Path(args.snapshot) if args.snapshot else Path(
                str(_paths(args)[0]) + ".contracts-final")
            try:
                self.base = snapshot.load(self.path)
            except StoreError as exc:
                raise CliError(f"{exc} (move {self.path} away, or use --no-snapshot)") from exc

    def replay(self, as_of_ms: int | None = None, *, txs: list[ContractTx] | None = None,
               base: bool = True) -> Replay:
        with gc_paused():
            result = Engine().replay(self.source.contract_txs() if txs is None else txs,
                                     self.source.checkpoints(), as_of_ms=as_of_ms,
                                     base=self.base if base else None)
        if base and self.path is not None and result.final_total > (
                self.base.count if self.base is not None else 0):
            newer = result.snapshot()
            if newer is not None:
                try:
                    snapshot.save(self.path, newer)
                except OSError as exc:
                    raise CliError(f"cannot write snapshot {self.path}: {exc}") from exc
                self.base = newer
        return result


def _open(args: argparse.Namespace) -> Ledger:
    ledger_path, key_path = _paths(args)
    if not ledger_path.exists():
        raise CliError(f"no ledger at {ledger_path}")
    try:
        identity = Identity.load(key_path)
    except IdentityError as exc:
        raise CliError(str(exc)) from exc
    try:
        return Ledger.open(ledger_path, identity)
    except LedgerError as exc:
        raise CliError(f"cannot open {ledger_path}: {exc}") from exc


def summary(result: Replay) -> dict[str, Any]:
    """The `show` view of a replay (also what tests and the agent can print)."""
    balances: dict[str, dict[str, int]] = {}
    for key, value in sorted(result.state.items()):
        if key.startswith("b/"):
            _, cid, account = key.split("/", 2)
            balances.setdefault(cid, {})[account] = value
    return {
        "state_hash": result.state_hash, "final_hash": result.final_hash,
        "transactions": result.applied, "failed": result.failed,
        "final_entries": result.final_count,
        "contracts": [{"id": c["id"], "template": c["template"], "status": c["status"],
                       "selection": c["selection"], "parent": c["parent"], "slot": c["slot"],
                       "final": result.is_final("c/" + c["id"])}
                      for c in result.contracts()],
        "balances": balances,
    }


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except CliError as exc:
        print(f"contracts: {exc}", file=sys.stderr)
        return 1


def _print(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2, sort_keys=True) if args.json else text)


def _run(args: argparse.Namespace) -> int:
    action = args.contracts_command
    data: Any
    with _open(args) as led:
        source = LedgerSource(led)
        replayer = _Replayer(args, source)
        if action in ("approve", "reject", "submit"):
            if action == "submit":
                try:
                    body = json.loads(args.body)
                except json.JSONDecodeError as exc:
                    raise CliError(f"--body is not JSON: {exc}") from exc
                if not isinstance(body, dict):
                    raise CliError("--body must be a JSON object")
                if not args.force:
                    current = replayer.replay()
                    preview = Engine().preview(current.state, led.identity.node_id,
                                               int(time.time() * 1000), body)
                    if not preview.ok:
                        raise CliError(f"the contract would refuse it now: {preview.code}: "
                                       f"{preview.message} (--force appends it anyway)")
            else:
                current = replayer.replay()
                mine = {c["id"] for c in current.pending_for(led.identity.hex_id)}
                if args.contract not in mine:
                    raise CliError(f"{args.contract} is not a provisional contract that "
                                   f"{led.identity.hex_id} audits (see `contracts pending`)")
                body = {"v": 1, "op": "call", "contract": args.contract, "method": action,
                        "args": {"reason": args.reason}}
            try:
                tx = source.submit(body, time.time())
            except LedgerError as exc:
                raise CliError(f"refused by the ledger: {exc}") from exc
            result = replayer.replay()
            entry = next(h for h in result.history if h.tx_id == tx.tx_id.hex())
            data = {"tx": entry.tx_id, "ok": entry.ok, "code": entry.code,
                    "message": entry.message, "events": [e.kind for e in entry.events]}
            _print(args, data, f"{entry.tx_id[:16]} {entry.code} {entry.message}".rstrip())
            return 0 if entry.ok else 1
        started = time.perf_counter()
        txs = source.contract_txs()
        loaded = time.perf_counter()
        result = replayer.replay(getattr(args, "as_of_ms", None), txs=txs,
                                 base=action != "replay")
        done = time.perf_counter()
        if action == "show":
            data = summary(result)
            lines = [f"state {data['state_hash']}", f"final {data['final_hash']}",
                     f"{data['transactions']} transactions, {data['failed']} refused"]
            lines += [f"{c['id']} {c['template']:9} {c['status']:11} {c['selection'] or '-':10}"
                      f" {'final' if c['final'] else 'provisional'}"
                      f"{' child of ' + c['parent'] if c['parent'] else ''}"
                      for c in data["contracts"]]
            lines += [f"{cid} {acct} {bal}" for cid, accts in data["balances"].items()
                      for acct, bal in accts.items()]
            _print(args, data, "\n".join(lines))
        elif action == "history":
            entries = [h for h in result.history
                       if args.contract is None or h.contract == args.contract]
            if args.limit:
                entries = entries[-args.limit:]
            data = [{"position": h.position, "tx": h.tx_id, "author": h.author,
                     "time_ms": h.time_ms, "op": h.op, "contract": h.contract,
                     "method": h.method, "ok": h.ok, "code": h.code, "message": h.message,
                     "events": [[e.kind, e.contract, e.detail] for e in h.events],
                     "final": h.final} for h in entries]
            _print(args, data, "\n".join(
                f"{h.position:6} {h.time_ms} {h.author or 'timer':16} {h.op:6} "
                f"{h.contract or '-':24} {h.method:12} {h.code}"
                f"{' ' + h.message if h.message else ''}" for h in entries))
        elif action == "replay":
            data = {"transactions": len(txs), "load_s": round(loaded - started, 4),
                    "replay_s": round(done - loaded, 4),
                    "tx_per_s": round(len(txs) / max(done - loaded, 1e-9)),
                    "state_hash": result.state_hash, "final_hash": result.final_hash}
            if replayer.base is not None:
                resumed = replayer.replay(txs=txs)
                data["snapshot_state_hash"] = resumed.state_hash
                data["snapshot_agrees"] = resumed.state_hash == result.state_hash
            _print(args, data, " ".join(f"{k}={v}" for k, v in data.items()))
        else:
            me = None if args.all else led.identity.hex_id
            data = [{"id": c["id"], "template": c["template"], "created_by": c["created_by"],
                     "created_ms": c["created_ms"], "params": c["params"]}
                    for c in result.pending_for(me)]
            _print(args, data, "\n".join(
                f"{c['id']} {c['template']} by {c['created_by']} at {c['created_ms']}"
                for c in data) or "no pending contracts")
    return 0
