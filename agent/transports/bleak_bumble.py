"""A bleak backend over Google's bumble: real bleak API, emulated radio.

`BumbleScanner` and `BumbleClient` implement bleak's backend interfaces
(`BaseBleakScanner`, `BaseBleakClient`) on a bumble `Device`, passed as the `bumble_device`
keyword: `BleakScanner(cb, [uuid], backend=BumbleScanner, bumble_device=dev)`,
`BleakClient(addr, backend=BumbleClient, bumble_device=dev, timeout=2.0)`; pass one
`connect_lock` per device too (a controller makes one LE connection at a time). The agent code
above it is the same as on BlueZ; only the radio is emulated.

`RangeLink` is bumble's in-process `LocalLink` with a range filter you control: an
advertisement, a connection request or ACL data reaches a controller only when
`in_range(a, b)` says the two radios hear each other, so a connection to an absent peer
times out as it does on real hardware. Like a real controller, `BumbleClient` refuses writes
larger than ATT_MTU - 3.

`make_device()` builds a powered bumble Device on a RangeLink, and `BumblePeripheral`
plays our GATT server and advertiser (the role BlueZ's D-Bus API plays on a Raspberry Pi).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, BaseBleakScanner
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import BleakError
from bumble import core, gatt, hci
from bumble.controller import Controller
from bumble.core import AdvertisingData
from bumble.device import Advertisement, Connection, Device, Peer
from bumble.host import Host
from bumble.link import LocalLink
from bumble.transport.common import AsyncPipeSink

ATT_HEADER = 3


class RangeLink(LocalLink):
    """A LocalLink whose radios only hear each other when `in_range(a, b)` is true."""

    def __init__(self, in_range: Callable[[str, str], bool] | None = None) -> None:
        super().__init__()
        self.in_range = in_range or (lambda a, b: True)
        self.dropped = 0

    def _name(self, controller: Any) -> str:
        return str(controller.name)

    def _hears(self, a: Any, b: Any) -> bool:
        if a is None or b is None:
            return False
        ok = bool(self.in_range(self._name(a), self._name(b)))
        if not ok:
            self.dropped += 1
        return ok

    def send_advertising_pdu(self, sender_controller: Any, packet: Any) -> None:
        loop = asyncio.get_running_loop()
        for c in self.controllers:
            if c is not sender_controller and self._hears(sender_controller, c):
                loop.call_soon(c.on_ll_advertising_pdu, packet)

    def send_acl_data(self, sender_controller: Any, destination_address: Any,
                      transport: Any, data: bytes) -> None:
        if transport == core.PhysicalTransport.LE:
            target = self.find_le_controller(destination_address)
            if not self._hears(sender_controller, target):
                return
        super().send_acl_data(sender_controller, destination_address, transport, data)


class EmulatedController(Controller):
    """bumble's Controller, plus the answer a real controller gives to a cancelled
    connection attempt (the emulator's cancel is a no-op, so the host would wait forever and
    a stale attempt could complete much later)."""

    def on_hci_le_create_connection_cancel_command(self, command: Any) -> Any:
        pending = self.pending_le_connection
        self.pending_le_connection = None
        if pending is not None:
            failed = hci.HCI_LE_Connection_Complete_Event(
                status=hci.HCI_ErrorCode.UNKNOWN_CONNECTION_IDENTIFIER_ERROR,
                connection_handle=0, role=hci.Role.CENTRAL,
                peer_address_type=pending.peer_address_type, peer_address=pending.peer_address,
                connection_interval=0, peripheral_latency=0, supervision_timeout=0,
                central_clock_accuracy=0)
            asyncio.get_running_loop().call_soon(self.send_hci_packet, failed)
        return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.SUCCESS)


async def make_device(link: RangeLink, name: str, address: str) -> Device:
    """A powered bumble Device named `name` (the RangeLink's key) with a random static
    address."""
    public = "00:" + address[3:]
    controller = EmulatedController(name, link=link, public_address=public)
    device = Device(address=hci.Address(address), host=Host(controller,
                                                            AsyncPipeSink(controller)))
    await device.power_on()
    return device


class BumbleScanner(BaseBleakScanner):
    """bleak scanner backend on a bumble Device (kwarg `bumble_device`)."""

    def __init__(self, detection_callback: Any, service_uuids: list[str] | None,
                 scanning_mode: str = "active", *, bumble_device: Device,
                 **kwargs: Any) -> None:
        super().__init__(detection_callback, service_uuids)
        self.device = bumble_device
        self.active = scanning_mode == "active"
        self._listening = False

    def _on_advertisement(self, adv: Advertisement) -> None:
        data = adv.data
        service_data: dict[str, bytes] = {}
        for ad_type in (AdvertisingData.SERVICE_DATA_16_BIT_UUID,
                        AdvertisingData.SERVICE_DATA_32_BIT_UUID,
                        AdvertisingData.SERVICE_DATA_128_BIT_UUID):
            for uuid, value in data.get_all(ad_type):
                service_data[_uuid(uuid)] = bytes(value)
        uuids = [_uuid(u) for u in
                 data.get(AdvertisingData.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS) or []]
        uuids += [u for u in service_data if u not in uuids]
        if not self.is_allowed_uuid(uuids):
            return
        name = data.get(AdvertisingData.COMPLETE_LOCAL_NAME)
        local_name = name if isinstance(name, str) else None
        address = str(adv.address).split("/", 1)[0]
        advertisement = AdvertisementData(
            local_name=local_name, manufacturer_data={}, service_data=service_data,
            service_uuids=uuids, tx_power=None, rssi=int(adv.rssi), platform_data=(adv,))
        device = self.create_or_update_device(address, address, local_name, adv,
                                              advertisement)
        self.call_detection_callbacks(device, advertisement)

    async def start(self) -> None:
        self.seen_devices = {}
        if not self._listening:
            self.device.on("advertisement", self._on_advertisement)
            self._listening = True
        await self.device.start_scanning(active=self.active, filter_duplicates=False)

    async def stop(self) -> None:
        if self._listening:
            self.device.remove_listener("advertisement", self._on_advertisement)
            self._listening = False
        if self.device.is_scanning:
            await self.device.stop_scanning()


class BumbleClient(BaseBleakClient):
    """bleak client backend on a bumble Device (kwarg `bumble_device`, optional `mtu`)."""

    def __init__(self, address_or_ble_device: BLEDevice | str, *,
                 disconnected_callback: Callable[[], None] | None = None, timeout: float = 10.0,
                 bumble_device: Device, mtu: int = 247,
                 connect_lock: asyncio.Lock | None = None, **kwargs: Any) -> None:
        super().__init__(address_or_ble_device, disconnected_callback=disconnected_callback,
                         timeout=timeout)
        self.device = bumble_device
        self.wanted_mtu = mtu
        self.connect_lock = connect_lock or asyncio.Lock()
        self.connection: Connection | None = None
        self.peer: Peer | None = None
        self._mtu = 23
        self._proxies: dict[int, Any] = {}

    @property
    def name(self) -> str:
        return self.address

    @property
    def mtu_size(self) -> int:
        return self._mtu

    @property
    def is_connected(self) -> bool:
        return self.connection is not None

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        """Connect, exchange the MTU and discover services; TimeoutError for absent peers."""
        async with self.connect_lock:  # a controller makes one LE connection at a time
            try:
                self.connection = await self.device.connect(self.address,
                                                            timeout=self._timeout)
            except (core.TimeoutError, core.ConnectionError) as exc:
                raise TimeoutError(f"no answer from {self.address}") from exc
            except core.BaseBumbleError as exc:
                raise BleakError(f"cannot connect to {self.address}: {exc}") from exc
        self.connection.on("disconnection", self._on_disconnection)
        self.peer = Peer(self.connection)
        if self.wanted_mtu > 23:
            self._mtu = await self.peer.request_mtu(self.wanted_mtu)
        await self.peer.discover_services()
        collection = BleakGATTServiceCollection()
        for service in self.peer.services:
            await service.discover_characteristics()
            bs = BleakGATTService(service, service.handle, _uuid(service.uuid))
            collection.add_service(bs)
            for ch in service.characteristics:
                props = [name for bit, name in _PROPERTIES if ch.properties & bit]
                bc = BleakGATTCharacteristic(
                    ch, ch.handle, _uuid(ch.uuid), props,  # type: ignore[arg-type]
                    lambda: self._mtu - ATT_HEADER, bs)
                collection.add_characteristic(bc)
                self._proxies[ch.handle] = ch
        self.services = collection

    def _on_disconnection(self, reason: int) -> None:
        self.connection = None
        self.peer = None
        if self._disconnected_callback is not None:
            self._disconnected_callback()

    async def disconnect(self) -> None:
        if self.connection is not None:
            connection = self.connection
            self.connection = None
            with contextlib.suppress(core.BaseBumbleError, hci.HCI_Error, TimeoutError):
                await connection.disconnect()

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        raise BleakError("pairing is not emulated")

    async def unpair(self) -> None:
        raise BleakError("pairing is not emulated")

    def _proxy(self, characteristic: BleakGATTCharacteristic) -> Any:
        if self.connection is None:
            raise BleakError("not connected")
        return self._proxies[characteristic.handle]

    async def read_gatt_char(self, characteristic: BleakGATTCharacteristic, *,
                             use_cached: bool = False, **kwargs: Any) -> bytearray:
        return bytearray(await self._proxy(characteristic).read_value())

    async def read_gatt_descriptor(self, descriptor: BleakGATTDescriptor, *,
                                   use_cached: bool = False, **kwargs: Any) -> bytearray:
        raise BleakError("descriptors are not emulated")

    async def write_gatt_char(self, characteristic: BleakGATTCharacteristic, data: Any,
                              response: bool) -> None:
        value = bytes(data)
        if len(value) > self._mtu - ATT_HEADER:
            raise BleakError(f"write of {len(value)} bytes exceeds ATT_MTU {self._mtu} - 3")
        await self._proxy(characteristic).write_value(value, with_response=response)

    async def write_gatt_descriptor(self, descriptor: BleakGATTDescriptor, data: Any) -> None:
        raise BleakError("descriptors are not emulated")

    async def start_notify(self, characteristic: BleakGATTCharacteristic,
                           callback: NotifyCallback, **kwargs: Any) -> None:
        await self._proxy(characteristic).subscribe(lambda value: callback(bytearray(value)))

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        await self._proxy(characteristic).unsubscribe()


def _uuid(uuid: Any) -> str:
    """bleak's spelling of a UUID: lower case with dashes."""
    return str(uuid.to_hex_str("-")).lower()


_PROPERTIES = [
    (gatt.Characteristic.Properties.READ, "read"),
    (gatt.Characteristic.Properties.WRITE, "write"),
    (gatt.Characteristic.Properties.WRITE_WITHOUT_RESPONSE, "write-without-response"),
    (gatt.Characteristic.Properties.NOTIFY, "notify"),
    (gatt.Characteristic.Properties.INDICATE, "indicate"),
]


class BumblePeripheral:
    """Our GATT server (RX written by centrals, TX notified to them) and advertiser."""

    def __init__(self, device: Device, service_uuid: str, rx_uuid: str, tx_uuid: str,
                 tag_uuid: str, max_mtu: int = 247) -> None:
        self.device = device
        self.service_uuid = core.UUID(service_uuid)
        self.on_write: Callable[[str, bytes], None] | None = None
        self.on_connect: Callable[[str], None] | None = None
        self.on_disconnect: Callable[[str], None] | None = None
        self.service_data: bytes | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.rx: gatt.Characteristic[bytes] = gatt.Characteristic(
            core.UUID(rx_uuid),
            gatt.Characteristic.Properties.WRITE
            | gatt.Characteristic.Properties.WRITE_WITHOUT_RESPONSE,
            gatt.Characteristic.WRITEABLE,
            gatt.CharacteristicValue(write=self._written))
        self.tx = gatt.Characteristic(core.UUID(tx_uuid), gatt.Characteristic.Properties.NOTIFY,
                                      gatt.Characteristic.READABLE, b"")
        self.tag: gatt.Characteristic[bytes] = gatt.Characteristic(
            core.UUID(tag_uuid), gatt.Characteristic.Properties.READ,
            gatt.Characteristic.READABLE, gatt.CharacteristicValue(read=self._read_tag))
        self.tags: dict[str, int] = {}
        device.add_service(gatt.Service(self.service_uuid, [self.rx, self.tx, self.tag]))
        device.gatt_server.max_mtu = max_mtu
        device.on("connection", self._on_connection)

    def _on_connection(self, connection: Connection) -> None:
        address = str(connection.peer_address).split("/", 1)[0]

        def gone(reason: int) -> None:
            self.tags.pop(address, None)
            if self.on_disconnect is not None:
                self.on_disconnect(address)

        connection.on("disconnection", gone)
        if connection.role == hci.Role.PERIPHERAL:
            # A controller stops advertising when a central connects; keep advertising so
            # that other neighbours can find and connect to us too.
            if self.service_data is not None:
                task = asyncio.get_running_loop().create_task(self.advertise(self.service_data))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            if self.on_connect is not None:
                self.on_connect(address)

    def tag_of(self, address: str) -> int:
        """The notification tag of a central (assigned on first use, 0..254)."""
        if address not in self.tags:
            used = set(self.tags.values())
            self.tags[address] = next(t for t in range(255) if t not in used)
        return self.tags[address]

    def _read_tag(self, connection: Connection) -> bytes:
        return bytes([self.tag_of(str(connection.peer_address).split("/", 1)[0])])

    def _written(self, connection: Connection, value: bytes) -> None:
        if self.on_write is not None:
            self.on_write(str(connection.peer_address).split("/", 1)[0], bytes(value))

    def mtu(self, address: str) -> int:
        connection = self._connection(address)
        return int(connection.att_mtu) if connection is not None else 23

    def _connection(self, address: str) -> Connection | None:
        for connection in self.device.connections.values():
            if str(connection.peer_address).split("/", 1)[0] == address:
                return connection
        return None

    async def advertise(self, service_data: bytes) -> None:
        """(Re)start connectable advertising carrying `service_data` under our service."""
        self.service_data = service_data
        data = bytes(AdvertisingData([
            (AdvertisingData.FLAGS, bytes([0x06])),
            (AdvertisingData.SERVICE_DATA_128_BIT_UUID, bytes(self.service_uuid) + service_data),
        ]))
        if len(data) > 31:
            raise ValueError(f"advertisement of {len(data)} bytes exceeds the 31-byte budget")
        if self.device.is_advertising:
            await self.device.stop_advertising()
        await self.device.start_advertising(advertising_data=data, auto_restart=True,
                                            advertising_interval_min=20,
                                            advertising_interval_max=20)

    async def notify(self, address: str, data: bytes) -> None:
        connection = self._connection(address)
        if connection is None:
            raise BleakError(f"{address} is not connected to us")
        value = bytes([self.tag_of(address)]) + data
        if len(value) > connection.att_mtu - ATT_HEADER:
            raise BleakError(f"notification of {len(value)} bytes exceeds ATT_MTU - 3")
        await self.device.notify_subscriber(connection, self.tx, value)

    async def stop(self) -> None:
        if self.device.is_advertising:
            await self.device.stop_advertising()
        for connection in list(self.device.connections.values()):
            with contextlib.suppress(core.BaseBumbleError, hci.HCI_Error, TimeoutError):
                await connection.disconnect()
