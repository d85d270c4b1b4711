"""A reliable, ordered byte stream over mesh DATA payloads (sans-I/O), so that a device without
a line can run the backhaul protocol through a gateway, or sync with a neighbour.

Mesh payloads are small (1200 bytes) and may be lost; sync messages are up to megabytes. A
stream cuts the bytes into numbered chunks, keeps up to `window` of them in flight, and resends
from the first unacknowledged one when the retransmission timer fires (go-back-N: simple, and
the window is small). The receiver acknowledges cumulatively and delivers bytes in order.

Payload (deterministic CBOR, behind the 3-byte MAGIC so the agent can tell ledger payloads from
others): `[stream id, kind, seq, data]`; kind 0 = data (seq: chunk number), 1 = ack (seq: next
chunk expected), 2 = reset (the stream is dead; data: reason).

No clock, no sockets, no randomness: stream ids are chosen by the caller.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from ledger import codec
from ledger.errors import CodecError, LedgerError

MAGIC = b"\xd1LG"
K_DATA, K_ACK, K_RESET = 0, 1, 2
STREAM_ID_LEN = 8


class StreamError(LedgerError):
    """The stream failed (peer reset, too many retransmissions, or a buffer limit)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamConfig:
    chunk_bytes: int = 1000
    """Data per payload; with the header this stays under the mesh's 1200-byte payloads."""
    window: int = 8
    """Chunks in flight before an acknowledgement."""
    rto_s: float = 2.0
    """Retransmission timeout (a few mesh round trips over BLE)."""
    max_retries: int = 8
    """Timeouts in a row without progress before the stream fails."""
    max_buffer_bytes: int = 16 * 1024 * 1024
    """Bytes queued to send, or received and not read, before the stream fails."""


def is_ledger_payload(payload: bytes) -> bool:
    return payload.startswith(MAGIC)


def parse(payload: bytes) -> tuple[bytes, int, int, bytes]:
    """`(stream id, kind, seq, data)` of a ledger payload; raises `StreamError` when malformed."""
    if not payload.startswith(MAGIC):
        raise StreamError("not a ledger stream payload")
    try:
        value: Any = codec.decode(payload[len(MAGIC):], 4096)
    except CodecError as exc:
        raise StreamError(f"malformed stream payload: {exc}") from exc
    if (type(value) is not list or len(value) != 4 or type(value[0]) is not bytes
            or len(value[0]) != STREAM_ID_LEN or value[1] not in (K_DATA, K_ACK, K_RESET)
            or type(value[2]) is not int or value[2] < 0 or type(value[3]) is not bytes):
        raise StreamError("malformed stream payload")
    return value[0], value[1], value[2], value[3]


def encode(stream_id: bytes, kind: int, seq: int, data: bytes = b"") -> bytes:
    return MAGIC + codec.encode([stream_id, kind, seq, data])


class MeshStream:
    """One end of a stream with one peer. Feed it payloads, pull payloads to send."""

    def __init__(self, stream_id: bytes, *, config: StreamConfig | None = None) -> None:
        if len(stream_id) != STREAM_ID_LEN:
            raise ValueError("a stream id is 8 bytes")
        self.stream_id = stream_id
        self.config = config or StreamConfig()
        self._out = bytearray()       # bytes not yet cut into chunks
        self._chunks: deque[bytes] = deque()  # unacknowledged chunks, first = seq _base
        self._base = 0
        self._next_send = 0           # next chunk number to transmit
        self._expected = 0            # next chunk number we accept
        self._in = bytearray()
        self._ack_due = False
        self._deadline: float | None = None
        self._retries = 0
        self._reset: bytes | None = None
        self.error: StreamError | None = None
        self.retransmissions = 0

    # ---------------------------------------------------------------- application side

    def write(self, data: bytes) -> None:
        self._check()
        if len(self._out) + len(data) > self.config.max_buffer_bytes:
            self._fail("send buffer full")
        self._out += data

    def open(self) -> None:
        """Send an empty first chunk, so the peer learns of the stream before we have data
        (a device opens its stream to the gateway, then waits for the backhaul's HELLO)."""
        if self._base == 0 and self._next_send == 0 and not self._chunks:
            self._chunks.append(b"")

    def read(self) -> bytes:
        """All in-order bytes received since the last read."""
        data = bytes(self._in)
        self._in.clear()
        return data

    @property
    def unsent(self) -> int:
        """Bytes written and not yet acknowledged by the peer."""
        return len(self._out) + sum(len(c) for c in self._chunks)

    @property
    def failed(self) -> bool:
        return self.error is not None

    def reset(self, reason: str) -> None:
        """Abort: tell the peer once, then stay failed."""
        if self.error is None:
            self._reset = reason.encode()[:200]
            self.error = StreamError(f"reset by us: {reason}")

    # ---------------------------------------------------------------- network side

    def receive(self, payload: bytes, now: float) -> None:
        """Handle one of our payloads (already matched to this stream by `parse`)."""
        stream_id, kind, seq, data = parse(payload)
        if stream_id != self.stream_id or self.error is not None:
            return
        if kind == K_RESET:
            self.error = StreamError(f"reset by peer: {data.decode(errors='replace')[:200]}")
            return
        if kind == K_ACK:
            acked = seq - self._base
            if 0 < acked <= len(self._chunks):
                for _ in range(acked):
                    self._chunks.popleft()
                self._base = seq
                self._retries = 0
                self._next_send = max(self._next_send, self._base)
                self._deadline = now + self.config.rto_s if self._chunks else None
            return
        if len(data) > self.config.chunk_bytes:
            self._fail("chunk larger than agreed")
        if seq == self._expected:
            if len(self._in) + len(data) > self.config.max_buffer_bytes:
                self._fail("receive buffer full")
            self._in += data
            self._expected += 1
        self._ack_due = True  # duplicates and gaps are acknowledged too (the peer resends)

    def datagrams_to_send(self, now: float) -> list[bytes]:
        """Payloads to hand to the mesh (`node.send_data(peer, payload, now)`)."""
        out: list[bytes] = []
        if self._reset is not None:
            out.append(encode(self.stream_id, K_RESET, 0, self._reset))
            self._reset = None
            return out
        if self.error is not None:
            return out
        if self._ack_due:
            out.append(encode(self.stream_id, K_ACK, self._expected))
            self._ack_due = False
        size = self.config.chunk_bytes
        while len(self._chunks) < self.config.window and self._out:
            self._chunks.append(bytes(self._out[:size]))
            del self._out[:size]
        while self._next_send < self._base + len(self._chunks):
            chunk = self._chunks[self._next_send - self._base]
            out.append(encode(self.stream_id, K_DATA, self._next_send, chunk))
            self._next_send += 1
            if self._deadline is None:
                self._deadline = now + self.config.rto_s
        return out

    def get_timer(self) -> float | None:
        return self._deadline if self.error is None else None

    def handle_timer(self, now: float) -> None:
        """On timeout, go back to the first unacknowledged chunk; fail after max_retries."""
        if self._deadline is None or now < self._deadline or self.error is not None:
            return
        if not self._chunks:
            self._deadline = None
            return
        self._retries += 1
        if self._retries > self.config.max_retries:
            self._fail(f"no acknowledgement after {self.config.max_retries} retransmissions")
            return
        self.retransmissions += len(self._chunks)
        self._next_send = self._base
        self._deadline = now + self.config.rto_s * min(8, 2 ** (self._retries - 1))

    def _check(self) -> None:
        if self.error is not None:
            raise self.error

    def _fail(self, reason: str) -> None:
        self.reset(reason)
        assert self.error is not None
        raise self.error
