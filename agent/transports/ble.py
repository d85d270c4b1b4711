"""The BLE link: adverts for discovery, GATT for frames, through bleak.

- Discovery: every node advertises our 128-bit service UUID with 10 bytes of service data,
  its node id (8 bytes) and a compact line status (2 bytes), which fits the 31-byte legacy
  advert with the flags (3 + 2 + 16 + 10 = 31). A scanner learns who is around and who has a
  line before any connection.
- Frames: each node serves RX (written by centrals) and TX (notified to them). Of two
  neighbours, the one with the smaller node id connects (bleak `BleakClient`) so that one
  connection carries both directions: central -> peripheral by write-without-response to RX,
  peripheral -> central by notification on TX. BLE has no broadcast on a connection, so a
  "to all" frame is sent on every connection.
- Tags: a peripheral may only be able to notify all its subscribed centrals at once (BlueZ's
  D-Bus API works that way), so each notification starts with a one-byte tag naming the
  central it is for (0xFF: all). A central reads its tag from the TAG characteristic (the
  peripheral answers each reader with its own) and drops notifications for others.
- Size: a write or notification carries at most ATT_MTU - 3 bytes; with the tag, the core
  fragments its frames to ATT_MTU - 4 (the link MTU we give it), and anything larger is
  refused here (counted), as the controller would.
- Order: each peer has a bounded queue and one writer task, so frames (and the fragments of
  one frame) leave in order; a full queue drops (counted) rather than grow.

The peripheral role (GATT server + advertising) is an object with `advertise`, `notify`,
`on_write`, `on_connect`, `on_disconnect`: `BumblePeripheral` in emulation; on BlueZ it is a
D-Bus GATT application and LEAdvertisement1 (see docs/agent.md for its status).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Protocol

from bleak import BleakClient, BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakError

from agent.transports import TransportError
from mesh.line import TECHNOLOGIES, LineStatus

SERVICE_UUID = "7d2e0001-1c0a-4c5e-9a51-6d0f1b5a0001"
RX_UUID = "7d2e0002-1c0a-4c5e-9a51-6d0f1b5a0001"
TX_UUID = "7d2e0003-1c0a-4c5e-9a51-6d0f1b5a0001"
TAG_UUID = "7d2e0004-1c0a-4c5e-9a51-6d0f1b5a0001"
ALL_TAG = 0xFF
"""Notification tag meaning "for every central"."""
LINK_OVERHEAD = 4
"""ATT header (3) + our notification tag (1): frames are at most ATT_MTU - 4 bytes."""
ADVERT_LEN = 10
QUEUE_FRAMES = 256
ATT_HEADER = 3


class AdvertError(ValueError):
    """Service data that is not a mesh advert (wrong length or out-of-range fields)."""


def encode_advert(node_id: bytes, line: LineStatus) -> bytes:
    """node id (8) + flags/technology (1: bit0 connected, bit1 backhaul, bits 2-4 tech)
    + signal (1: -dBm, 0 = unknown)."""
    tech = TECHNOLOGIES.index(line.technology) if line.technology in TECHNOLOGIES else 7
    flags = (1 if line.connected else 0) | (2 if line.backhaul_reachable else 0) | (tech << 2)
    return node_id + bytes([flags, min(255, max(0, -line.signal_dbm))])


def decode_advert(data: bytes) -> tuple[bytes, LineStatus]:
    if len(data) != ADVERT_LEN:
        raise AdvertError(f"a mesh advert is {ADVERT_LEN} bytes, got {len(data)}")
    flags, signal = data[8], data[9]
    tech = (flags >> 2) & 0x07
    if flags >> 5:
        raise AdvertError("reserved advert bits set")
    return data[:8], LineStatus(connected=bool(flags & 1), technology=TECHNOLOGIES[tech],
                                signal_dbm=-signal, backhaul_reachable=bool(flags & 2))


class Peripheral(Protocol):
    on_write: Callable[[str, bytes], None] | None
    on_connect: Callable[[str], None] | None
    on_disconnect: Callable[[str], None] | None

    async def advertise(self, service_data: bytes) -> None: ...
    async def notify(self, address: str, data: bytes) -> None: ...
    def mtu(self, address: str) -> int: ...
    async def stop(self) -> None: ...


@dataclass(slots=True)
class BlePeer:
    """A node heard advertising."""

    address: str
    node_id: bytes
    line: LineStatus
    rssi: int
    last_seen: float


class BleLink:
    """One BLE radio as one link of the mesh core."""

    def __init__(self, *, iface: str, node_id: bytes,
                 deliver: Callable[[bytes, str, Hashable], None], peripheral: Peripheral,
                 att_mtu: int = 247, connect_timeout_s: float = 5.0,
                 retry_s: float = 10.0, bleak_kwargs: dict[str, Any] | None = None,
                 scanner_backend: Any = None, client_backend: Any = None) -> None:
        self.iface = iface
        self.node_id = node_id
        self.deliver = deliver
        self.peripheral = peripheral
        self.att_mtu = att_mtu
        self.connect_timeout_s = connect_timeout_s
        self.retry_s = retry_s
        self.bleak_kwargs = bleak_kwargs or {}
        self.scanner_backend = scanner_backend
        self.client_backend = client_backend
        self.peers: dict[str, BlePeer] = {}
        self.clients: dict[str, BleakClient] = {}  # peers we reach as central
        self.centrals: set[str] = set()  # peers connected to us
        self.queues: dict[str, asyncio.Queue[bytes]] = {}
        self.writers: dict[str, asyncio.Task[None]] = {}
        self.connecting: set[str] = set()
        self.failed: dict[str, float] = {}
        self.scanner: BleakScanner | None = None
        self.line = LineStatus()
        self.rx = 0
        self.tx = 0
        self.tags: dict[str, int] = {}  # our tag at each peer we reach as central
        self.stats: dict[str, int] = {"too_large": 0, "queue_full": 0, "write_errors": 0,
                                      "connect_timeouts": 0, "connect_errors": 0,
                                      "bad_adverts": 0, "not_for_us": 0}
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def frame_mtu(self) -> int:
        return self.att_mtu - LINK_OVERHEAD

    async def start(self) -> None:
        self.peripheral.on_write = self._on_write
        self.peripheral.on_connect = self._on_central
        self.peripheral.on_disconnect = self._on_gone
        await self.peripheral.advertise(encode_advert(self.node_id, self.line))
        kwargs: dict[str, Any] = dict(self.bleak_kwargs)
        if self.scanner_backend is not None:
            kwargs["backend"] = self.scanner_backend
        self.scanner = BleakScanner(self._on_advert, [SERVICE_UUID], **kwargs)
        await self.scanner.start()

    async def update_line(self, line: LineStatus) -> None:
        """Re-advertise with the new line status."""
        self.line = line
        await self.peripheral.advertise(encode_advert(self.node_id, line))

    # ----------------------------------------------------------------- discovery

    def _on_advert(self, device: BLEDevice, adv: AdvertisementData) -> None:
        data = adv.service_data.get(SERVICE_UUID)
        if data is None:
            return
        try:
            node_id, line = decode_advert(data)
        except AdvertError:
            self.stats["bad_adverts"] += 1
            return
        if node_id == self.node_id:
            return
        now = asyncio.get_running_loop().time()
        self.peers[device.address] = BlePeer(device.address, node_id, line, adv.rssi, now)
        if len(self.peers) > 1024:
            oldest = min(self.peers.values(), key=lambda p: p.last_seen)
            del self.peers[oldest.address]
        address = device.address
        if (self.node_id < node_id and address not in self.clients
                and address not in self.connecting
                and now - self.failed.get(address, -1e9) >= self.retry_s):
            self.connecting.add(address)
            self._spawn(self._connect(address))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, address: str) -> None:
        kwargs: dict[str, Any] = dict(self.bleak_kwargs)
        if self.client_backend is not None:
            kwargs["backend"] = self.client_backend
        client = BleakClient(address, disconnected_callback=lambda c: self._on_gone(address),
                             timeout=self.connect_timeout_s, **kwargs)
        try:
            await client.connect()
            tag = bytes(await client.read_gatt_char(TAG_UUID))
            if len(tag) != 1:
                raise BleakError(f"{address} gave a {len(tag)}-byte tag")
            self.tags[address] = tag[0]
            await client.start_notify(
                TX_UUID, lambda ch, data: self._on_notify(address, bytes(data)))
        except TimeoutError:
            self.stats["connect_timeouts"] += 1
            self.failed[address] = asyncio.get_running_loop().time()
            return
        except (BleakError, OSError):
            self.stats["connect_errors"] += 1
            self.failed[address] = asyncio.get_running_loop().time()
            with contextlib.suppress(BleakError, OSError, TimeoutError):
                await client.disconnect()
            return
        finally:
            self.connecting.discard(address)
        self.clients[address] = client
        self._open_queue(address)

    def _on_central(self, address: str) -> None:
        self.centrals.add(address)
        self._open_queue(address)

    def _on_gone(self, address: str) -> None:
        self.clients.pop(address, None)
        self.tags.pop(address, None)
        self.centrals.discard(address)
        writer = self.writers.pop(address, None)
        if writer is not None:
            writer.cancel()
        self.queues.pop(address, None)

    # ----------------------------------------------------------------- frames

    def _on_write(self, address: str, data: bytes) -> None:
        self._on_frame(address, data)

    def _on_notify(self, address: str, data: bytes) -> None:
        if not data or data[0] not in (ALL_TAG, self.tags.get(address)):
            self.stats["not_for_us"] += 1
            return
        self._on_frame(address, data[1:])

    def _on_frame(self, address: str, data: bytes) -> None:
        self.rx += 1
        self.deliver(data, self.iface, address)

    def _open_queue(self, address: str) -> None:
        if address in self.queues:
            return
        queue: asyncio.Queue[bytes] = asyncio.Queue(QUEUE_FRAMES)
        self.queues[address] = queue
        self.writers[address] = asyncio.get_running_loop().create_task(
            self._writer(address, queue))

    def connected(self) -> list[str]:
        return sorted(self.queues)

    def send(self, link_dst: Hashable | None, data: bytes) -> None:
        if len(data) > self.frame_mtu:
            self.stats["too_large"] += 1
            raise TransportError(f"{len(data)}-byte frame > BLE payload {self.frame_mtu}")
        targets = self.connected() if link_dst is None else [str(link_dst)]
        for address in targets:
            queue = self.queues.get(address)
            if queue is None:
                continue
            try:
                queue.put_nowait(data)
            except asyncio.QueueFull:
                self.stats["queue_full"] += 1

    async def _writer(self, address: str, queue: asyncio.Queue[bytes]) -> None:
        while True:
            data = await queue.get()
            try:
                client = self.clients.get(address)
                if client is not None:
                    await client.write_gatt_char(RX_UUID, data, response=False)
                else:
                    await self.peripheral.notify(address, data)
                self.tx += 1
            except (BleakError, OSError, TimeoutError):
                self.stats["write_errors"] += 1

    async def close_async(self) -> None:
        for task in [*self._tasks, *self.writers.values()]:
            task.cancel()
        for task in [*self._tasks, *self.writers.values()]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.scanner is not None:
            with contextlib.suppress(BleakError, OSError):
                await self.scanner.stop()
        for client in list(self.clients.values()):
            with contextlib.suppress(BleakError, OSError, TimeoutError):
                await client.disconnect()
        await self.peripheral.stop()

    def close(self) -> None:
        """Synchronous close for the agent's shutdown path: schedules the async one."""
        task = asyncio.get_running_loop().create_task(self.close_async())
        self._tasks.add(task)
