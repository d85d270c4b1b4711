"""`manet-agent`: run the agent, make a key, and ask a running agent about its state.

Exit codes: 0 success, 1 runtime failure (agent not running, bad key file, ...), 2 usage or
configuration error (argparse's convention: unknown flags exit 2 with a message).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent.config import AgentConfig, ConfigError, load_config
from agent.control import ControlError, request
from agent.state import StateError
from agent.transports import TransportError
from ledger.errors import LedgerError
from mesh.identity import Identity, IdentityError

DEFAULT_CONFIG = "/etc/manet-agent/agent.toml"


def _add_socket_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None,
                        help=f"agent configuration, to find the control socket "
                             f"(default {DEFAULT_CONFIG} if it exists)")
    parser.add_argument("--socket", default=None, help="control socket path (overrides --config)")
    parser.add_argument("--json", action="store_true", help="print the raw JSON answer")


OWN_COMMANDS = frozenset({"run", "check-config", "keygen", "status", "routes", "neighbours",
                          "peers", "inbox", "send", "ping"})


def build_parser(others: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="manet-agent",
                                     description="Field mesh agent (MANET over BLE/Wi-Fi).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the agent until SIGTERM")
    run.add_argument("--config", default=DEFAULT_CONFIG, help="TOML configuration file")

    check = sub.add_parser("check-config", help="validate a configuration file and exit")
    check.add_argument("--config", default=DEFAULT_CONFIG)

    keygen = sub.add_parser("keygen", help="create this node's Ed25519 key file")
    keygen.add_argument("--out", default=None, help="key file (default: node.key_file of --config)")
    keygen.add_argument("--config", default=None)
    keygen.add_argument("--force", action="store_true", help="replace an existing key")

    for name, text in (("status", "summary of a running agent"),
                       ("routes", "its routing table"),
                       ("neighbours", "its neighbours"),
                       ("peers", "agents found by zeroconf"),
                       ("inbox", "the last payloads it received")):
        _add_socket_args(sub.add_parser(name, help=text))
    send = sub.add_parser("send", help="send a payload to a node id or 'backhaul'")
    _add_socket_args(send)
    send.add_argument("dest")
    send.add_argument("text")
    ping = sub.add_parser("ping", help="end-to-end round trips to another agent")
    _add_socket_args(ping)
    ping.add_argument("dest")
    ping.add_argument("-c", "--count", type=int, default=3)
    ping.add_argument("--timeout", type=float, default=5.0)

    if others:
        register_others(sub)
    return parser


def register_others(sub: Any) -> None:
    """Subcommands owned by the other parts of the system (each has `register(subparsers)`).

    Imported here, not at the top: together they load numpy and scipy (about 60 MB), which
    `manet-agent run` must not carry; `main()` only builds them for their own commands.
    """
    import agent.modules.charging.cli
    import agent.modules.interchange.cli
    import ledger.cli
    import ledger.contracts.cli

    ledger.cli.register(sub)
    ledger.contracts.cli.register(sub)
    agent.modules.charging.cli.register(sub)
    agent.modules.interchange.cli.register(sub)


def _socket_path(args: argparse.Namespace) -> str:
    if args.socket:
        return str(args.socket)
    path = args.config or (DEFAULT_CONFIG if Path(DEFAULT_CONFIG).exists() else None)
    if path is None:
        return AgentConfig().control.socket
    return load_config(path).control.socket


def _print(value: Any, raw: bool) -> None:
    if raw or not isinstance(value, list | dict):
        print(json.dumps(value, indent=2, sort_keys=True))
        return
    rows = value if isinstance(value, list) else [value]
    for row in rows:
        print("  ".join(f"{k}={_short(v)}" for k, v in row.items()
                        if not isinstance(v, dict) or k in ("gateway", "line")))
    if not rows:
        print("(none)")


def _short(value: Any) -> str:
    if isinstance(value, dict):
        return ",".join(f"{k}:{v}" for k, v in value.items())
    return str(value)


def cmd_keygen(args: argparse.Namespace) -> int:
    out = args.out or load_config(args.config or DEFAULT_CONFIG).node.key_file
    target = Path(out)
    if target.exists() and not args.force:
        print(f"manet-agent: {target} exists (use --force to replace it)", file=sys.stderr)
        return 1
    target.parent.mkdir(parents=True, exist_ok=True)
    ident = Identity.generate()
    ident.save(target)
    print(ident.node_id.hex())
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from agent.app import Agent
    from agent.logs import NodeLogger, setup_logging

    config = load_config(args.config)
    logger = setup_logging(config.log.level, config.log.format, config.log.timestamps)
    identity = Identity.load(config.node.key_file)
    agent = Agent(config, identity, NodeLogger(identity.node_id.hex(), logger))
    asyncio.run(agent.run())
    return 0


def cmd_client(args: argparse.Namespace) -> int:
    extra: dict[str, Any] = {}
    timeout = 10.0
    if args.command == "send":
        extra = {"dest": args.dest, "text": args.text}
    elif args.command == "ping":
        extra = {"dest": args.dest, "count": args.count, "timeout": args.timeout}
        timeout = args.count * args.timeout + 5
    result = request(_socket_path(args), args.command, timeout_s=timeout, **extra)
    _print(result, args.json)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    first = next((w for w in words if not w.startswith("-")), None)
    parser = build_parser(others=first not in OWN_COMMANDS)
    args = parser.parse_args(words)
    try:
        if hasattr(args, "func"):  # a subcommand registered by another package
            return int(args.func(args) or 0)
        if args.command == "run":
            return cmd_run(args)
        if args.command == "check-config":
            load_config(args.config)
            print(f"{args.config}: ok")
            return 0
        if args.command == "keygen":
            return cmd_keygen(args)
        return cmd_client(args)
    except ConfigError as exc:
        print(f"manet-agent: configuration error: {exc}", file=sys.stderr)
        return 2
    except (ControlError, IdentityError, TransportError, StateError, LedgerError) as exc:
        print(f"manet-agent: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
