"""The local control socket: a Unix stream socket speaking one JSON object per line.

Request `{"cmd": "status"}`, answer `{"ok": true, "result": ...}` or
`{"ok": false, "error": "..."}`. The socket file is created 0660 so that only root and the
agent's group may talk to the agent. `request()` is the client side the CLI uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

MAX_REQUEST = 65536

Handler = Callable[[dict[str, Any]], Awaitable[Any]]


class ControlError(Exception):
    """The agent is not running, or it refused or failed the request."""


class CommandError(Exception):
    """A control request is malformed or names an unknown command (the client's fault)."""


class ControlServer:
    """Serves requests on a Unix socket by looking up `handlers[cmd]`."""

    def __init__(self, path: str, handlers: dict[str, Handler]) -> None:
        self.path = path
        self.handlers = handlers
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        target = Path(self.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_socket():
            target.unlink()  # left over by a killed agent (a running one holds a lock elsewhere)
        self.server = await asyncio.start_unix_server(self._serve, path=self.path,
                                                      limit=MAX_REQUEST)
        os.chmod(self.path, 0o660)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    await self._answer(writer, {"ok": False, "error": "request too long"})
                    return
                if not line:
                    return
                await self._answer(writer, await self._dispatch(line))
        except ConnectionError:
            return
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _dispatch(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
            if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
                raise CommandError('a request is a JSON object with a "cmd" string')
            handler = self.handlers.get(request["cmd"])
            if handler is None:
                known = ", ".join(sorted(self.handlers))
                raise CommandError(f"unknown command {request['cmd']!r} (known: {known})")
            return {"ok": True, "result": await handler(request)}
        except json.JSONDecodeError:
            return {"ok": False, "error": "request is not JSON"}
        except CommandError as exc:
            return {"ok": False, "error": str(exc)}

    async def _answer(self, writer: asyncio.StreamWriter, answer: dict[str, Any]) -> None:
        writer.write(json.dumps(answer, default=str).encode() + b"\n")
        await writer.drain()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def request(path: str, cmd: str, timeout_s: float = 10.0, **args: Any) -> Any:
    """Send one request to a running agent and return its result (blocking, for the CLI)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    try:
        try:
            sock.connect(path)
        except OSError as exc:
            raise ControlError(f"no agent answers on {path}: {exc.strerror}") from exc
        sock.sendall(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except TimeoutError as exc:
        raise ControlError(f"the agent did not answer {cmd!r} within {timeout_s} s") from exc
    finally:
        sock.close()
    try:
        answer = json.loads(data)
    except json.JSONDecodeError as exc:
        raise ControlError("the agent's answer is not JSON") from exc
    if not answer.get("ok"):
        raise ControlError(str(answer.get("error", "request failed")))
    return answer.get("result")
