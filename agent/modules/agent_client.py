"""The module subcommands that ask a running agent (its control socket) to act."""

from __future__ import annotations

import argparse
from typing import Any


def add_agent_args(parser: argparse.ArgumentParser) -> None:
    """--config/--socket/--json, as every `manet-agent` command that talks to the agent."""
    from agent.cli import _add_socket_args

    _add_socket_args(parser)


def ask_agent(args: argparse.Namespace, cmd: str, **fields: Any) -> int:
    """Send one control request, print its answer; 1 with a message when it fails."""
    import sys

    from agent.cli import _print, _socket_path
    from agent.control import ControlError, request

    try:
        result = request(_socket_path(args), cmd, timeout_s=30.0, **fields)
    except ControlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    _print(result, args.json)
    return 0
