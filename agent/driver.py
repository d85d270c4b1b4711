"""Drives one sans-I/O mesh core from asyncio: one timer, transports out, events to listeners.

This is the aioquic pattern: after every input (a datagram, a timer, a local send, a line
change) the driver drains the core's outgoing datagrams into the transports, hands its
events to the listeners, and re-arms one `loop.call_at` at `core.get_timer()`. The timer
callback clamps `now = max(deadline, loop.time())` so the core never sees an early wake-up.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Hashable, Iterator
from typing import Any, Protocol

from agent.transports import TransportError
from mesh.events import Event
from mesh.line import LineStatus


class Core(Protocol):
    """What the driver needs of a mesh core (mesh.node.MeshNode provides it)."""

    def receive(self, data: bytes, iface: str, link_src: Hashable, now: float) -> None: ...
    def handle_timer(self, now: float) -> None: ...
    def get_timer(self) -> float | None: ...
    def send_data(self, dest: bytes, payload: bytes, now: float) -> None: ...
    def set_line(self, status: LineStatus, now: float) -> None: ...
    def datagrams_to_send(self) -> list[Any]: ...
    def next_event(self) -> Event | None: ...


class LinkSender(Protocol):
    """A transport as the driver sees it: sends one frame to a link address or to all."""

    def send(self, link_dst: Hashable | None, data: bytes) -> None: ...


class UnknownInterface(Exception):
    """The core asked to transmit on an interface no transport serves."""


class CoreDriver:
    """Owns the timer of one core and the wiring between the core and its transports."""

    def __init__(self, core: Core, loop: asyncio.AbstractEventLoop,
                 on_error: Callable[[str, BaseException], None] | None = None) -> None:
        self.core = core
        self.loop = loop
        self.links: dict[str, LinkSender] = {}
        self.listeners: list[Callable[[Event], None]] = []
        self.on_error = on_error
        self.tx_errors = 0
        self._timer: asyncio.TimerHandle | None = None
        self._deadline: float | None = None
        self._flushing = False
        self._again = False
        self._held = 0
        self.closed = False

    def now(self) -> float:
        return self.loop.time()

    def add_link(self, iface: str, sender: LinkSender) -> None:
        self.links[iface] = sender

    # Inputs: each one is followed by a flush.
    def datagram_received(self, data: bytes, iface: str, link_src: Hashable) -> None:
        if self.closed:
            return
        self.core.receive(data, iface, link_src, self.now())
        self.flush()

    def send_data(self, dest: bytes, payload: bytes) -> None:
        self.core.send_data(dest, payload, self.now())
        self.flush()

    def set_line(self, status: LineStatus) -> None:
        self.core.set_line(status, self.now())
        self.flush()

    def _on_timer(self) -> None:
        self._timer = None
        deadline = self._deadline
        self._deadline = None
        if self.closed:
            return
        now = self.now() if deadline is None else max(deadline, self.now())
        self.core.handle_timer(now)
        self.flush()

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Inputs inside the block are flushed once, at its end (a burst of datagrams)."""
        self._held += 1
        try:
            yield
        finally:
            self._held -= 1
            if not self._held:
                self.flush()

    def flush(self) -> None:
        """Send what the core wants sent, deliver its events, re-arm the timer.

        Listeners may call back into the core (a ping reply sends data); such calls flush
        again after this pass instead of recursing. Inside `held()` the flush waits for the
        end of the block.
        """
        if self._held:
            return
        if self._flushing:
            self._again = True
            return
        self._flushing = True
        try:
            while True:
                self._again = False
                out = self.core.datagrams_to_send()
                if len(out) == 1:
                    self._transmit(out[0].iface, out[0].link_dst, out[0].data)
                elif out:
                    self._transmit_all(out)
                while (event := self.core.next_event()) is not None:
                    for listener in self.listeners:
                        listener(event)
                if not self._again:
                    break
        finally:
            self._flushing = False
        self._arm()

    def _transmit(self, iface: str, link_dst: Hashable | None, data: bytes) -> None:
        link = self.links.get(iface)
        if link is None:
            self.tx_errors += 1
            if self.on_error is not None:
                self.on_error(iface, UnknownInterface(iface))
            return
        try:
            link.send(link_dst, data)
        except (OSError, TransportError) as exc:  # one bad link must not stop the others
            self.tx_errors += 1
            if self.on_error is not None:
                self.on_error(iface, exc)

    def _transmit_all(self, out: list[Any]) -> None:
        """Several frames: each link gets its own in order, in one call where it can."""
        per_link: dict[str, list[tuple[Hashable | None, bytes]]] = {}
        for tx in out:
            per_link.setdefault(tx.iface, []).append((tx.link_dst, tx.data))
        for iface, frames in per_link.items():
            # A link may take them all at once (the UDP link sends runs with GSO).
            send_many = getattr(self.links.get(iface), "send_many", None)
            if send_many is None:
                for link_dst, data in frames:
                    self._transmit(iface, link_dst, data)
                continue
            try:
                send_many(frames)
            except (OSError, TransportError) as exc:
                self.tx_errors += 1
                if self.on_error is not None:
                    self.on_error(iface, exc)

    def _arm(self) -> None:
        if self.closed:
            return
        deadline = self.core.get_timer()
        if deadline == self._deadline and self._timer is not None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._deadline = deadline
        if deadline is not None:
            self._timer = self.loop.call_at(deadline, self._on_timer)

    def close(self) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
