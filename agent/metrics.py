"""Prometheus text exposition (format 0.0.4) over a tiny HTTP/1.0 server (off by default).

No client library: the format is a few lines of text, and the endpoint must cost nothing
when nobody scrapes it. `render()` is a pure function of the numbers, tested on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(slots=True)
class Snapshot:
    """The figures one scrape shows."""

    stats: Mapping[str, int]
    routes: int
    valid_routes: int
    neighbours: int
    line_up: bool
    gateway: bool
    has_gateway: bool
    ledger_height: int | None = None
    sync_lag_s: float | None = None
    link_tx: Mapping[str, int] = field(default_factory=dict)
    link_rx: Mapping[str, int] = field(default_factory=dict)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(snap: Snapshot) -> str:
    """The metrics page: frames in/out per kind, drops per reason, routes, neighbours, line."""
    out: list[str] = []

    def metric(name: str, kind: str, help_text: str,
               samples: Iterable[tuple[str, float]]) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            out.append(f"{name}{labels} {value:g}")

    frames = []
    drops = []
    for key, value in sorted(snap.stats.items()):
        if key.startswith(("rx_", "tx_")) and key not in ("rx_bytes", "tx_bytes"):
            direction, kind = key.split("_", 1)
            frames.append((f'{{direction="{direction}",kind="{_label(kind)}"}}', float(value)))
        elif key.startswith("drop_"):
            drops.append((f'{{reason="{_label(key[5:])}"}}', float(value)))
    metric("manet_frames_total", "counter", "Mesh frames received and sent, per kind.", frames)
    metric("manet_bytes_total", "counter", "Mesh bytes received and sent.",
           [('{direction="rx"}', float(snap.stats.get("rx_bytes", 0))),
            ('{direction="tx"}', float(snap.stats.get("tx_bytes", 0)))])
    metric("manet_drops_total", "counter", "Frames and packets dropped, per reason.", drops)
    metric("manet_link_datagrams_total", "counter", "Datagrams per transport link.",
           [(f'{{link="{_label(k)}",direction="tx"}}', float(v))
            for k, v in sorted(snap.link_tx.items())]
           + [(f'{{link="{_label(k)}",direction="rx"}}', float(v))
              for k, v in sorted(snap.link_rx.items())])
    metric("manet_routes", "gauge", "Routes in the table.",
           [('{state="valid"}', float(snap.valid_routes)),
            ('{state="invalid"}', float(snap.routes - snap.valid_routes))])
    metric("manet_neighbours", "gauge", "Current neighbours.", [("", float(snap.neighbours))])
    metric("manet_line_up", "gauge", "1 when this node's mobile line is connected.",
           [("", 1.0 if snap.line_up else 0.0)])
    metric("manet_is_gateway", "gauge", "1 when this node reaches the backhaul itself.",
           [("", 1.0 if snap.gateway else 0.0)])
    metric("manet_has_gateway", "gauge", "1 when a gateway is reachable through the mesh.",
           [("", 1.0 if snap.has_gateway else 0.0)])
    if snap.ledger_height is not None:
        metric("manet_ledger_height", "gauge", "Height of this node's own ledger feed.",
               [("", float(snap.ledger_height))])
    if snap.sync_lag_s is not None:
        metric("manet_ledger_sync_lag_seconds", "gauge",
               "Seconds since the ledger last synced with a peer or the backhaul.",
               [("", snap.sync_lag_s)])
    return "\n".join(out) + "\n"


class MetricsServer:
    """Answers `GET /metrics` with `render(snapshot())`; anything else gets 404."""

    def __init__(self, address: str, port: int, snapshot: Callable[[], Snapshot]) -> None:
        self.address = address
        self.port = port
        self.snapshot = snapshot
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, self.address, self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
            parts = head.split(b" ", 2)
            if len(parts) >= 2 and parts[0] == b"GET" and parts[1] in (b"/metrics", b"/"):
                body = render(self.snapshot()).encode()
                status = b"200 OK"
                ctype = CONTENT_TYPE.encode()
            else:
                body, status, ctype = b"not found\n", b"404 Not Found", b"text/plain"
            writer.write(b"HTTP/1.0 " + status + b"\r\nContent-Type: " + ctype
                         + b"\r\nContent-Length: " + str(len(body)).encode()
                         + b"\r\nConnection: close\r\n\r\n" + body)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None
