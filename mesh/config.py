"""One configuration dataclass for the mesh core, with RFC 3561's constants as defaults.

Times are seconds (floats). The RFC's derived constants (NET_TRAVERSAL_TIME, ...) are
properties, so that changing NODE_TRAVERSAL_TIME for a slow link changes all of them.
`MeshConfig.for_links(profiles)` scales the timing to the slowest link a node has.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass

IP_BROADCAST_JITTER_S = 0.002
"""Broadcast jitter of a link with no shared radio channel to contend for (UDP over IP)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkProfile:
    """A kind of radio link: what fits in one transmission and how fast it goes.

    `mtu` is the largest frame one transmission carries (BLE: ATT MTU minus the 3-byte
    ATT header); `node_traversal_s` is RFC 3561's NODE_TRAVERSAL_TIME for this kind of link
    (a conservative per-hop latency including queueing); `broadcast_jitter_s` how long a
    forwarded RREQ may wait (see MeshConfig.broadcast_jitter_s).
    """

    name: str
    mtu: int
    bitrate_bps: int
    node_traversal_s: float
    range_m: float
    broadcast_jitter_s: float = IP_BROADCAST_JITTER_S
    """The shared radio channels below take ns-2 AODV's 10 ms."""


WIFI = LinkProfile(name="wifi", mtu=1400, bitrate_bps=6_000_000, node_traversal_s=0.040,
                   range_m=250.0, broadcast_jitter_s=0.010)
"""Ad hoc / Wi-Fi Direct: RFC 3561's 40 ms per hop."""
BLE = LinkProfile(name="ble", mtu=244, bitrate_bps=250_000, node_traversal_s=0.150, range_m=40.0,
                  broadcast_jitter_s=0.010)
"""BLE 4.2+/5 with data length extension (ATT MTU 247); slow connection-interval hops."""
BLE_MIN = LinkProfile(name="ble23", mtu=20, bitrate_bps=100_000, node_traversal_s=0.250,
                      range_m=40.0, broadcast_jitter_s=0.010)
"""BLE at the default ATT MTU of 23 bytes: every control frame is fragmented."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MeshConfig:
    """Protocol constants. Defaults are RFC 3561 section 10 unless a comment says otherwise."""

    active_route_timeout_s: float = 3.0
    allowed_hello_loss: int = 2
    hello_interval_s: float = 1.0
    net_diameter: int = 35
    node_traversal_s: float = 0.040
    rerr_ratelimit: int = 10
    rreq_ratelimit: int = 10
    rreq_retries: int = 2
    timeout_buffer: int = 2
    ttl_start: int = 1
    ttl_increment: int = 2
    ttl_threshold: int = 7
    delete_period_k: int = 5
    # Beyond the RFC:
    hello_jitter_s: float = 0.1
    """HELLOs are sent every hello_interval_s minus up to this much (RFC 5148 jitter)."""
    broadcast_jitter_s: float | None = None
    """Forwarded RREQs wait up to this long, so that neighbours do not collide and a
    forwarder can hear whether its neighbours have rebroadcast already (see
    rreq_suppress_copies). None: the largest of the node's links' values (10 ms on the
    shared radio profiles, as ns-2's AODV; 2 ms on IP links)."""
    rreq_suppress_copies: int = 3
    """A forwarder that hears this many copies of an RREQ while its own rebroadcast waits
    its jitter drops its rebroadcast (counter-based flooding, Ni et al. 1999); 0 = always
    rebroadcast. In the simulator's 200-node scale run (10 ms jitter) this cut RREQ
    rebroadcasts by 61 % with delivery unchanged."""
    min_node_traversal_s: float = 0.040
    """Floor of the measured NODE_TRAVERSAL_TIME (see MeshNode.node_traversal_s). The default
    keeps RFC timing: on a contended shared channel (the simulator's Broch runs) short
    measured waits delivered 2-7 points less. On quiet fast links (wired, veth, an uncrowded
    Wi-Fi Direct group) set it to 0.002 to let ring searches follow the measured hop time."""
    max_buffered_packets: int = 64
    """Data packets held while routes are discovered, for all destinations together."""
    max_buffered_per_dest: int = 32
    buffer_timeout_s: float | None = None
    """A buffered packet is dropped after this long; None = PATH_DISCOVERY_TIME."""
    data_ttl: int = 64
    link_quality_alpha: float = 0.25
    """EWMA weight of each HELLO received or missed in a neighbour's link quality."""
    gateway_route_lifetime_s: float = 30.0
    """Lifetime a gateway gives its RREPs (longer than MY_ROUTE_TIMEOUT: gateways stay put)."""
    gateway_retry_s: float = 5.0
    """After a failed gateway discovery, try again this much later while the line is down."""
    gateway_retry_max_s: float = 60.0
    """The retry interval doubles after each failed search, up to this."""
    gateway_switch_margin: float = 0.5
    """A new gateway must score this much better to replace a working one (hysteresis)."""
    replay_window: int = 256
    """Per-originator anti-replay window of message counters (as in IPsec)."""
    max_known_nodes: int = 4096
    """Bound on per-originator state (replay windows, public keys, route entries)."""
    max_reassembly_bytes: int = 65536
    reassembly_timeout_s: float = 2.0
    max_frame_bytes: int = 2048
    max_payload_bytes: int = 1200
    rrep_ack_required: bool = True
    """Ask for an RREP-ACK when replying over a link we have no HELLO from (RFC 6.8)."""

    # RFC 3561 derived constants.
    @property
    def net_traversal_s(self) -> float:
        return 2 * self.node_traversal_s * self.net_diameter

    @property
    def path_discovery_s(self) -> float:
        return 2 * self.net_traversal_s

    @property
    def my_route_timeout_s(self) -> float:
        return 2 * self.active_route_timeout_s

    @property
    def delete_period_s(self) -> float:
        return self.delete_period_k * max(self.active_route_timeout_s, self.hello_interval_s)

    @property
    def next_hop_wait_s(self) -> float:
        return self.node_traversal_s + 0.010

    @property
    def blacklist_timeout_s(self) -> float:
        return self.rreq_retries * self.net_traversal_s

    @property
    def neighbour_timeout_s(self) -> float:
        return self.allowed_hello_loss * self.hello_interval_s

    def ring_traversal_s(self, ttl: int) -> float:
        return 2 * self.node_traversal_s * (ttl + self.timeout_buffer)

    @property
    def effective_buffer_timeout_s(self) -> float:
        return self.path_discovery_s if self.buffer_timeout_s is None else self.buffer_timeout_s

    def for_links(self, profiles: Iterable[LinkProfile]) -> MeshConfig:
        """This configuration with NODE_TRAVERSAL_TIME of the slowest of `profiles` (and,
        unless set, their largest broadcast jitter)."""
        profiles = list(profiles)
        slowest = max((p.node_traversal_s for p in profiles), default=self.node_traversal_s)
        jitter = self.broadcast_jitter_s
        if jitter is None:
            jitter = max((p.broadcast_jitter_s for p in profiles), default=IP_BROADCAST_JITTER_S)
        return dataclasses.replace(self, node_traversal_s=slowest, broadcast_jitter_s=jitter)

    @property
    def rreq_jitter_s(self) -> float:
        """The broadcast jitter in force (`broadcast_jitter_s` once resolved by for_links)."""
        return (IP_BROADCAST_JITTER_S if self.broadcast_jitter_s is None
                else self.broadcast_jitter_s)
