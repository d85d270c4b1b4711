"""UDP over one IP interface: broadcast/multicast for link_dst None, unicast otherwise.

IPv4 sends "to all" as a limited broadcast (255.255.255.255) on a socket bound to the
interface (SO_BINDTODEVICE), which needs no subnet configuration on a Wi-Fi Direct group or
an ad hoc cell. IPv6 uses link-local addresses and a link-local multicast group joined on the
interface only. Link addresses handed to the core are `(ip, port)`; for IPv6 the scope is
the interface, so it is stripped on the way in and added on the way out.
The link only translates: datagram -> `deliver`, and the driver's `send(link_dst, data)` ->
`sendto`. It reads the socket itself (`loop.add_reader`) rather than through asyncio's
datagram transport, which takes one datagram per pass of the event loop: under load that
pass (select, callbacks, the driver's flush) cost about as much as forwarding the frame.
Here each wake-up drains up to RX_BATCH datagrams, inside `batch()` (the driver's `held()`)
so that the core's output is flushed once per batch.

Linux's UDP segmentation offloads take the kernel's per-datagram cost off bulk data: a run of
equal-sized frames to one neighbour leaves in one `sendmsg` (UDP_SEGMENT, GSO), and the
socket asks for coalesced reads (UDP_GRO), one buffer holding many frames of one sender,
which the link splits again. Frames on the wire are the same datagrams; where the kernel
lacks either option the link sends and reads one datagram per call.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import socket
import struct
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any, cast

import ifaddr

from agent.config import UdpSection
from agent.transports import TransportError

__all__ = ["TransportError", "UdpLink", "open_udp_link"]

SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
LINK_LOCAL_WAIT_S = 10.0
RX_BATCH = 64
"""Datagrams read per wake-up at most, so that one busy link cannot starve the loop."""
TX_QUEUE = 1024
"""Datagrams held while the socket's send buffer is full; beyond that they are dropped."""
MAX_DATAGRAM = 65535
UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)
UDP_GRO = getattr(socket, "UDP_GRO", 104)
GSO_MAX_SEGMENTS = 64
"""The kernel's limit of segments in one UDP GSO send (UDP_MAX_SEGMENTS)."""
GSO_MAX_BYTES = 65000
"""A GSO send is one UDP datagram before segmentation: its payload stays under 64 KiB."""
GRO_CMSG = socket.CMSG_SPACE(4)
Batch = Callable[[], contextlib.AbstractContextManager[object]]
"""Wraps a burst of deliveries (the driver's `held`)."""


def interface_addresses(name: str) -> tuple[list[str], list[str]]:
    """(IPv4 addresses, IPv6 addresses without scope) of interface `name`."""
    for adapter in ifaddr.get_adapters():
        if adapter.name == name:
            v4 = [ip.ip for ip in adapter.ips if isinstance(ip.ip, str)]
            v6 = [ip.ip[0] for ip in adapter.ips if isinstance(ip.ip, tuple)]
            return v4, v6
    raise TransportError(f"no network interface named {name!r}")


def open_udp_socket(section: UdpSection) -> socket.socket:
    """A non-blocking UDP socket bound to `section.port` on `section.interface` only."""
    try:
        ifindex = socket.if_nametoindex(section.interface)
    except OSError as exc:
        raise TransportError(f"no network interface named {section.interface!r}") from exc
    family = socket.AF_INET if section.family == "ipv4" else socket.AF_INET6
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, section.interface.encode())
        if family == socket.AF_INET:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.bind(("0.0.0.0", section.port))
        else:
            group = socket.inet_pton(socket.AF_INET6, section.group)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(("::", section.port))
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP,
                            group + struct.pack("@I", ifindex))
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
        with contextlib.suppress(OSError):  # kernels before 5.0 have no UDP GRO
            sock.setsockopt(socket.IPPROTO_UDP, UDP_GRO, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 21)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise TransportError(f"cannot open UDP on {section.interface}: {exc.strerror}") from exc
    return sock


class UdpLink:
    """One UDP socket on one interface, as one link of the mesh core."""

    def __init__(self, section: UdpSection,
                 deliver: Callable[[bytes, str, Hashable], None],
                 batch: Batch | None = None) -> None:
        self.section = section
        self.iface = section.iface
        self.deliver = deliver
        self.batch = batch or contextlib.nullcontext
        self.ifindex = socket.if_nametoindex(section.interface)
        v4, v6 = interface_addresses(section.interface)
        self.own = set(v4 if section.family == "ipv4" else v6)
        self.sock: socket.socket | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._queue: deque[tuple[bytes, tuple[Any, ...]]] = deque()
        self.gso_max = MAX_DATAGRAM
        """Frames this size or larger go one by one: 0 once the kernel or the interface has
        refused UDP GSO, a frame's size once it was refused as a segment (above the MTU)."""
        self.rx = 0
        self.tx = 0
        self.tx_calls = 0
        """sendto/sendmsg calls: fewer than `tx` when GSO sends runs of frames in one."""
        self.rx_calls = 0
        """Successful reads: fewer than `rx` when GRO coalesces frames into one buffer."""
        self.rx_own = 0
        self.errors = 0
        self.tx_dropped = 0
        if section.family == "ipv4":
            self.all_dst: tuple[Any, ...] = ("255.255.255.255", section.port)
        else:
            self.all_dst = (section.group, section.port, 0, self.ifindex)

    def attach(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        self.sock, self.loop = sock, loop
        loop.add_reader(sock.fileno(), self._read_ready)

    def _read_ready(self) -> None:
        sock = self.sock
        if sock is None:
            return
        with self.batch():
            for _ in range(RX_BATCH):
                try:
                    data, ancillary, _flags, addr = sock.recvmsg(MAX_DATAGRAM, GRO_CMSG)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:  # an ICMP error queued on the socket: like error_received
                    self.errors += 1
                    continue
                self.rx_calls += 1
                size = _gro_size(ancillary)
                if not size or size >= len(data):
                    self.datagram_received(data, addr)
                    continue
                for start in range(0, len(data), size):  # frames coalesced by UDP GRO
                    self.datagram_received(data[start:start + size], addr)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        host = addr[0].split("%", 1)[0]
        if host in self.own and addr[1] == self.section.port:
            self.rx_own += 1  # our own broadcast, looped back by the kernel
            return
        self.rx += 1
        self.deliver(data, self.iface, (host, addr[1]))

    def _address(self, link_dst: Hashable | None) -> tuple[Any, ...]:
        if link_dst is None:
            return self.all_dst
        host, port = cast(tuple[str, int], link_dst)
        return (host, port) if self.section.family == "ipv4" else (host, port, 0, self.ifindex)

    def send(self, link_dst: Hashable | None, data: bytes) -> None:
        if self.sock is None:
            return
        self.tx += 1
        self._sendto(data, self._address(link_dst))

    def send_many(self, frames: list[tuple[Hashable | None, bytes]]) -> None:
        """Send in order; runs of equal-sized frames to one neighbour go out as one GSO send."""
        if self.sock is None:
            return
        self.tx += len(frames)
        i, count = 0, len(frames)
        while i < count:
            link_dst, data = frames[i]
            size, end = len(data), i + 1
            if link_dst is not None and size < self.gso_max and not self._queue:
                limit = min(count, i + GSO_MAX_SEGMENTS, i + GSO_MAX_BYTES // max(size, 1))
                while end < limit and frames[end][0] == link_dst and len(frames[end][1]) == size:
                    end += 1
            dst = self._address(link_dst)
            if end - i > 1 and self._send_segments([d for _, d in frames[i:end]], size, dst):
                i = end
                continue
            for _, each in frames[i:end]:
                self._sendto(each, dst)
            i = end

    def _send_segments(self, run: list[bytes], size: int, dst: tuple[Any, ...]) -> bool:
        """One GSO send of `run`; False if the kernel refuses it (send one by one instead)."""
        assert self.sock is not None
        self.tx_calls += 1
        try:
            self.sock.sendmsg([b"".join(run)],
                              [(socket.IPPROTO_UDP, UDP_SEGMENT, struct.pack("=H", size))],
                              0, dst)
        except (BlockingIOError, InterruptedError):
            for data in run:
                self._enqueue(data, dst)
            self._want_write()
        except OSError as exc:
            if exc.errno in (errno.EMSGSIZE, errno.EINVAL):  # a segment above the MTU
                self.gso_max = min(self.gso_max, size)
                return False
            if exc.errno in (errno.EIO, errno.EOPNOTSUPP, errno.ENOPROTOOPT):
                self.gso_max = 0  # no UDP GSO on this kernel or interface
                return False
            self.errors += 1
        return True

    def _sendto(self, data: bytes, dst: tuple[Any, ...]) -> None:
        if self._queue:
            self._enqueue(data, dst)
            return
        assert self.sock is not None
        self.tx_calls += 1
        try:
            self.sock.sendto(data, dst)
        except (BlockingIOError, InterruptedError):
            self._enqueue(data, dst)
            self._want_write()
        except OSError:  # unreachable, no route, ...: a lost frame, as on the air
            self.errors += 1

    def _want_write(self) -> None:
        assert self.loop is not None and self.sock is not None
        self.loop.add_writer(self.sock.fileno(), self._write_ready)

    def _enqueue(self, data: bytes, dst: tuple[Any, ...]) -> None:
        if len(self._queue) >= TX_QUEUE:
            self.tx_dropped += 1
            return
        self._queue.append((data, dst))

    def _write_ready(self) -> None:
        assert self.sock is not None and self.loop is not None
        while self._queue:
            data, dst = self._queue[0]
            try:
                self.sock.sendto(data, dst)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.errors += 1
            self._queue.popleft()
        self.loop.remove_writer(self.sock.fileno())

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None and self.loop is not None and not self.loop.is_closed():
            self.loop.remove_reader(sock.fileno())
            self.loop.remove_writer(sock.fileno())
        self._queue.clear()
        if sock is not None:
            sock.close()


def _gro_size(ancillary: list[tuple[int, int, bytes]]) -> int:
    """The segment size UDP GRO reports for a coalesced read; 0 for a single datagram."""
    for level, kind, value in ancillary:
        if level == socket.IPPROTO_UDP and kind == UDP_GRO and len(value) >= 4:
            return int(struct.unpack("=i", value[:4])[0])
    return 0


async def wait_link_local(interface: str, timeout_s: float) -> None:
    """Wait until `interface` has an IPv6 link-local address (it appears once the carrier is
    up and duplicate address detection is over, which may be after the agent starts)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        _, v6 = interface_addresses(interface)
        if any(ipaddress.IPv6Address(a).is_link_local for a in v6):
            return
        if loop.time() >= deadline:
            raise TransportError(f"{interface} has no IPv6 link-local address "
                                 f"after {timeout_s} s")
        await asyncio.sleep(0.1)


async def open_udp_link(section: UdpSection,
                        deliver: Callable[[bytes, str, Hashable], None],
                        batch: Batch | None = None) -> UdpLink:
    """Open the socket and start reading it; `batch()` wraps each burst of deliveries."""
    if section.family == "ipv6":
        await wait_link_local(section.interface, LINK_LOCAL_WAIT_S)
    sock = open_udp_socket(section)
    link = UdpLink(section, deliver, batch)
    link.attach(sock, asyncio.get_running_loop())
    return link
