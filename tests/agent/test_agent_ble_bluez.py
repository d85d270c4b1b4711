"""The BlueZ peripheral (advertisement + GATT application over D-Bus) against a fake BlueZ
on a private D-Bus daemon: the same calls BlueZ makes, checked from BlueZ's side."""

import asyncio
import shutil
from typing import Any

import pytest
from dbus_fast import Variant
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusDict, DBusObjectPath
from dbus_fast.service import ServiceInterface, dbus_method

from agent.transports.ble import (
    RX_UUID,
    SERVICE_UUID,
    TAG_UUID,
    TX_UUID,
    decode_advert,
    encode_advert,
)
from agent.transports.ble_bluez import BluezPeripheral, address_of
from mesh.line import LineStatus

pytestmark = pytest.mark.skipif(shutil.which("dbus-daemon") is None, reason="no dbus-daemon")


class FakeAdvertisingManager(ServiceInterface):
    def __init__(self) -> None:
        super().__init__("org.bluez.LEAdvertisingManager1")
        self.calls: list[tuple[str, str]] = []

    @dbus_method()
    def RegisterAdvertisement(self, path: DBusObjectPath, options: DBusDict) -> None:
        self.calls.append(("register", path))

    @dbus_method()
    def UnregisterAdvertisement(self, path: DBusObjectPath) -> None:
        self.calls.append(("unregister", path))


class FakeGattManager(ServiceInterface):
    def __init__(self) -> None:
        super().__init__("org.bluez.GattManager1")
        self.calls: list[tuple[str, str]] = []

    @dbus_method()
    def RegisterApplication(self, path: DBusObjectPath, options: DBusDict) -> None:
        self.calls.append(("register", path))

    @dbus_method()
    def UnregisterApplication(self, path: DBusObjectPath) -> None:
        self.calls.append(("unregister", path))


def device(n: int) -> Variant:
    return Variant("o", f"/org/bluez/hci0/dev_AA_BB_CC_DD_EE_{n:02X}")


async def test_peripheral_registers_and_serves_like_bluez_expects(bus_address: str) -> None:
    bluez = await MessageBus(bus_address=bus_address).connect()
    adverts, gatt = FakeAdvertisingManager(), FakeGattManager()
    bluez.export("/org/bluez/hci0", adverts)
    bluez.export("/org/bluez/hci0", gatt)
    await bluez.request_name("org.bluez")
    peripheral = BluezPeripheral(SERVICE_UUID, RX_UUID, TX_UUID, TAG_UUID,
                                 bus_address=bus_address)
    writes: list[tuple[str, bytes]] = []
    peripheral.on_write = lambda address, data: writes.append((address, data))
    line = LineStatus(True, "lte", -70, True, 20)
    try:
        await peripheral.advertise(encode_advert(b"\x07" * 8, line))
        assert gatt.calls == [("register", "/org/manet/agent")]
        assert adverts.calls == [("register", "/org/manet/agent/advertisement0")]
        assert peripheral.bus is not None
        owner = peripheral.bus.unique_name
        assert owner is not None

        async def interface(path: str, name: str) -> Any:
            intro = await bluez.introspect(owner, path)
            return bluez.get_proxy_object(owner, path, intro).get_interface(name)

        # BlueZ reads the advertisement's properties.
        props = await interface("/org/manet/agent/advertisement0",
                                "org.freedesktop.DBus.Properties")
        adv = await props.call_get_all("org.bluez.LEAdvertisement1")
        assert adv["Type"].value == "peripheral"
        data = adv["ServiceData"].value[SERVICE_UUID].value
        assert decode_advert(data) == (b"\x07" * 8, LineStatus(True, "lte", -70, True, 0))
        assert 3 + 2 + 16 + len(data) <= 31

        # ... and the GATT application's objects.
        manager = await interface("/org/manet/agent", "org.freedesktop.DBus.ObjectManager")
        objects = await manager.call_get_managed_objects()
        by_uuid = {ifaces["org.bluez.GattCharacteristic1"]["UUID"].value: path
                   for path, ifaces in objects.items()
                   if "org.bluez.GattCharacteristic1" in ifaces}
        assert set(by_uuid) == {RX_UUID, TX_UUID, TAG_UUID}
        chars = {u: await interface(p, "org.bluez.GattCharacteristic1")
                 for u, p in by_uuid.items()}

        # A central writes a frame; two centrals read their tags.
        await chars[RX_UUID].call_write_value(b"frame", {"device": device(1),
                                                         "mtu": Variant("q", 185)})
        assert writes == [("AA:BB:CC:DD:EE:01", b"frame")]
        assert peripheral.mtu("AA:BB:CC:DD:EE:01") == 185
        assert await chars[TAG_UUID].call_read_value({"device": device(1)}) == b"\x00"
        assert await chars[TAG_UUID].call_read_value({"device": device(2)}) == b"\x01"

        # A notification for central 1 goes out tagged for it.
        tx_props = await interface(by_uuid[TX_UUID], "org.freedesktop.DBus.Properties")
        seen: asyncio.Queue[bytes] = asyncio.Queue()
        tx_props.on_properties_changed(
            lambda iface, changed, invalidated: seen.put_nowait(changed["Value"].value))
        await peripheral.notify("AA:BB:CC:DD:EE:01", b"hello")
        assert await asyncio.wait_for(seen.get(), 5) == b"\x00hello"

        # A line change re-registers the advertisement.
        await peripheral.advertise(encode_advert(b"\x07" * 8, LineStatus()))
        assert adverts.calls[-2:] == [("unregister", "/org/manet/agent/advertisement0"),
                                      ("register", "/org/manet/agent/advertisement0")]
    finally:
        await peripheral.stop()
        bluez.disconnect()
    assert ("unregister", "/org/manet/agent") in gatt.calls


def test_device_paths() -> None:
    assert address_of("/org/bluez/hci0/dev_AA_BB_CC_DD_EE_0F") == "AA:BB:CC:DD:EE:0F"
    with pytest.raises(ValueError):
        address_of("/org/bluez/hci0")
