"""Typed events a mesh core emits (pulled with `MeshNode.next_event()`).

Every event worth keeping in the ledger carries the routing information with it (node ids
are 8-byte `bytes`; `hex()` them for display). Tests compare events with `==`.
"""

from __future__ import annotations

from dataclasses import dataclass

from mesh.line import LineStatus


@dataclass(frozen=True, slots=True)
class NeighbourUp:
    """A signed HELLO arrived from a node we did not list as a neighbour."""

    node: bytes
    iface: str
    line: LineStatus
    time: float


@dataclass(frozen=True, slots=True)
class NeighbourDown:
    """A neighbour fell silent (ALLOWED_HELLO_LOSS HELLOs missed) or a link broke."""

    node: bytes
    reason: str
    time: float


@dataclass(frozen=True, slots=True)
class NeighbourLineChanged:
    """A neighbour's HELLO or line announcement reports a different mobile-line status."""

    node: bytes
    old: LineStatus
    new: LineStatus
    time: float


@dataclass(frozen=True, slots=True)
class LineStatusChanged:
    """This node's own mobile line changed (the core announced it at once)."""

    old: LineStatus
    new: LineStatus
    time: float


@dataclass(frozen=True, slots=True)
class ManetJoined:
    """This node went from no neighbours to at least one: it formed or joined a MANET."""

    neighbours: tuple[bytes, ...]
    has_line: bool
    time: float


@dataclass(frozen=True, slots=True)
class ManetLeft:
    """This node lost its last neighbour."""

    time: float


@dataclass(frozen=True, slots=True)
class RouteAdded:
    """A valid route to `dest` was installed or replaced (fresher or shorter)."""

    dest: bytes
    next_hop: bytes
    hops: int
    seq: int
    lifetime_s: float
    time: float


@dataclass(frozen=True, slots=True)
class RouteBroken:
    """A route became invalid: link break, RERR from the next hop, or expiry."""

    dest: bytes
    next_hop: bytes
    hops: int
    seq: int
    reason: str
    time: float


@dataclass(frozen=True, slots=True)
class RouteDiscoveryFailed:
    """RREQ_RETRIES discoveries for `dest` got no reply; buffered packets were dropped."""

    dest: bytes
    attempts: int
    dropped: int
    time: float


@dataclass(frozen=True, slots=True)
class GatewayChanged:
    """The gateway this node uses to reach the backhaul was established, changed or lost.

    `new` is None when no gateway is reachable any more. `next_hop`, `hops` and `seq` describe
    the route to `new`; `line` is the new gateway's line status as it advertised it.
    """

    old: bytes | None
    new: bytes | None
    next_hop: bytes | None
    hops: int
    seq: int
    line: LineStatus | None
    reason: str
    time: float


@dataclass(frozen=True, slots=True)
class DataReceived:
    """An end-to-end authenticated payload addressed to this node arrived."""

    source: bytes
    payload: bytes
    hops: int
    time: float


@dataclass(frozen=True, slots=True)
class BackhaulData:
    """This node is a gateway and a payload for the backhaul arrived: send it up the line."""

    source: bytes
    payload: bytes
    hops: int
    time: float


@dataclass(frozen=True, slots=True)
class DataDropped:
    """A packet this node originated or forwarded was dropped; `reason` is a counter name."""

    dest: bytes
    reason: str
    time: float


Event = (
    NeighbourUp
    | NeighbourDown
    | NeighbourLineChanged
    | LineStatusChanged
    | ManetJoined
    | ManetLeft
    | RouteAdded
    | RouteBroken
    | RouteDiscoveryFailed
    | GatewayChanged
    | DataReceived
    | BackhaulData
    | DataDropped
)
