"""The BLE peripheral role on Linux: a BlueZ advertisement and GATT application over D-Bus.

bleak is central-only, and `bless` cannot put service data into an advert, so the agent
exports its own D-Bus objects (dbus-fast) and registers them with BlueZ:
- `org.bluez.LEAdvertisement1` at `<root>/advertisement0`: a peripheral advert with our
  service data (node id + line, see agent.transports.ble), registered with
  `LEAdvertisingManager1.RegisterAdvertisement` on the adapter;
- a GATT application at `<root>` (`org.freedesktop.DBus.ObjectManager`) with our service,
  its RX characteristic (write / write-without-response), TX (notify) and TAG (read),
  registered with `GattManager1.RegisterApplication`. BlueZ calls
  `WriteValue(value, {"device": path, "mtu": n})` for each write (the device path gives the
  writer's address) and `ReadValue({"device": path})` for TAG, which answers each central
  with its own tag.

BlueZ's D-Bus API notifies all subscribed centrals at once (a `PropertiesChanged` of TX's
`Value`), so each notification starts with the tag of the central it is for; the others drop
it (see agent.transports.ble).
"""

import asyncio
import contextlib
from collections.abc import Callable
from typing import Annotated, Any

from dbus_fast import BusType, DBusError, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusDict, DBusSignature, DBusStr
from dbus_fast.service import PropertyAccess, ServiceInterface, dbus_method, dbus_property

from agent.transports import TransportError

BLUEZ = "org.bluez"
ROOT = "/org/manet/agent"

DBusBytes = Annotated[bytes, DBusSignature("ay")]
DBusStrList = Annotated[list[str], DBusSignature("as")]
DBusObject = Annotated[str, DBusSignature("o")]
ManagedObjects = Annotated[dict[str, dict[str, dict[str, Variant]]],
                           DBusSignature("a{oa{sa{sv}}}")]


def address_of(device_path: str) -> str:
    """/org/bluez/hci0/dev_AA_BB_CC_DD_EE_FF -> AA:BB:CC:DD:EE:FF."""
    tail = device_path.rsplit("/", 1)[-1]
    if not tail.startswith("dev_"):
        raise ValueError(f"not a BlueZ device path: {device_path}")
    return tail[4:].replace("_", ":")


class Advertisement(ServiceInterface):
    """org.bluez.LEAdvertisement1 carrying our service data."""

    def __init__(self, service_uuid: str, data: bytes) -> None:
        super().__init__("org.bluez.LEAdvertisement1")
        self.service_uuid = service_uuid
        self.data = data
        self.released = False

    @dbus_method()
    def Release(self) -> None:
        self.released = True

    @dbus_property(access=PropertyAccess.READ)
    def Type(self) -> DBusStr:
        return "peripheral"

    @dbus_property(access=PropertyAccess.READ)
    def ServiceData(self) -> DBusDict:
        return {self.service_uuid: Variant("ay", self.data)}

    @dbus_property(access=PropertyAccess.READ)
    def Discoverable(self) -> Annotated[bool, DBusSignature("b")]:
        return True


class GattService(ServiceInterface):
    def __init__(self, uuid: str) -> None:
        super().__init__("org.bluez.GattService1")
        self.uuid = uuid

    def managed(self) -> dict[str, Variant]:
        return {"UUID": Variant("s", self.uuid), "Primary": Variant("b", True)}

    @dbus_property(access=PropertyAccess.READ)
    def UUID(self) -> DBusStr:
        return self.uuid

    @dbus_property(access=PropertyAccess.READ)
    def Primary(self) -> Annotated[bool, DBusSignature("b")]:
        return True


class RxCharacteristic(ServiceInterface):
    """The characteristic neighbours write frames to."""

    def __init__(self, uuid: str, service_path: str,
                 on_write: Callable[[str, bytes, int], None]) -> None:
        super().__init__("org.bluez.GattCharacteristic1")
        self.uuid = uuid
        self.service_path = service_path
        self.on_write = on_write

    def managed(self) -> dict[str, Variant]:
        return {"UUID": Variant("s", self.uuid), "Service": Variant("o", self.service_path),
                "Flags": Variant("as", ["write", "write-without-response"])}

    @dbus_property(access=PropertyAccess.READ)
    def UUID(self) -> DBusStr:
        return self.uuid

    @dbus_property(access=PropertyAccess.READ)
    def Service(self) -> DBusObject:
        return self.service_path

    @dbus_property(access=PropertyAccess.READ)
    def Flags(self) -> DBusStrList:
        return ["write", "write-without-response"]

    @dbus_method()
    def WriteValue(self, value: DBusBytes, options: DBusDict) -> None:
        device = options.get("device")
        if device is None:
            raise DBusError("org.bluez.Error.InvalidArguments", "no device in options")
        mtu = options.get("mtu")
        try:
            address = address_of(str(device.value))
        except ValueError as exc:
            raise DBusError("org.bluez.Error.InvalidArguments", str(exc)) from exc
        self.on_write(address, bytes(value), int(mtu.value) if mtu is not None else 23)

    @dbus_method()
    def ReadValue(self, options: DBusDict) -> DBusBytes:
        return b""


class TxCharacteristic(ServiceInterface):
    """Frames to centrals: each `Value` change is a notification to every subscriber."""

    def __init__(self, uuid: str, service_path: str) -> None:
        super().__init__("org.bluez.GattCharacteristic1")
        self.uuid = uuid
        self.service_path = service_path
        self.value = b""
        self.notifying = False

    def managed(self) -> dict[str, Variant]:
        return {"UUID": Variant("s", self.uuid), "Service": Variant("o", self.service_path),
                "Flags": Variant("as", ["notify"])}

    @dbus_property(access=PropertyAccess.READ)
    def UUID(self) -> DBusStr:
        return self.uuid

    @dbus_property(access=PropertyAccess.READ)
    def Service(self) -> DBusObject:
        return self.service_path

    @dbus_property(access=PropertyAccess.READ)
    def Flags(self) -> DBusStrList:
        return ["notify"]

    @dbus_property(access=PropertyAccess.READ)
    def Value(self) -> DBusBytes:
        return self.value

    @dbus_method()
    def StartNotify(self) -> None:
        self.notifying = True

    @dbus_method()
    def StopNotify(self) -> None:
        self.notifying = False

    def send(self, value: bytes) -> None:
        self.value = value
        self.emit_properties_changed({"Value": value})


class TagCharacteristic(ServiceInterface):
    """Answers each reading central with its notification tag."""

    def __init__(self, uuid: str, service_path: str, tag_of: Callable[[str], int]) -> None:
        super().__init__("org.bluez.GattCharacteristic1")
        self.uuid = uuid
        self.service_path = service_path
        self.tag_of = tag_of

    def managed(self) -> dict[str, Variant]:
        return {"UUID": Variant("s", self.uuid), "Service": Variant("o", self.service_path),
                "Flags": Variant("as", ["read"])}

    @dbus_property(access=PropertyAccess.READ)
    def UUID(self) -> DBusStr:
        return self.uuid

    @dbus_property(access=PropertyAccess.READ)
    def Service(self) -> DBusObject:
        return self.service_path

    @dbus_property(access=PropertyAccess.READ)
    def Flags(self) -> DBusStrList:
        return ["read"]

    @dbus_method()
    def ReadValue(self, options: DBusDict) -> DBusBytes:
        device = options.get("device")
        if device is None:
            raise DBusError("org.bluez.Error.InvalidArguments", "no device in options")
        try:
            return bytes([self.tag_of(address_of(str(device.value)))])
        except ValueError as exc:
            raise DBusError("org.bluez.Error.InvalidArguments", str(exc)) from exc


GattObject = GattService | RxCharacteristic | TxCharacteristic | TagCharacteristic


class Application(ServiceInterface):
    """The ObjectManager BlueZ asks for the service and its characteristic."""

    def __init__(self, objects: dict[str, GattObject]) -> None:
        super().__init__("org.freedesktop.DBus.ObjectManager")
        self.objects = objects

    @dbus_method()
    def GetManagedObjects(self) -> ManagedObjects:
        return {path: {iface.name: iface.managed()} for path, iface in self.objects.items()}


class BluezPeripheral:
    """Our GATT server and advertiser on a BlueZ adapter (see the module docstring)."""

    def __init__(self, service_uuid: str, rx_uuid: str, tx_uuid: str, tag_uuid: str, *,
                 adapter: str = "hci0",
                 bus_address: str | None = None, root: str = ROOT) -> None:
        self.service_uuid = service_uuid
        self.rx_uuid = rx_uuid
        self.tx_uuid = tx_uuid
        self.tag_uuid = tag_uuid
        self.tx: TxCharacteristic | None = None
        self.tags: dict[str, int] = {}
        self.adapter_path = f"/org/bluez/{adapter}"
        self.bus_address = bus_address
        self.root = root
        self.on_write: Callable[[str, bytes], None] | None = None
        self.on_connect: Callable[[str], None] | None = None
        self.on_disconnect: Callable[[str], None] | None = None
        self.bus: MessageBus | None = None
        self.advert: Advertisement | None = None
        self.mtus: dict[str, int] = {}
        self.writes = 0

    def _written(self, address: str, data: bytes, mtu: int) -> None:
        self.writes += 1
        self.mtus[address] = mtu
        if self.on_write is not None:
            self.on_write(address, data)

    async def _manager(self, interface: str) -> Any:
        assert self.bus is not None
        intro = await self.bus.introspect(BLUEZ, self.adapter_path)
        proxy = self.bus.get_proxy_object(BLUEZ, self.adapter_path, intro)
        return proxy.get_interface(interface)

    async def _connect(self) -> None:
        if self.bus is not None:
            return
        try:
            if self.bus_address is not None:
                self.bus = await MessageBus(bus_address=self.bus_address).connect()
            else:
                self.bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
        except (OSError, ValueError) as exc:
            raise TransportError(f"cannot reach the D-Bus system bus: {exc}") from exc
        service_path = f"{self.root}/service0"
        rx_path = f"{service_path}/char0"
        service = GattService(self.service_uuid)
        rx = RxCharacteristic(self.rx_uuid, service_path, self._written)
        self.tx = TxCharacteristic(self.tx_uuid, service_path)
        tag = TagCharacteristic(self.tag_uuid, service_path, self.tag_of)
        objects: dict[str, GattObject] = {service_path: service, rx_path: rx,
                                          f"{service_path}/char1": self.tx,
                                          f"{service_path}/char2": tag}
        for path, obj in objects.items():
            self.bus.export(path, obj)
        self.bus.export(self.root, Application(objects))
        try:
            gatt = await self._manager("org.bluez.GattManager1")
            await gatt.call_register_application(self.root, {})
        except DBusError as exc:
            raise TransportError(f"BlueZ refused our GATT application: {exc}") from exc

    async def advertise(self, service_data: bytes) -> None:
        """(Re)register the advertisement with the new service data."""
        await self._connect()
        assert self.bus is not None
        path = f"{self.root}/advertisement0"
        manager = await self._manager("org.bluez.LEAdvertisingManager1")
        if self.advert is not None:
            with contextlib.suppress(DBusError):
                await manager.call_unregister_advertisement(path)
            self.bus.unexport(path)
        self.advert = Advertisement(self.service_uuid, service_data)
        self.bus.export(path, self.advert)
        try:
            await manager.call_register_advertisement(path, {})
        except DBusError as exc:
            raise TransportError(f"BlueZ refused our advertisement: {exc}") from exc

    def tag_of(self, address: str) -> int:
        """The notification tag of a central (assigned on first use, 0..254)."""
        if address not in self.tags:
            used = set(self.tags.values())
            free = [t for t in range(255) if t not in used]
            if not free:
                raise ValueError("255 centrals already have a tag")
            self.tags[address] = free[0]
        return self.tags[address]

    async def notify(self, address: str, data: bytes) -> None:
        """Notify `data` tagged for `address` (BlueZ sends it to every subscribed central)."""
        if self.tx is None:
            raise TransportError("the GATT application is not registered")
        value = bytes([self.tag_of(address)]) + data
        if len(value) > self.mtu(address) - 3:
            raise TransportError(f"notification of {len(value)} bytes exceeds ATT_MTU - 3")
        self.tx.send(value)

    def mtu(self, address: str) -> int:
        return self.mtus.get(address, 23)

    async def stop(self) -> None:
        if self.bus is None:
            return
        with contextlib.suppress(DBusError, TransportError, OSError):
            manager = await self._manager("org.bluez.LEAdvertisingManager1")
            if self.advert is not None:
                await manager.call_unregister_advertisement(f"{self.root}/advertisement0")
            gatt = await self._manager("org.bluez.GattManager1")
            await gatt.call_unregister_application(self.root)
        self.bus.disconnect()
        with contextlib.suppress(asyncio.TimeoutError, OSError):
            await asyncio.wait_for(self.bus.wait_for_disconnect(), 2.0)
        self.bus = None
