"""The "modemmanager" line monitor against a fake ModemManager on a private D-Bus daemon
(reached as the system bus through DBUS_SYSTEM_BUS_ADDRESS, as dbus-fast reads it): the
agent's own D-Bus calls, the property mapping, and the fall-back to the TCP probe.
(No `from __future__ import annotations`: dbus-fast reads the D-Bus signatures from the
annotations at class creation.)"""

import asyncio
import shutil
from typing import Annotated, Any

import pytest
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusSignature
from dbus_fast.constants import PropertyAccess
from dbus_fast.service import ServiceInterface, dbus_method, dbus_property

from agent.config import LineSection
from agent.line_monitor import LineMonitor
from mesh.line import LINE_DOWN, LineStatus

pytestmark = pytest.mark.skipif(shutil.which("dbus-daemon") is None, reason="no dbus-daemon")

MM = "org.freedesktop.ModemManager1"
Int32 = Annotated[int, DBusSignature("i")]
UInt32 = Annotated[int, DBusSignature("u")]
Quality = Annotated[list[Any], DBusSignature("(ub)")]


class FakeModem(ServiceInterface):
    """A modem's properties as ModemManager publishes them; a test sets them. The object
    manager at ModemManager's root path is dbus-fast's own, as ModemManager's is GLib's."""

    def __init__(self) -> None:
        super().__init__(f"{MM}.Modem")
        self.state = 11  # MM_MODEM_STATE_CONNECTED
        self.technologies = 1 << 14  # LTE
        self.quality = 80

    @dbus_property(access=PropertyAccess.READ)
    def State(self) -> Int32:
        return self.state

    @dbus_property(access=PropertyAccess.READ)
    def AccessTechnologies(self) -> UInt32:
        return self.technologies

    @dbus_property(access=PropertyAccess.READ)
    def SignalQuality(self) -> Quality:
        return [self.quality, True]


class FakeManager(ServiceInterface):
    """ModemManager's root interface (the agent only needs the path to exist)."""

    def __init__(self) -> None:
        super().__init__(MM)

    @dbus_method()
    def ScanDevices(self) -> None:
        return None


async def test_modem_state_technology_and_signal_become_the_line(
        bus_address: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", bus_address)
    backhaul = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = backhaul.sockets[0].getsockname()[1]
    service = await MessageBus(bus_address=bus_address).connect()
    fake = FakeModem()
    service.export(f"/{MM.replace('.', '/')}", FakeManager())
    service.export(f"/{MM.replace('.', '/')}/Modem/0", fake)
    await service.request_name(MM)
    changes: list[LineStatus] = []
    monitor = LineMonitor(LineSection(monitor="modemmanager", probe_host="127.0.0.1",
                                      probe_port=port), changes.append)
    try:
        line = await monitor.check()
        assert (line.connected, line.technology, line.signal_dbm) == (True, "lte", -63)
        assert line.backhaul_reachable and line.rtt_ms >= 1 and line.is_gateway
        fake.state, fake.technologies, fake.quality = 11, 1 << 15, 40
        line = await monitor.check()
        assert (line.technology, line.signal_dbm) == ("5g", -88)
        fake.state = 8  # registered, not connected: no line, whatever the probe says
        assert await monitor.check() == LINE_DOWN
        assert len(changes) == 3
        # ModemManager gone from the bus: the monitor falls back to the TCP probe.
        await service.release_name(MM)
        line = await monitor.check()
        assert line.backhaul_reachable and line.technology == "lte"  # the configured one
    finally:
        service.disconnect()
        backhaul.close()
        await backhaul.wait_closed()


async def test_without_a_reachable_bus_the_probe_decides(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path}/no-bus")
    monitor = LineMonitor(LineSection(monitor="modemmanager"), lambda status: None)
    assert await monitor.check() == LINE_DOWN
