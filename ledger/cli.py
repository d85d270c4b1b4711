"""`manet-agent ledger show|verify|export`: read a ledger file without the node's key.

`show` prints feeds and recent transactions for people; `export` prints JSON lines (one per
transaction, bytes as hex) for programs; `verify` re-checks every feed and exits 1 on a problem.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from ledger.block import decode_block
from ledger.errors import LedgerError
from ledger.ledger import verify_store
from ledger.store import SqliteStore
from ledger.tx import default_registry, load_plugins


def _plain(value: Any) -> Any:
    """JSON-friendly: bytes become hex strings."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _records(store: SqliteStore, args: argparse.Namespace) -> list[dict[str, Any]]:
    registry = default_registry()
    load_plugins(registry, args.tx_plugin)
    author = bytes.fromhex(args.author) if args.author else None
    rows = store.tx_rows(type=args.type, author=author, limit=args.limit)
    out: list[dict[str, Any]] = []
    blocks: dict[tuple[bytes, int], Any] = {}
    for row in rows:
        key = (row.author, row.height)
        if key not in blocks:
            raw = store.block_raw(row.author, row.height)
            if raw is None:
                raise LedgerError(f"missing block {row.author.hex()}/{row.height}")
            blocks[key] = decode_block(raw, registry)
        tx = blocks[key].txs[row.idx]
        out.append({"author": row.author.hex(), "height": row.height, "index": row.idx,
                    "time_ms": row.ts, "type": tx.type, "body": _plain(dict(tx.body))})
    return out


def run(args: argparse.Namespace) -> int:
    """Entry point of the `ledger` subcommand."""
    try:
        store = SqliteStore(args.db)
    except LedgerError as exc:
        print(f"ledger: {exc}", file=sys.stderr)
        return 2
    try:
        if args.action == "verify":
            registry = default_registry()
            load_plugins(registry, args.tx_plugin)
            report = verify_store(store, registry, int(time.time() * 1000))
            print(json.dumps({"ok": report.ok, "feeds": report.feeds, "blocks": report.blocks,
                              "problems": [{"author": a.hex(), "height": h, "error": e}
                                           for a, h, e in report.problems],
                              "flagged": {a.hex(): r for a, r in store.flagged().items()}}))
            return 0 if report.ok else 1
        records = _records(store, args)
        if args.action == "export":
            for rec in records:
                print(json.dumps(rec, sort_keys=True))
            return 0
        flagged = store.flagged()
        print(f"{'feed':16}  {'height':>7}  last block (UTC)     flag")
        for head in store.heads():
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(head.timestamp_ms / 1000))
            print(f"{head.author.hex()[:16]}  {head.height:>7}  {when}  "
                  f"{flagged.get(head.author, '')}")
        print()
        for rec in records:
            when = time.strftime("%H:%M:%S", time.gmtime(rec["time_ms"] / 1000))
            body = " ".join(f"{k}={v}" for k, v in sorted(rec["body"].items()))
            print(f"{when} {rec['author'][:8]}#{rec['height']}.{rec['index']} "
                  f"{rec['type']:28} {body}")
        return 0
    except LedgerError as exc:
        print(f"ledger: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `ledger show|verify|export` to a parent CLI (manet-agent)."""
    parser = subparsers.add_parser("ledger", help="show, verify or export the local ledger")
    parser.add_argument("action", choices=("show", "verify", "export"))
    parser.add_argument("--db", default="ledger.sqlite", help="ledger SQLite file")
    parser.add_argument("--type", default=None, help="only this transaction type")
    parser.add_argument("--author", default=None, help="only this feed (hex public key)")
    parser.add_argument("--limit", type=int, default=None, help="at most this many transactions")
    parser.add_argument("--tx-plugin", action="append", default=[],
                        help="module whose register_tx_types(registry) adds types (repeatable)")
    parser.set_defaults(func=run)


def main(argv: list[str] | None = None) -> int:
    """Standalone use: python -m ledger.cli show --db FILE."""
    parser = argparse.ArgumentParser(prog="ledger")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(["ledger", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
