"""Bulk test traffic (`manet-agent` control command "blast"), with optional flow control.

Without a window the sender goes as fast as its loop (or at a fixed rate): over several
hops it overruns the slowest forwarder's socket buffer and frames are lost. With a window
the receiver acknowledges every ACK_EVERY payloads (cumulative count, sent back over the
mesh) and the sender keeps at most `window` payloads unacknowledged: it then goes at the
pace of the slowest hop. There is no retransmission (the mesh carries datagrams); a
window that makes no progress for STALL_S is assumed lost and reopened, so lost
acknowledgements cannot stop a run.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

BLAST = b"\x00manet-blst"
BLAST_ACK = b"\x00manet-back"
BLAST_PREFIX = b"\x00manet-b"
"""Common to both: one check in the agent's event path."""
ACK_EVERY = 16
STALL_S = 0.5


class Blast:
    """Both ends of blast runs for one agent."""

    def __init__(self, send: Callable[[bytes, bytes], None],
                 loop: asyncio.AbstractEventLoop,
                 held: Callable[[], contextlib.AbstractContextManager[object]] = (
                     contextlib.nullcontext)) -> None:
        self.send = send
        self.loop = loop
        self.held = held
        """Wraps each burst of sends (the driver's `held`: one flush per burst)."""
        self.received_from: dict[bytes, int] = {}
        self.acked: dict[bytes, int] = {}
        self.stalls = 0
        self._progress = asyncio.Event()

    def reset(self) -> None:
        self.received_from.clear()

    def on_payload(self, source: bytes, payload: bytes) -> bool:
        """Count a blast payload (acknowledging every ACK_EVERY) or take an ack; True if
        the payload was an ack (not application data)."""
        if payload.startswith(BLAST_ACK):
            count = int.from_bytes(payload[len(BLAST_ACK):len(BLAST_ACK) + 8], "big")
            if count > self.acked.get(source, 0):
                self.acked[source] = count
                self._progress.set()
            return True
        if payload.startswith(BLAST) and len(payload) > len(BLAST):
            n = self.received_from.get(source, 0) + 1
            self.received_from[source] = n
            if n % ACK_EVERY == 0 or payload[len(BLAST)] == 1:  # every 16th, and the last
                self.send(source, BLAST_ACK + n.to_bytes(8, "big"))
        return False

    async def run(self, dest: bytes, count: int, size: int, batch: int, rate_mb_s: float,
                  window: int) -> dict[str, object]:
        """Send `count` payloads of `size` bytes; `rate_mb_s` 0 = unpaced, `window` 0 =
        no flow control."""
        start = self.loop.time()
        body = bytes(max(0, size - len(BLAST) - 1))
        self.acked[dest] = 0
        sent = 0
        while sent < count:
            # Up to `batch` payloads, or fewer if the window fills, flushed as one burst (the
            # UDP link sends it with GSO); waits happen outside, where acks can come in.
            with self.held():
                for _ in range(batch):
                    sent += 1
                    last = sent == count
                    self.send(dest, BLAST + (b"\x01" if last else b"\x00") + body)
                    if last or (window and sent - self.acked[dest] >= window):
                        break
            if window:
                while sent < count and sent - self.acked[dest] >= window:
                    self._progress.clear()
                    try:
                        await asyncio.wait_for(self._progress.wait(), STALL_S)
                    except TimeoutError:
                        self.stalls += 1
                        self.acked[dest] = sent - window // 2  # assume the rest lost
            ahead = (sent * size / (rate_mb_s * 1e6) - (self.loop.time() - start)
                     if rate_mb_s else 0.0)
            await asyncio.sleep(max(0.0, ahead))
        return {"sent": count, "bytes": count * size,
                "seconds": round(self.loop.time() - start, 6), "stalls": self.stalls}
