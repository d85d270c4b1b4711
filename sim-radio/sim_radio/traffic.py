"""Traffic sources: constant bit rate flows, node to node or node to the backhaul.

Each packet's payload starts with (flow, sequence number, send time), padded to the flow's
size, so the receiving side measures delivery and delay without any side table; payloads
are sealed end to end by the mesh core, so forwarders never see these bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

HEADER = struct.Struct(">IId")
MIN_SIZE = HEADER.size


@dataclass(frozen=True, slots=True)
class Flow:
    """A CBR flow from node `src` to node `dst` (None: to the backhaul through a gateway)."""

    index: int
    src: int
    dst: int | None
    interval_s: float
    size_bytes: int
    start_s: float
    stop_s: float
    max_packets: int = 1 << 31
    random: bool = False
    """Jitter each departure by up to half an interval either way (ns-2's `random_ 1`)."""


def payload(flow: int, seq: int, sent: float, size: int) -> bytes:
    head = HEADER.pack(flow, seq, sent)
    return head + bytes(max(0, size - len(head)))


def parse_payload(data: bytes) -> tuple[int, int, float] | None:
    """(flow, seq, sent) of a simulator payload, or None for anything else."""
    if len(data) < HEADER.size:
        return None
    flow, seq, sent = HEADER.unpack_from(data)
    return flow, seq, sent
