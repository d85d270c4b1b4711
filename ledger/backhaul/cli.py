"""`manet-backhaul`: serve agents' syncs, enrol their keys.

    manet-backhaul serve --listen 127.0.0.1:7400 [--db sqlite:PATH | --db postgresql://...]
                         [--key backhaul.key] [--tls-cert CERT --tls-key KEY]
    manet-backhaul enrol KEYFILE [--db ...] [--name NAME]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import ssl
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ledger.backhaul.server import BackhaulServer, BackhaulStore, ServerConfig
from ledger.errors import LedgerError
from ledger.tx import default_registry, load_plugins
from mesh.identity import Identity, IdentityError


def open_store(db: str) -> BackhaulStore:
    """`sqlite:PATH` (or a bare path) or a `postgresql://` DSN."""
    if db.startswith(("postgresql://", "postgres://")):
        from ledger.pgstore import PostgresStore

        return PostgresStore(db)
    from ledger.store import SqliteStore

    return SqliteStore(db.removeprefix("sqlite:"))


def load_or_create_key(path: Path) -> Identity:
    if not path.exists():
        identity = Identity.generate()
        identity.save(path)
        return identity
    return Identity.load(path)


def read_public_key(path: Path) -> bytes:
    """A key to enrol: hex text, a PEM public key, or an agent's private key file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LedgerError(f"cannot read {path}: {exc.strerror}") from exc
    text = data.strip()
    if len(text) == 64:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            pass
    if b"PUBLIC KEY" in data:
        try:
            key = serialization.load_pem_public_key(data)
        except ValueError as exc:
            raise LedgerError(f"{path} is not a readable PEM public key") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise LedgerError(f"{path} is not an Ed25519 public key")
        return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    try:
        return Identity.load(path).public_key
    except IdentityError as exc:
        raise LedgerError(str(exc)) from exc


async def _serve(args: argparse.Namespace) -> int:
    host, _, port = args.listen.rpartition(":")
    store = open_store(args.db)
    identity = load_or_create_key(Path(args.key))
    registry = default_registry()
    load_plugins(registry, args.tx_plugin)
    context = None
    if args.tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.tls_cert, args.tls_key)
    server = BackhaulServer(store, identity, registry, config=ServerConfig(
        checkpoint_interval_s=args.checkpoint_interval))
    bound = await server.start(host or "127.0.0.1", int(port), context)
    print(json.dumps({"event": "listening", "host": host, "port": bound,
                      "key": identity.public_key.hex(), "tls": context is not None}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.close()
    store.close()
    print(json.dumps({"event": "stopped", **server.stats}), flush=True)
    return 0


def _enrol(args: argparse.Namespace) -> int:
    key = read_public_key(Path(args.keyfile))
    store = open_store(args.db)
    try:
        store.enrol(key, args.name or Path(args.keyfile).stem, int(time.time() * 1000))
    finally:
        store.close()
    print(json.dumps({"event": "enrolled", "key": key.hex()}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="manet-backhaul", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="accept agents' syncs")
    serve.add_argument("--listen", default="127.0.0.1:7400", help="HOST:PORT (port 0: any)")
    serve.add_argument("--db", default="sqlite:backhaul.sqlite",
                       help="sqlite:PATH or postgresql://user@host/db")
    serve.add_argument("--key", default="backhaul.key", help="backhaul key (created if missing)")
    serve.add_argument("--tls-cert", help="PEM certificate: serve TLS")
    serve.add_argument("--tls-key", help="PEM private key of --tls-cert")
    serve.add_argument("--checkpoint-interval", type=float, default=10.0,
                       help="seconds between signed checkpoints (0: after every sync)")
    serve.add_argument("--tx-plugin", action="append", default=[],
                       help="module whose register_tx_types(registry) adds types (repeatable)")
    serve.set_defaults(func=lambda a: asyncio.run(_serve(a)))
    enrol = sub.add_parser("enrol", help="accept an agent's key")
    enrol.add_argument("keyfile", help="hex public key, PEM public key, or the agent's key file")
    enrol.add_argument("--db", default="sqlite:backhaul.sqlite")
    enrol.add_argument("--name", default="", help="a label for the key")
    enrol.set_defaults(func=_enrol)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return int(args.func(args))
    except (LedgerError, IdentityError, OSError, ssl.SSLError) as exc:
        print(f"manet-backhaul: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
