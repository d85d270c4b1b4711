"""The mobile-line monitor: learns this node's LineStatus and reports changes at once.

Sources, chosen by `[line] monitor`:
- "probe": a TCP connect to the backhaul, optionally leaving by one interface
  (SO_BINDTODEVICE, e.g. the modem's wwan0); `connected` follows the interface's carrier.
- "modemmanager": the modem's state, technology and signal from ModemManager over the
  system D-Bus (where present), combined with the probe for backhaul reachability.
- "file": a file holding "up", "down" or a JSON object of LineStatus fields (tests and
  manual overrides; a missing file means down).
- "command": a shell command; exit status 0 means up.
- "static": a fixed state from the configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from agent.config import LineSection
from mesh.line import LINE_DOWN, TECHNOLOGIES, LineStatus

SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)


class LineSourceError(Exception):
    """A line source gave something that is not a line status (bad override file, ...)."""


def parse_line_text(text: str, technology: str = "lte") -> LineStatus:
    """Parse an override: "up", "down", or a JSON object with LineStatus fields."""
    stripped = text.strip()
    if stripped.lower() in ("up", "1", "true", "gateway"):
        return LineStatus(connected=True, technology=technology, backhaul_reachable=True)
    if stripped.lower() in ("down", "0", "false", ""):
        return LINE_DOWN
    if stripped.lower() == "no-backhaul":
        return LineStatus(connected=True, technology=technology, backhaul_reachable=False)
    try:
        data = json.loads(stripped)
    except json.JSONDecodeError as exc:
        raise LineSourceError(f"not up/down/no-backhaul nor JSON: {stripped[:40]!r}") from exc
    if not isinstance(data, dict):
        raise LineSourceError("a JSON line status must be an object")
    known = {"connected": bool, "technology": str, "signal_dbm": int,
             "backhaul_reachable": bool, "rtt_ms": int}
    for key, value in data.items():
        if key not in known:
            raise LineSourceError(f"unknown line status field {key!r}")
        if type(value) is not known[key]:
            raise LineSourceError(f"line status field {key!r} must be {known[key].__name__}")
    if data.get("technology", technology) not in TECHNOLOGIES:
        raise LineSourceError(f"unknown technology {data['technology']!r}")
    return LineStatus(**{"technology": technology, **data})


def carrier_up(interface: str) -> bool:
    """True when `interface` exists and is operationally up (or 'unknown', as tun/wwan are)."""
    try:
        state = Path(f"/sys/class/net/{interface}/operstate").read_text().strip()
    except OSError:
        return False
    return state in ("up", "unknown")


async def tcp_probe(host: str, port: int, timeout_s: float, interface: str = "") -> float | None:
    """Connect to host:port (by `interface` if given); the round trip in ms, or None."""
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout_s)
    except (OSError, TimeoutError):
        return None
    for family, kind, proto, _, addr in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            if interface:
                sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, interface.encode())
            start = time.monotonic()
            await asyncio.wait_for(loop.sock_connect(sock, addr), timeout_s)
            return (time.monotonic() - start) * 1000.0
        except (OSError, TimeoutError):
            continue
        finally:
            sock.close()
    return None


# ModemManager's MMModemState and MMModemAccessTechnology bits (ModemManager-enums.h).
MM_STATE_CONNECTED = 11
MM_TECH_BITS = [(1 << 15, "5g"), (1 << 14, "lte"), (1 << 13, "lte"),
                (0x3E0 | 0x1C00, "3g"), (0x1E, "2g")]


def line_from_modem(properties: dict[str, Any]) -> tuple[bool, str, int]:
    """(connected, technology, signal_dbm) from ModemManager Modem properties.

    `SignalQuality` is a percentage; it is mapped onto -113..-51 dBm (the 3GPP RSSI range)
    because MM's dBm figures need the separate Signal interface and a refresh rate.
    """
    state = int(properties.get("State", 0))
    bits = int(properties.get("AccessTechnologies", 0))
    technology = "none"
    for mask, name in MM_TECH_BITS:
        if bits & mask:
            technology = name
            break
    quality = properties.get("SignalQuality", (0, False))
    percent = int(quality[0]) if isinstance(quality, (tuple, list)) and quality else 0
    signal = -113 + round(percent * 62 / 100) if percent else 0
    return state >= MM_STATE_CONNECTED, technology, signal


async def modemmanager_properties() -> dict[str, Any] | None:
    """Properties of the first modem ModemManager knows, or None without D-Bus/MM/modem."""
    try:
        from dbus_fast import BusType
        from dbus_fast.aio import MessageBus
        from dbus_fast.errors import DBusError
    except ImportError:
        return None
    try:
        bus = await asyncio.wait_for(MessageBus(bus_type=BusType.SYSTEM).connect(), 2.0)
    except (OSError, TimeoutError, ValueError):
        return None
    try:
        intro = await bus.introspect("org.freedesktop.ModemManager1",
                                     "/org/freedesktop/ModemManager1")
        manager = bus.get_proxy_object("org.freedesktop.ModemManager1",
                                       "/org/freedesktop/ModemManager1", intro)
        objects = await manager.get_interface(
            "org.freedesktop.DBus.ObjectManager").call_get_managed_objects()  # type: ignore[attr-defined]
        for interfaces in objects.values():
            modem = interfaces.get("org.freedesktop.ModemManager1.Modem")
            if modem is not None:
                return {k: v.value for k, v in modem.items()}
        return None
    except (DBusError, OSError, TimeoutError):
        return None
    finally:
        bus.disconnect()


class LineMonitor:
    """Polls the configured source every `interval_s`; calls `on_change` on each change."""

    def __init__(self, section: LineSection,
                 on_change: Callable[[LineStatus], None],
                 on_error: Callable[[str], None] | None = None) -> None:
        self.section = section
        self.on_change = on_change
        self.on_error = on_error
        self.status = LINE_DOWN
        self.checks = 0
        self._task: asyncio.Task[None] | None = None
        self._sources: dict[str, Callable[[], Awaitable[LineStatus]]] = {
            "probe": self._probe, "modemmanager": self._modemmanager, "file": self._file,
            "command": self._command, "static": self._static,
        }

    async def check(self) -> LineStatus:
        """Read the source once and report a change (also usable from tests, no timer)."""
        try:
            status = await self._sources[self.section.monitor]()
        except LineSourceError as exc:
            if self.on_error is not None:
                self.on_error(str(exc))
            return self.status  # a bad override keeps the last good state
        self.checks += 1
        if status != self.status:
            self.status = status
            self.on_change(status)
        return status

    def _with_rtt(self, connected: bool, technology: str, signal: int,
                  rtt: float | None) -> LineStatus:
        rtt_ms = min(600_000, max(1, round(rtt))) if rtt is not None else 0
        return LineStatus(connected=connected or rtt is not None,
                          technology=technology if connected or rtt is not None else "none",
                          signal_dbm=signal, backhaul_reachable=rtt is not None, rtt_ms=rtt_ms)

    async def _probe(self) -> LineStatus:
        s = self.section
        connected = carrier_up(s.probe_interface) if s.probe_interface else False
        rtt = None
        if s.probe_host:
            rtt = await tcp_probe(s.probe_host, s.probe_port, s.probe_timeout_s,
                                  s.probe_interface)
        return self._with_rtt(connected, s.technology, 0, rtt)

    async def _modemmanager(self) -> LineStatus:
        props = await modemmanager_properties()
        if props is None:
            return await self._probe()
        connected, technology, signal = line_from_modem(props)
        rtt = None
        if connected and self.section.probe_host:
            s = self.section
            rtt = await tcp_probe(s.probe_host, s.probe_port, s.probe_timeout_s,
                                  s.probe_interface)
        status = self._with_rtt(connected, technology, signal, rtt)
        return status if connected else LINE_DOWN

    async def _file(self) -> LineStatus:
        try:
            text = Path(self.section.file).read_text()
        except FileNotFoundError:
            return LINE_DOWN
        except OSError as exc:
            raise LineSourceError(f"cannot read {self.section.file}: {exc.strerror}") from exc
        return parse_line_text(text, self.section.technology)

    async def _command(self) -> LineStatus:
        proc = await asyncio.create_subprocess_shell(
            self.section.command, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL)
        try:
            code = await asyncio.wait_for(proc.wait(), self.section.probe_timeout_s)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return LINE_DOWN
        return parse_line_text("up" if code == 0 else "down", self.section.technology)

    async def _static(self) -> LineStatus:
        return parse_line_text("up" if self.section.static_up else "down",
                               self.section.technology)

    async def _run(self) -> None:
        while True:
            await self.check()
            await asyncio.sleep(self.section.interval_s)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
