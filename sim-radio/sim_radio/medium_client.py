"""asyncio client that joins a `sim-radio medium` server as an agent's radio interface.

The agent's sim transport owns one `MediumClient`: `await connect()`, then `send(frame,
link_dst)` for each `Transmit` of its core, and frames heard come back through the
`on_frame(frame, link_src)` callback, which the transport passes on to `node.receive`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from sim_radio.medium_protocol import (
    FrameIn,
    FrameOut,
    Join,
    Leave,
    MediumProtocolError,
    Message,
    Move,
    Refused,
    Welcome,
    decode,
    encode,
)

FrameCallback = Callable[[bytes, int], None]


class MediumClientError(RuntimeError):
    """The medium refused us, did not answer, or the client is not connected."""


class _Protocol(asyncio.DatagramProtocol):
    """Only translates datagrams into calls on the client."""

    def __init__(self, client: MediumClient) -> None:
        self._client = client

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self._client._datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        self._client.stats["socket_errors"] = self._client.stats.get("socket_errors", 0) + 1


class MediumClient:
    """One process's link to the simulated medium (one node of the scenario)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        node_id: bytes,
        on_frame: FrameCallback,
        node_index: int | None = None,
        position: tuple[float, float] | None = None,
    ) -> None:
        self.server = (host, port)
        self.node_id = node_id
        self.requested_index = node_index
        self.position = position
        self.node_index: int | None = None
        """Our link address on the medium, known once connected."""
        self.range_m = 0.0
        self.mtu = 0
        self.stats: dict[str, int] = {"tx": 0, "rx": 0, "decode_errors": 0, "foreign": 0}
        self._on_frame = on_frame
        self._transport: asyncio.DatagramTransport | None = None
        self._answer: asyncio.Future[Welcome | Refused] | None = None

    async def connect(self, *, timeout: float = 5.0, retry_s: float = 0.25) -> int:
        """Join the medium (retrying the Join over UDP) and return our node index."""
        loop = asyncio.get_running_loop()
        if self._transport is None:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Protocol(self), remote_addr=self.server
            )
            self._transport = transport
        self._answer = loop.create_future()
        join = encode(Join(self.node_id, self.requested_index, self.position))
        deadline = loop.time() + timeout
        try:
            while True:
                self._transport.sendto(join)
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise MediumClientError(f"no answer from the medium at {self.server}")
                try:
                    answer = await asyncio.wait_for(
                        asyncio.shield(self._answer), min(retry_s, remaining)
                    )
                    break
                except TimeoutError:
                    continue
        finally:
            self._answer = None
        if isinstance(answer, Refused):
            raise MediumClientError(f"medium refused the join: {answer.reason}")
        self.node_index = answer.node_index
        self.range_m = answer.range_m
        self.mtu = answer.mtu
        return answer.node_index

    @property
    def connected(self) -> bool:
        return self._transport is not None and self.node_index is not None

    def send(self, frame: bytes, link_dst: int | None) -> None:
        """Transmit one frame to node `link_dst`, or broadcast it if None."""
        if self._transport is None or self.node_index is None:
            raise MediumClientError("not connected to the medium")
        self._transport.sendto(encode(FrameOut(frame, link_dst)))
        self.stats["tx"] += 1

    def move(self, position: tuple[float, float]) -> None:
        """Tell the medium where this node is now."""
        if self._transport is None:
            raise MediumClientError("not connected to the medium")
        self.position = position
        self._transport.sendto(encode(Move(position)))

    def close(self) -> None:
        """Leave the medium and close the socket."""
        if self._transport is not None:
            with contextlib.suppress(OSError):
                self._transport.sendto(encode(Leave()))
            self._transport.close()
        self._transport = None
        self.node_index = None

    def _datagram(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        if tuple(addr[:2]) != self.server:
            self.stats["foreign"] += 1
            return
        try:
            msg: Message = decode(data)
        except MediumProtocolError:
            self.stats["decode_errors"] += 1
            return
        if isinstance(msg, FrameIn):
            self.stats["rx"] += 1
            self._on_frame(msg.frame, msg.link_src)
        elif isinstance(msg, Welcome | Refused):
            if self._answer is not None and not self._answer.done():
                self._answer.set_result(msg)
            elif isinstance(msg, Refused):
                # The medium forgot us (restart): we are no longer attached.
                self.node_index = None
        else:
            self.stats["decode_errors"] += 1
