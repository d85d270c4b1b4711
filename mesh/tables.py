"""The neighbour table and the AODV route table: plain records, no protocol logic."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

from mesh.line import LineStatus

INF = float("inf")


@dataclass(slots=True)
class Neighbour:
    """A node we hear directly. `quality` is an EWMA of HELLOs received (1) and missed (0)."""

    node: bytes
    public_key: bytes
    iface: str
    link: Hashable
    line: LineStatus
    last_heard: float
    hello_interval_s: float
    last_hello_no: int
    quality: float = 1.0
    gateway_hops: int = 255
    """Hops to a gateway the neighbour announced in its last HELLO (255: none)."""
    echoed_at: float = float("-inf")
    """When our HELLO last echoed this neighbour's (echoes go round the neighbours in turn)."""
    gone: bool = False
    """Set when it leaves the neighbour table: its timer entries then do nothing (checked
    on every wake-up, cheaper than looking the table up)."""

    def expiry(self, allowed_loss: int) -> float:
        return self.last_heard + allowed_loss * self.hello_interval_s


@dataclass(slots=True)
class Route:
    """An AODV route table entry (RFC 3561 section 2)."""

    dest: bytes
    next_hop: bytes
    hops: int
    seq: int
    seq_valid: bool
    valid: bool
    expiry: float
    precursors: set[bytes] = field(default_factory=set)
    gateway_line: LineStatus | None = None
    """Set when `dest` answered (or was vouched for) as a gateway."""
    timer_at: float = INF
    """Deadline of this route's one armed timer (INF: none)."""
    gone: bool = False
    """Set when it leaves the route table (as Neighbour.gone)."""


@dataclass(frozen=True, slots=True)
class NeighbourInfo:
    """Read-only view of a neighbour for status APIs."""

    node: bytes
    iface: str
    link: Hashable
    quality: float
    line: LineStatus
    last_heard: float


@dataclass(frozen=True, slots=True)
class RouteInfo:
    """Read-only view of a route for status APIs."""

    dest: bytes
    next_hop: bytes
    hops: int
    seq: int
    valid: bool
    expires_in_s: float
    precursors: tuple[bytes, ...]
    gateway: bool


@dataclass(frozen=True, slots=True)
class GatewayInfo:
    """The gateway this node uses now."""

    node: bytes
    next_hop: bytes
    hops: int
    line: LineStatus
    score: float
