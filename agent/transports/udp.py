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
"""

from __future__ import annotations

import asyncio
import contextlib
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
        self.rx = 0
        self.tx = 0
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
                    data, addr = sock.recvfrom(MAX_DATAGRAM)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:  # an ICMP error queued on the socket: like error_received
                    self.errors += 1
                    continue
                self.datagram_received(data, addr)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        host = addr[0].split("%", 1)[0]
        if host in self.own and addr[1] == self.section.port:
            self.rx_own += 1  # our own broadcast, looped back by the kernel
            return
        self.rx += 1
        self.deliver(data, self.iface, (host, addr[1]))

    def send(self, link_dst: Hashable | None, data: bytes) -> None:
        if self.sock is None:
            return
        if link_dst is None:
            dst = self.all_dst
        else:
            host, port = cast(tuple[str, int], link_dst)
            dst = (host, port) if self.section.family == "ipv4" else (host, port, 0, self.ifindex)
        self.tx += 1
        if self._queue:
            self._enqueue(data, dst)
            return
        try:
            self.sock.sendto(data, dst)
        except (BlockingIOError, InterruptedError):
            self._enqueue(data, dst)
            assert self.loop is not None
            self.loop.add_writer(self.sock.fileno(), self._write_ready)
        except OSError:  # unreachable, no route, ...: a lost frame, as on the air
            self.errors += 1

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
