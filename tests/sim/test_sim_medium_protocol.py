"""Medium wire protocol: round trips, and only the typed error escapes the decoder."""

from __future__ import annotations

import asyncio
import contextlib

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sim_radio.medium_client import MediumClient, MediumClientError
from sim_radio.medium_protocol import (
    MAX_FRAME,
    VERSION,
    FrameIn,
    FrameOut,
    Join,
    Leave,
    MediumProtocolError,
    Move,
    Refused,
    Welcome,
    decode,
    encode,
)

MESSAGES = [
    Join(b"\x01" * 8, None, None),
    Join(b"\x02" * 8, 7, (10.5, -3.0)),
    Welcome(3, 250.0, 1400),
    Refused("index taken"),
    FrameOut(b"hello", None),
    FrameOut(b"x" * MAX_FRAME, 12),
    FrameIn(b"\x00\xff", 4),
    Move((1.0, 2.0)),
    Leave(),
]


@pytest.mark.parametrize("msg", MESSAGES)
def test_round_trip(msg: object) -> None:
    assert decode(encode(msg)) == msg  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "value",
    [
        [VERSION + 1, "leave"],
        [VERSION, "nope"],
        [VERSION, "out", "text", None],
        [VERSION, "out", b"x", -1],
        [VERSION, "in", b"x", None],
        [VERSION, "join", b"short", None, None],
        [VERSION, "join", b"\x01" * 8, True, None],
        [VERSION, "move", [1.0]],
        [VERSION, "move", [float("nan"), 1.0]],
        [VERSION, "leave", 1],
        {"v": 1},
    ],
)
def test_bad_messages_raise_typed_error(value: object) -> None:
    with pytest.raises(MediumProtocolError):
        decode(cbor2.dumps(value))


def test_oversized_frame_is_refused_both_ways() -> None:
    with pytest.raises(MediumProtocolError):
        encode(FrameOut(b"x" * (MAX_FRAME + 1), None))
    with pytest.raises(MediumProtocolError):
        decode(cbor2.dumps([VERSION, "in", b"x" * (MAX_FRAME + 1), 1]))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_fuzz_only_typed_error(data: bytes) -> None:
    with contextlib.suppress(MediumProtocolError):
        decode(data)


class _FakeMedium(asyncio.DatagramProtocol):
    """A one-node medium: welcomes, then echoes each FrameOut back as a FrameIn from node 9."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.seen: list[object] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        msg = decode(data)
        self.seen.append(msg)
        if isinstance(msg, Join):
            answer = Welcome(5, 250.0, 1400) if msg.node_index != 99 else Refused("no such node")
            self.transport.sendto(encode(answer), addr)
        elif isinstance(msg, FrameOut):
            self.transport.sendto(encode(FrameIn(msg.frame, 9)), addr)


async def test_client_joins_sends_and_receives() -> None:
    loop = asyncio.get_running_loop()
    medium = _FakeMedium()
    server, _ = await loop.create_datagram_endpoint(lambda: medium, local_addr=("127.0.0.1", 0))
    port = server.get_extra_info("sockname")[1]
    got: list[tuple[bytes, int]] = []
    heard = asyncio.Event()

    def on_frame(frame: bytes, src: int) -> None:
        got.append((frame, src))
        heard.set()

    client = MediumClient("127.0.0.1", port, node_id=b"\x07" * 8, on_frame=on_frame)
    try:
        assert await client.connect(timeout=2.0) == 5
        assert client.range_m == 250.0 and client.mtu == 1400
        client.send(b"frame-1", None)
        await asyncio.wait_for(heard.wait(), 2.0)
        assert got == [(b"frame-1", 9)]
        assert FrameOut(b"frame-1", None) in medium.seen
        refused = MediumClient(
            "127.0.0.1", port, node_id=b"\x08" * 8, on_frame=on_frame, node_index=99
        )
        with pytest.raises(MediumClientError, match="no such node"):
            await refused.connect(timeout=2.0)
        refused.close()
    finally:
        client.close()
        server.close()


async def test_client_send_before_connect_is_an_error() -> None:
    client = MediumClient("127.0.0.1", 9, node_id=b"\x07" * 8, on_frame=lambda f, s: None)
    with pytest.raises(MediumClientError):
        client.send(b"x", None)
