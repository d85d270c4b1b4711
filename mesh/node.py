"""The mesh core: one node's neighbour discovery, AODV routing and gateway selection.

Sans-I/O (see STYLE.md): inputs are `receive(data, iface, link_src, now)`, `handle_timer(now)`,
`send_data(dest, payload, now)`, `set_line(status, now)` and `link_failed(...)`; outputs are
pulled with `datagrams_to_send()` and `next_event()`; `get_timer()` is the one deadline the
caller must wake us at. Time, randomness and keys are passed in; nothing here touches a
clock, a socket or global state, so a simulator can run thousands of nodes in one process.

Routing follows RFC 3561 (AODV). What differs, and why:
- Control frames are signed by their originator; hop counts are protected by a SAODV hash
  chain, and a per-originator counter window rejects duplicates and replays (mesh.replay).
- An RREP always carries the destination's public key, so that the requester can seal data
  to it even when an intermediate node answered (the key is bound to the id by its hash).
- RREQs ask for a gratuitous RREP (G) by default, so destinations learn the originator's key
  and a route back when an intermediate answers.
- Gateway discovery is an RREQ for the well-known BACKHAUL id that gateways answer; RERRs
  carry, besides unreachable destinations, gateways that lost their line.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict, defaultdict, deque
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from operator import attrgetter
from random import Random

from mesh import events as ev
from mesh.config import WIFI, LinkProfile, MeshConfig
from mesh.frames import (
    BACKHAUL,
    F_BACKHAUL,
    F_DEST_ONLY,
    F_GATEWAY,
    F_GRATUITOUS,
    F_UNKNOWN_SEQ,
    FRAGMENT_MARK,
    HASH_LEN,
    KIND_OF,
    NO_GATEWAY,
    SIGNING_PREFIX,
    T_DATA,
    T_HELLO,
    T_RERR,
    T_RREP,
    T_RREP_ACK,
    T_RREQ,
    TYPE_OF,
    Body,
    Control,
    Data,
    DecodeCache,
    FrameError,
    Hello,
    Rerr,
    Rrep,
    RrepAck,
    Rreq,
    decode,
    decode_fragment,
    encode_body,
    encode_control,
    encode_data,
    fragment,
    hash_chain,
    hop_hash,
    signing_message,
)
from mesh.identity import Identity, VerifyCache, node_id_of, verify
from mesh.line import LINE_DOWN, LineStatus
from mesh.reassembly import Reassembler
from mesh.replay import Freshness, ReplayGuard
from mesh.seal import Sealer, SealError
from mesh.tables import INF, GatewayInfo, Neighbour, NeighbourInfo, Route, RouteInfo

__all__ = ["BACKHAUL", "MeshNode", "PayloadTooLarge", "Transmit"]

_RX_KEY = {frame_type: "rx_" + kind for frame_type, kind in KIND_OF.items()}
"""Receive counters' names by frame type."""

_ECHOED_AT = attrgetter("echoed_at")

FIRST_HOP_SAMPLES = 8
"""HELLO round trips within which a much lower sample restarts the hop-time estimate."""


class PayloadTooLarge(ValueError):
    """The application handed the core a payload above `max_payload_bytes` (our caller's fault)."""


@dataclass(frozen=True, slots=True)
class Transmit:
    """A frame to put on the air. `link_dst` None means broadcast on `iface`."""

    iface: str
    link_dst: Hashable | None
    data: bytes
    kind: str


@dataclass(slots=True)
class _Discovery:
    dest: bytes
    ttl: int
    retries: int
    deadline: float
    gateway: bool
    started: float
    hinted: bool = False


@dataclass(slots=True)
class _PendingRreq:
    data: bytes
    copies: int = 0
    """Copies of this RREQ heard from neighbours while our rebroadcast waits its jitter."""


@dataclass(slots=True)
class _Buffered:
    payload: bytes
    queued: float


class MeshNode:
    """One node's protocol state. See the module docstring for the calling convention."""

    def __init__(
        self,
        *,
        identity: Identity,
        rng: Random,
        now: float,
        interfaces: Mapping[str, LinkProfile] | None = None,
        line: LineStatus = LINE_DOWN,
        config: MeshConfig | None = None,
        verify_cache: VerifyCache | None = None,
        decode_cache: DecodeCache | None = None,
        counter_start: int = 0,
    ) -> None:
        self.interfaces: dict[str, LinkProfile] = dict(interfaces or {"wifi0": WIFI})
        if not self.interfaces:
            raise ValueError("a mesh node needs at least one interface")
        self.config = (config or MeshConfig()).for_links(self.interfaces.values())
        self.identity = identity
        self.id = identity.node_id
        self._rng = rng
        self._line = line
        self._line_up = line.is_gateway
        """`_line.is_gateway`, kept beside it: every HELLO received asks."""
        self._counter = counter_start
        self._seq = 0
        self._hello_no = 0
        self._verify_cache = verify_cache
        self._decode_cache = decode_cache
        self._sealer = Sealer(identity)
        cfg = self.config
        self._replay = ReplayGuard(cfg.replay_window, cfg.max_known_nodes)
        self._data_replay = ReplayGuard(cfg.replay_window, cfg.max_known_nodes)
        self._reassembly = Reassembler(cfg.max_reassembly_bytes, cfg.reassembly_timeout_s,
                                       cfg.max_frame_bytes)
        self._keys: OrderedDict[bytes, bytes] = OrderedDict()
        self._links: OrderedDict[bytes, tuple[str, Hashable]] = OrderedDict()
        self._introduced: OrderedDict[bytes, None] = OrderedDict()
        self._neighbours: dict[bytes, Neighbour] = {}
        self._routes: dict[bytes, Route] = {}
        self._gateways: dict[bytes, LineStatus] = {}
        self._gateway: bytes | None = None
        self._gateway_users: set[bytes] = set()
        self._gateway_backoff = cfg.gateway_retry_s
        self._discoveries: dict[bytes, _Discovery] = {}
        self._buffer: dict[bytes, deque[_Buffered]] = {}
        self._buffered = 0
        self._rreq_pending: dict[tuple[bytes, int], _PendingRreq] = {}
        """RREQs we are about to rebroadcast, by (origin, counter)."""
        self._blacklist: dict[bytes, float] = {}
        self._awaiting_ack: dict[bytes, float] = {}
        self._confirmed: dict[bytes, float] = {}
        self._hellos_sent: deque[tuple[int, float]] = deque(maxlen=16)
        self._hop_rtt: float | None = None
        self._next_hint = 0.0
        self._next_triggered_hello = 0.0
        self._hop_rttvar = 0.0
        self._hop_samples = 0
        self._rreq_sent: deque[float] = deque()
        self._rerr_sent: deque[float] = deque()
        self._frag_id = rng.randrange(1 << 16)
        self._out: list[Transmit] = []
        self._events: deque[ev.Event] = deque()
        self._timers: list[tuple[float, int, str, object]] = []
        self._timer_seq = 0
        self.timers_pushed = 0
        """Counts new timer entries. Deadlines move earlier only by a new entry, so a caller
        that saw this unchanged since its last `get_timer` (and has not called
        `handle_timer` since) knows that deadline still comes first, or too early."""
        self._stats: defaultdict[str, int] = defaultdict(int)
        self._rx_frames = 0
        self._rx_bytes = 0
        self._rx_by_type = [0] * (max(KIND_OF) + 1)
        self._duplicates = 0
        """The counters every received frame moves, kept as plain integers (see stats)."""
        self._next_hello = now + rng.uniform(0.0, cfg.hello_interval_s)
        self._push_timer(self._next_hello, "hello", None)
        if not line.is_gateway:
            self._push_timer(now + cfg.hello_interval_s * cfg.allowed_hello_loss, "gw_check", None)

    # ----------------------------------------------------------------- public API

    @property
    def stats(self) -> defaultdict[str, int]:
        """Counters by name (missing ones read 0; a name appears once counted).

        The ones every received frame moves are integers beside the table, merged in here:
        at 1,000 simulated nodes the table's updates alone took about 5 % of the run.
        """
        stats = self._stats
        for name, value in (("rx_frames", self._rx_frames), ("rx_bytes", self._rx_bytes),
                            ("drop_duplicate", self._duplicates)):
            if value:
                stats[name] = value
        for frame_type, count in enumerate(self._rx_by_type):
            if count:
                stats[_RX_KEY[frame_type]] = count
        return stats

    @property
    def line(self) -> LineStatus:
        return self._line

    @property
    def seq(self) -> int:
        """This node's own AODV destination sequence number."""
        return self._seq

    @property
    def gateway(self) -> GatewayInfo | None:
        gw = self._gateway
        if gw is None:
            return None
        route = self._routes[gw]
        return GatewayInfo(gw, route.next_hop, route.hops, self._gateways[gw],
                           self._gateway_score(gw) or 0.0)

    def get_timer(self) -> float | None:
        """The earliest deadline at which `handle_timer` has something to do.

        Entries that would do nothing when they fire are settled here, so the caller is not
        woken for them: a neighbour heard again since its entry was pushed moves to its new
        expiry, a route's entry to the route's new expiry, and a replaced HELLO time or the
        entry of a forgotten neighbour or route is dropped. Each HELLO refreshes a neighbour
        and its direct route, so without this a node with 20 neighbours would be woken about
        40 times a second to find nothing due. A valid direct route to a heard neighbour
        drops its entry (the neighbour's covers both): one entry moves per neighbour.
        """
        timers = self._timers
        neighbours = self._neighbours
        loss = self.config.allowed_hello_loss
        while timers:
            when, _, kind, key = timers[0]
            if kind == "neighbour":
                assert isinstance(key, Neighbour)
                if key.gone:
                    heapq.heappop(timers)
                    continue
                expiry = key.last_heard + loss * key.hello_interval_s  # key.expiry(loss), inlined
                if expiry > when:
                    self._timer_seq += 1
                    heapq.heapreplace(timers, (expiry, self._timer_seq, kind, key))
                    continue
            elif kind == "route":
                assert isinstance(key, Route)
                if key.timer_at != when or key.gone:
                    heapq.heappop(timers)
                    continue
                if key.expiry > when:
                    if key.hops == 1 and key.valid and key.next_hop == key.dest:
                        nb = neighbours.get(key.dest)
                        if nb is not None and (
                                key.expiry >= nb.last_heard + loss * nb.hello_interval_s):
                            # A direct route to a neighbour: every HELLO keeps its expiry at
                            # or past the neighbour's, and the neighbour's entry breaks the
                            # link (invalidating the route, which re-arms it) first. One
                            # entry per neighbour then moves instead of two.
                            key.timer_at = INF
                            heapq.heappop(timers)
                            continue
                    key.timer_at = key.expiry
                    self._timer_seq += 1
                    heapq.heapreplace(timers, (key.expiry, self._timer_seq, kind, key))
                    continue
            elif kind == "hello" and when < self._next_hello:
                heapq.heappop(timers)
                continue
            return when
        return None

    @property
    def pending_timers(self) -> int:
        """Timer entries held (stale ones included): stays bounded however links flap."""
        return len(self._timers)

    def datagrams_to_send(self) -> list[Transmit]:
        out, self._out = self._out, []
        return out

    def next_event(self) -> ev.Event | None:
        return self._events.popleft() if self._events else None

    def neighbours(self) -> list[NeighbourInfo]:
        return [NeighbourInfo(n.node, n.iface, n.link, n.quality, n.line, n.last_heard)
                for n in self._neighbours.values()]

    def routes(self, now: float) -> list[RouteInfo]:
        return [RouteInfo(r.dest, r.next_hop, r.hops, r.seq, r.valid, max(0.0, r.expiry - now),
                          tuple(sorted(r.precursors)), r.gateway_line is not None)
                for r in self._routes.values()]

    def route_to(self, dest: bytes) -> Route | None:
        """The valid route to `dest`, if any (a live record: do not modify it)."""
        route = self._routes.get(dest)
        return route if route is not None and route.valid else None

    def receive(self, data: bytes, iface: str, link_src: Hashable, now: float) -> None:
        """Handle bytes heard on `iface` from `link_src`. Never raises on bad input."""
        self._rx_frames += 1
        self._rx_bytes += len(data)
        if iface not in self.interfaces:
            self._drop("unknown_iface")
            return
        if data and data[0] == FRAGMENT_MARK:  # is_fragment(data), without the call
            try:
                frag = decode_fragment(data)
            except FrameError as exc:
                self._drop(exc.reason)
                return
            self._stats["rx_frag"] += 1
            held = self._reassembly
            before = (held.evicted, held.expired, held.oversized)
            whole = held.add(iface, link_src, frag, now)
            self._stats["drop_reassembly_evicted"] += held.evicted - before[0]
            self._stats["drop_reassembly_expired"] += held.expired - before[1]
            self._stats["drop_oversized"] += held.oversized - before[2]
            if whole is None:
                return
            data = whole
        try:
            decoded = self._decode_cache
            frame = (decoded.decode(data, self.config.max_frame_bytes) if decoded is not None
                     else decode(data, self.config.max_frame_bytes))
        except FrameError as exc:
            self._drop(exc.reason)
            return
        if frame.sender == self.id:
            self._drop("own_frame")
            return
        if isinstance(frame, Control):
            self._rx_by_type[frame.type] += 1
            self._on_control(frame, iface, link_src, now)
        else:
            self._rx_by_type[T_DATA] += 1
            self._on_data(frame, now)

    def handle_timer(self, now: float) -> None:
        timers = self._timers
        while timers and timers[0][0] <= now:
            when, _, kind, key = heapq.heappop(timers)
            self._fire(kind, key, when, now)

    def send_data(self, dest: bytes, payload: bytes, now: float) -> None:
        """Send `payload` end to end to `dest` (a node id, or BACKHAUL via a gateway)."""
        if len(payload) > self.config.max_payload_bytes:
            raise PayloadTooLarge(
                f"{len(payload)}-byte payload > max_payload_bytes={self.config.max_payload_bytes}")
        self._stats["data_originated"] += 1
        if dest == self.id:
            self._events.append(ev.DataReceived(self.id, payload, 0, now))
            return
        if dest == BACKHAUL and self._line.is_gateway:
            self._events.append(ev.BackhaulData(self.id, payload, 0, now))
            return
        target = self._gateway if dest == BACKHAUL else dest
        if target is not None and self._can_send(target):
            self._originate_data(target, payload, dest == BACKHAUL, now)
            return
        self._enqueue(dest, payload, now)
        if dest == BACKHAUL:
            self._start_discovery(BACKHAUL, now, gateway=True)
        else:
            self._start_discovery(dest, now)

    def set_line(self, status: LineStatus, now: float) -> None:
        """This node's mobile line changed: announce it at once and adapt the gateway role."""
        old = self._line
        if status == old:
            return
        self._line = status
        self._line_up = status.is_gateway
        self._events.append(ev.LineStatusChanged(old, status, now))
        self._send_hello(now)
        if old.is_gateway and not status.is_gateway:
            if self._gateway_users:
                self._send_rerr([], [self.id], self._gateway_users, now)
            self._gateway_users.clear()
            self._push_timer(now, "gw_check", None)
        self._reselect_gateway(now, "own line up" if status.is_gateway else "own line down")
        if status.is_gateway:
            for item in self._take_buffer(BACKHAUL):
                self._events.append(ev.BackhaulData(self.id, item.payload, 0, now))

    def link_failed(self, iface: str, link_dst: Hashable, now: float) -> None:
        """The link layer reports it could not deliver to `link_dst` (e.g. no MAC ack)."""
        for node, (nif, link) in list(self._links.items()):
            if nif == iface and link == link_dst:
                self._link_break(node, "link layer failure", now)

    # ----------------------------------------------------------------- timers

    def _push_timer(self, when: float, kind: str, key: object) -> None:
        self.timers_pushed += 1
        self._timer_seq += 1
        heapq.heappush(self._timers, (when, self._timer_seq, kind, key))

    def _fire(self, kind: str, key: object, when: float, now: float) -> None:
        if kind == "hello":
            if now >= self._next_hello:
                self._send_hello(now)
        elif kind == "send":
            assert isinstance(key, Transmit)
            self._emit(key)
        elif kind == "rreq_forward":
            assert isinstance(key, tuple)
            self._forward_pending_rreq(key)
        elif kind == "route":
            assert isinstance(key, Route)
            if key.timer_at == when and not key.gone:
                key.timer_at = INF
                self._route_timer(key, now)
        elif kind == "neighbour":
            assert isinstance(key, Neighbour)
            if not key.gone:
                expiry = key.expiry(self.config.allowed_hello_loss)
                if expiry <= now:
                    route = self._routes.get(key.node)
                    if route is not None and route.valid and route.expiry <= now:
                        # Its direct route (whose entry get_timer left to this one) ran
                        # out too: it carried nothing lately, so it expires without a RERR.
                        self._invalidate(route, "expired", now)
                    self._link_break(key.node, "hello timeout", now)
                else:
                    self._push_timer(expiry, "neighbour", key)
        elif kind == "discovery":
            assert isinstance(key, bytes)
            self._discovery_timer(key, now)
        elif kind == "buffer":
            assert isinstance(key, bytes)
            self._expire_buffer(key, now)
        elif kind == "ack":
            assert isinstance(key, bytes)
            deadline = self._awaiting_ack.get(key)
            if deadline is not None and deadline <= now:
                del self._awaiting_ack[key]
                self._blacklist[key] = now + self.config.blacklist_timeout_s
                self._stats["blacklisted"] += 1
        elif kind == "rreq_send":
            assert isinstance(key, bytes)
            disc = self._discoveries.get(key)
            if disc is not None:
                self._send_rreq(disc, now)
        elif kind == "gw_check":
            self._gateway_check(now)
        elif kind == "gw_refresh":
            assert isinstance(key, Route)
            self._gateway_refresh(key, now)

    # ----------------------------------------------------------------- sending helpers

    def _next_counter(self) -> int:
        self._counter += 1
        return self._counter

    def _sign(self, body: Body) -> tuple[bytes, bytes]:
        signed = encode_body(body)
        frame_type = TYPE_OF[type(body)]
        sig = self.identity.sign(signing_message(frame_type, signed))
        if self._verify_cache is not None:
            # Cores sharing a verify cache (a simulator) then never re-verify our frames.
            self._verify_cache.vouch(self.identity.public_key, sig, signed,
                                     SIGNING_PREFIX[frame_type])
        return signed, sig

    def _emit(self, tx: Transmit) -> None:
        mtu = self.interfaces[tx.iface].mtu
        self._stats["tx_" + tx.kind] += 1
        if len(tx.data) <= mtu:
            self._stats["tx_bytes"] += len(tx.data)
            self._out.append(tx)
            return
        self._frag_id = (self._frag_id + 1) & 0xFFFF
        for piece in fragment(tx.data, mtu, self._frag_id):
            self._stats["tx_frag"] += 1
            self._stats["tx_bytes"] += len(piece)
            self._out.append(Transmit(tx.iface, tx.link_dst, piece, tx.kind))

    def _broadcast(self, data: bytes, kind: str, now: float, jitter: float = 0.0) -> None:
        for iface in self.interfaces:
            tx = Transmit(iface, None, data, kind)
            if jitter > 0:
                self._push_timer(now + self._rng.uniform(0.0, jitter), "send", tx)
            else:
                self._emit(tx)

    def _unicast(self, node: bytes, data: bytes, kind: str) -> bool:
        link = self._links.get(node)
        if link is None:
            self._drop("no_link")
            return False
        self._emit(Transmit(link[0], link[1], data, kind))
        return True

    def _drop(self, reason: str) -> None:
        self._stats["drop_" + reason] += 1

    def _learn(self, node: bytes, public_key: bytes | None, iface: str | None,
               link: Hashable | None) -> None:
        # Oldest learned first out. An entry heard again unchanged keeps its place: every
        # HELLO repeats what we know, and re-ordering on each cost more than the rest of its
        # handling at 1,000 nodes. Should a live entry be evicted (beyond max_known_nodes),
        # the neighbour's next frame learns it again.
        bound = self.config.max_known_nodes
        if public_key is not None:
            keys = self._keys
            if keys.get(node) != public_key:
                keys[node] = public_key
                keys.move_to_end(node)
                if len(keys) > bound:
                    keys.popitem(last=False)
        if iface is not None:
            links = self._links
            known = links.get(node)
            if known is None or known[0] != iface or known[1] != link:
                links[node] = (iface, link)
                links.move_to_end(node)
                if len(links) > bound:
                    links.popitem(last=False)

    # ----------------------------------------------------------------- HELLO and neighbours

    def _send_hello(self, now: float) -> None:
        cfg = self.config
        self._hello_no += 1
        gateway = self.gateway
        hops = 0 if self._line.is_gateway else gateway.hops if gateway else NO_GATEWAY
        echo = None
        if self._neighbours:
            nb = min(self._neighbours.values(), key=_ECHOED_AT)
            nb.echoed_at = now
            held_us = min(int((now - nb.last_heard) * 1_000_000), 600_000_000)
            echo = (nb.node, nb.last_hello_no, held_us)
        body = Hello(self.identity.public_key, self._next_counter(), self._hello_no,
                     int(cfg.hello_interval_s * 1000), self._line, min(hops, NO_GATEWAY), echo)
        self._hellos_sent.append((self._hello_no, now))
        signed, sig = self._sign(body)
        self._broadcast(encode_control(T_HELLO, self.id, signed, sig), "hello", now)
        self._next_hello = now + cfg.hello_interval_s - self._rng.uniform(0.0, cfg.hello_jitter_s)
        self._push_timer(self._next_hello, "hello", None)

    def _on_hello(self, body: Hello, origin: bytes, iface: str, link: Hashable,
                  now: float) -> None:
        cfg = self.config
        nb = self._neighbours.get(origin)
        interval = max(body.interval_ms / 1000.0, 0.01)
        triggered = False
        if nb is None:
            nb = Neighbour(origin, body.origin_pk, iface, link, body.line, now, interval,
                           body.hello_no)
            self._neighbours[origin] = nb
            self._events.append(ev.NeighbourUp(origin, iface, body.line, now))
            if len(self._neighbours) == 1:
                self._events.append(ev.ManetJoined((origin,), self._line.is_gateway, now))
            self._push_timer(nb.expiry(cfg.allowed_hello_loss), "neighbour", nb)
            # Until we have measured a link, answer a new neighbour at once (echoing it, as it
            # is the least recently echoed), so that a node that just started learns its hop
            # times in milliseconds. Not later: in a moving network neighbours come and go
            # all the time, and triggered HELLOs would crowd the channel (Broch at pause 0:
            # delivery fell from 0.93 to 0.83). At most one per quarter interval; one that
            # would come sooner is deferred.
            if self._hop_rtt is None:
                if now >= self._next_triggered_hello:
                    self._next_triggered_hello = now + cfg.hello_interval_s / 4
                    triggered = True
                elif self._next_triggered_hello < self._next_hello:
                    self._next_hello = self._next_triggered_hello
                    self._push_timer(self._next_hello, "hello", None)
        else:
            missed = min(max(body.hello_no - nb.last_hello_no - 1, 0), 16)
            keep = 1.0 - cfg.link_quality_alpha
            nb.quality = nb.quality * keep ** (missed + 1) + cfg.link_quality_alpha
            if body.line is not nb.line and body.line != nb.line:
                self._events.append(ev.NeighbourLineChanged(origin, nb.line, body.line, now))
            nb.iface, nb.link, nb.line = iface, link, body.line
            nb.last_heard, nb.hello_interval_s = now, interval
            nb.last_hello_no = body.hello_no
        nb.gateway_hops = body.gateway_hops
        if body.echo is not None and body.echo[0] == self.id:
            self._on_echo(origin, body.echo[1], body.echo[2], now)
        line = body.line
        line_gateway = line.is_gateway
        lifetime = cfg.allowed_hello_loss * interval
        route = self._routes.get(origin)
        if route is not None and route.valid and route.hops == 1 and route.next_hop == origin:
            # What _update_route does for a valid direct route (no sequence number to weigh).
            expiry = now + lifetime
            if expiry > route.expiry:
                route.expiry = expiry
            if line_gateway:
                route.gateway_line = line
        else:
            self._update_route(origin, origin, 1, 0, False, lifetime, now,
                               line if line_gateway else None)
        was_gateway = origin in self._gateways
        own_gateway = self._line_up
        if line_gateway:
            self._gateways[origin] = line
            # A gateway itself never selects one (_reselect_gateway would do nothing).
            if (not was_gateway or self._gateway is None) and not (
                    own_gateway and self._gateway is None):
                self._reselect_gateway(now, "gateway neighbour")
        elif was_gateway:
            self._lose_gateway(origin, now)
        if body.gateway_hops != NO_GATEWAY and not own_gateway:
            self._gateway_hint(body.gateway_hops + 1, now)
        if triggered:
            self._send_hello(now)

    def _on_echo(self, neighbour: bytes, hello_no: int, held_us: int, now: float) -> None:
        """A neighbour echoed one of our HELLOs: the link works both ways; sample its RTT."""
        self._confirmed[neighbour] = now
        sent = next((t for n, t in self._hellos_sent if n == hello_no), None)
        if sent is None:
            return
        rtt = now - sent - held_us / 1_000_000
        if rtt < 0:
            return
        self._hop_samples += 1
        if self._hop_rtt is None or (self._hop_samples <= FIRST_HOP_SAMPLES
                                     and rtt < self._hop_rtt / 2):
            # The first samples are taken while neighbours are still starting, with busy
            # loops; smoothed in, one slow start-up echo kept ring searches at RFC timing for
            # minutes. A sample under half the estimate among the first few starts it afresh.
            self._hop_rtt, self._hop_rttvar = rtt, rtt / 2
        else:
            self._hop_rttvar = 0.75 * self._hop_rttvar + 0.25 * abs(self._hop_rtt - rtt)
            self._hop_rtt = 0.875 * self._hop_rtt + 0.125 * rtt

    @property
    def node_traversal_s(self) -> float:
        """NODE_TRAVERSAL_TIME as measured on our links (RFC 3561's value until measured).

        Half the smoothed HELLO round trip plus four deviations, plus the mean forwarding
        jitter; never below `min_node_traversal_s` nor above the configured value. Discovery
        waits use it, so a search over fast links does not wait for 2 Mbit/s radio timing.
        """
        cfg = self.config
        if self._hop_rtt is None:
            return cfg.node_traversal_s
        measured = (self._hop_rtt + 4 * self._hop_rttvar) / 2 + cfg.rreq_jitter_s / 2
        return min(cfg.node_traversal_s, max(cfg.min_node_traversal_s, measured))

    def _link_break(self, node: bytes, reason: str, now: float) -> None:
        """A neighbour is gone: invalidate routes through it and tell their precursors."""
        gone = self._neighbours.pop(node, None)
        if gone is not None:
            gone.gone = True
            self._events.append(ev.NeighbourDown(node, reason, now))
            if not self._neighbours:
                self._events.append(ev.ManetLeft(now))
        self._links.pop(node, None)
        self._awaiting_ack.pop(node, None)
        self._gateway_users.discard(node)
        broken: list[tuple[bytes, int]] = []
        precursors: set[bytes] = set()
        for route in list(self._routes.values()):
            if route.valid and route.next_hop == node:
                route.seq += 1
                precursors |= route.precursors
                broken.append((route.dest, route.seq))
                self._invalidate(route, reason, now)
        precursors.discard(node)
        if broken and precursors:
            self._send_rerr(broken, [], precursors, now)

    # ----------------------------------------------------------------- control frames

    def _on_control(self, frame: Control, iface: str, link: Hashable, now: float) -> None:
        body = frame.body
        origin = frame.origin
        sender = frame.sender
        frame_type = frame.type
        if origin == self.id:
            self._duplicates += 1
            return
        replay = self._replay
        freshness = replay.check(origin, body.counter)
        if freshness is not Freshness.FRESH:
            if freshness is Freshness.DUPLICATE:
                self._duplicates += 1
                if frame_type == T_RREQ and self._rreq_pending:
                    pending = self._rreq_pending.get((origin, body.counter))
                    if pending is not None:
                        pending.copies += 1
            else:
                self._drop("replay")
            return
        if frame_type in (T_RREQ, T_RREP):
            if frame_type == T_RREQ and self._blacklisted(sender, now):
                self._drop("blacklisted")
                return
            if not self._hop_chain_ok(frame):
                self._drop("bad_hop_count")
                return
        elif sender != origin:  # HELLO, RERR and RREP-ACK are one hop
            self._drop("forwarded_hop_local")
            return
        cache = self._verify_cache
        prefix = SIGNING_PREFIX[frame_type]
        if not (cache.verify(body.origin_pk, frame.signature, frame.signed, prefix)
                if cache is not None
                else verify(body.origin_pk, frame.signature, prefix + frame.signed)):
            self._drop("bad_signature")
            return
        replay.accept(origin, body.counter)
        # Link addresses are bound to the authenticated originator for one-hop frames; for a
        # forwarded frame the sender field is only the previous hop's claim.
        if sender == origin:
            self._learn(origin, body.origin_pk, iface, link)
        else:
            if sender not in self._links:
                self._learn(sender, None, iface, link)
            self._learn(origin, body.origin_pk, None, None)
        if isinstance(body, Hello):
            self._on_hello(body, origin, iface, link, now)
        elif isinstance(body, Rreq):
            self._on_rreq(frame, body, origin, now)
        elif isinstance(body, Rrep):
            self._on_rrep(frame, body, now)
        elif isinstance(body, Rerr):
            self._on_rerr(sender, body, now)
        elif isinstance(body, RrepAck):
            self._awaiting_ack.pop(sender, None)
            self._confirmed[sender] = now

    def _hop_chain_ok(self, frame: Control) -> bool:
        body = frame.body
        assert isinstance(body, (Rreq, Rrep))
        first = body.first_hops if isinstance(body, Rrep) else 0
        if not first <= frame.hop_count <= body.max_hops:
            return False
        steps = body.max_hops - frame.hop_count
        cache = self._decode_cache
        top = (cache.hash_chain(frame.hop_hash, steps) if cache is not None
               else hash_chain(frame.hop_hash, steps))
        return top == body.top_hash

    def _blacklisted(self, node: bytes, now: float) -> bool:
        until = self._blacklist.get(node)
        if until is None:
            return False
        if until <= now:
            del self._blacklist[node]
            return False
        return True

    def _on_rreq(self, frame: Control, body: Rreq, origin: bytes, now: float) -> None:
        cfg = self.config
        hops = frame.hop_count + 1
        self._neighbour_route(frame.sender, now)
        self._update_route(origin, frame.sender, hops, body.origin_seq, True,
                           max(2 * cfg.net_traversal_s - 2 * hops * cfg.node_traversal_s,
                               cfg.active_route_timeout_s), now)
        gateway_search = bool(body.flags & F_GATEWAY)
        if body.dest == self.id or (gateway_search and self._line.is_gateway):
            if body.dest == self.id and not body.flags & F_UNKNOWN_SEQ:
                self._seq = max(self._seq, body.dest_seq)
            if gateway_search:
                self._gateway_users.add(frame.sender)
                lifetime = cfg.gateway_route_lifetime_s
            else:
                lifetime = cfg.my_route_timeout_s
            self._send_rrep(dest=self.id, dest_pk=self.identity.public_key, dest_seq=self._seq,
                            requester=origin, first_hops=0, lifetime=lifetime,
                            gateway_line=self._line if gateway_search else None,
                            to=frame.sender, now=now)
            return
        known = self._gateway if gateway_search else body.dest
        route = self._routes.get(known) if known is not None else None
        dest_pk = self._keys.get(known) if known is not None else None
        if (route is not None and route.valid and route.seq_valid and dest_pk is not None
                and not body.flags & F_DEST_ONLY and route.next_hop != frame.sender
                and (gateway_search or body.flags & F_UNKNOWN_SEQ or route.seq >= body.dest_seq)
                and (not gateway_search or route.gateway_line is not None)):
            reverse = self._routes.get(origin)
            if reverse is None:  # the table was full
                return
            route.precursors.add(frame.sender)
            reverse.precursors.add(route.next_hop)
            self._stats["rrep_intermediate"] += 1
            self._send_rrep(dest=route.dest, dest_pk=dest_pk, dest_seq=route.seq,
                            requester=origin, first_hops=route.hops,
                            lifetime=max(route.expiry - now, cfg.active_route_timeout_s),
                            gateway_line=route.gateway_line, to=frame.sender, now=now)
            if body.flags & F_GRATUITOUS:
                self._send_rrep(dest=origin, dest_pk=body.origin_pk, dest_seq=body.origin_seq,
                                requester=route.dest, first_hops=hops,
                                lifetime=max(reverse.expiry - now, cfg.active_route_timeout_s),
                                gateway_line=None, to=route.next_hop, now=now)
            return
        if frame.ttl <= 1:
            self._drop("rreq_ttl")
            return
        data = encode_control(T_RREQ, self.id, frame.signed, frame.signature, frame.ttl - 1,
                              hops, hop_hash(frame.hop_hash))
        if cfg.rreq_suppress_copies <= 0:
            self._stats["rreq_forwarded"] += 1
            self._broadcast(data, "rreq", now, cfg.rreq_jitter_s)
            return
        key = (origin, body.counter)
        self._rreq_pending[key] = _PendingRreq(data)
        self._push_timer(now + self._rng.uniform(0.0, cfg.rreq_jitter_s), "rreq_forward",
                         key)

    def _forward_pending_rreq(self, key: tuple[bytes, int]) -> None:
        """Rebroadcast a held RREQ unless enough neighbours were heard doing so already.

        Counter-based flooding (Ni et al., "The broadcast storm problem", MobiCom 1999):
        every neighbour of ours that heard those copies needs nothing more from us.
        """
        pending = self._rreq_pending.pop(key, None)
        if pending is None:
            return
        if pending.copies >= self.config.rreq_suppress_copies:
            self._stats["rreq_suppressed"] += 1
            return
        self._stats["rreq_forwarded"] += 1
        for iface in self.interfaces:
            self._emit(Transmit(iface, None, pending.data, "rreq"))

    def _send_rrep(self, *, dest: bytes, dest_pk: bytes, dest_seq: int, requester: bytes,
                   first_hops: int, lifetime: float, gateway_line: LineStatus | None,
                   to: bytes, now: float) -> None:
        max_hops = self.config.net_diameter
        if first_hops > max_hops:
            return
        seed = self._rng.randbytes(HASH_LEN)
        flags = F_GATEWAY if gateway_line is not None else 0
        body = Rrep(self.identity.public_key, self._next_counter(), dest, dest_pk, dest_seq,
                    requester, int(min(lifetime, 3600.0) * 1000), flags, first_hops, max_hops,
                    hash_chain(seed, max_hops - first_hops), gateway_line)
        signed, sig = self._sign(body)
        self._forward_rrep(signed, sig, body, first_hops, seed, to, now)

    def _forward_rrep(self, signed: bytes, sig: bytes, body: Rrep, hops: int, hash_value: bytes,
                      to: bytes, now: float) -> None:
        want_ack = self.config.rrep_ack_required and not self._recently_confirmed(to, now)
        data = encode_control(T_RREP, self.id, signed, sig, 1 if want_ack else 0, hops,
                              hash_value)
        if self._unicast(to, data, "rrep") and want_ack:
            self._awaiting_ack[to] = now + self.config.next_hop_wait_s
            self._push_timer(now + self.config.next_hop_wait_s, "ack", to)

    def _recently_confirmed(self, node: bytes, now: float) -> bool:
        when = self._confirmed.get(node)
        return when is not None and now - when < self.config.delete_period_s

    def _on_rrep(self, frame: Control, body: Rrep, now: float) -> None:
        if node_id_of(body.dest_pk) != body.dest:
            self._drop("bad_dest_key")
            return
        if body.dest == self.id:
            self._drop("rrep_for_self")
            return
        hops = frame.hop_count + 1
        self._neighbour_route(frame.sender, now)
        if frame.ttl & 1:
            ack = RrepAck(self.identity.public_key, self._next_counter(), body.counter)
            signed, sig = self._sign(ack)
            self._unicast(frame.sender, encode_control(T_RREP_ACK, self.id, signed, sig),
                          "rrep_ack")
        self._learn(body.dest, body.dest_pk, None, None)
        gateway_line = body.line if body.flags & F_GATEWAY else None
        self._update_route(body.dest, frame.sender, hops, body.dest_seq, True,
                           body.lifetime_ms / 1000.0, now, gateway_line)
        if gateway_line is not None and gateway_line.is_gateway:
            self._gateways[body.dest] = gateway_line
        if body.requester == self.id:
            # The destination saw our RREQ, or the intermediate that answered sent it a
            # gratuitous RREP with our key: either way it can open what we seal.
            self._mark_introduced(body.dest)
            disc = self._discoveries.get(body.dest)
            if disc is not None:
                self._finish_discovery(disc, now)
            if gateway_line is not None:
                disc = self._discoveries.get(BACKHAUL)
                if disc is not None:
                    self._finish_discovery(disc, now)
                self._reselect_gateway(now, "gateway reply")
            self._flush_buffer(body.dest, now)
            return
        reverse = self._routes.get(body.requester)
        if reverse is None or not reverse.valid:
            self._drop("no_reverse_route")
            return
        forward = self._routes.get(body.dest)
        if forward is None:  # the table was full
            return
        forward.precursors.add(reverse.next_hop)
        reverse.precursors.add(frame.sender)
        reverse.expiry = max(reverse.expiry, now + self.config.active_route_timeout_s)
        self._forward_rrep(frame.signed, frame.signature, body, hops, hop_hash(frame.hop_hash),
                           reverse.next_hop, now)

    def _on_rerr(self, sender: bytes, body: Rerr, now: float) -> None:
        broken: list[tuple[bytes, int]] = []
        precursors: set[bytes] = set()
        for dest, seq in body.unreachable:
            route = self._routes.get(dest)
            if route is not None and route.valid and route.next_hop == sender:
                route.seq = max(route.seq, seq)
                route.seq_valid = True
                precursors |= route.precursors
                broken.append((dest, route.seq))
                self._invalidate(route, "rerr", now)
        for gw in body.gateways_lost:
            route = self._routes.get(gw)
            if route is not None and route.next_hop == sender:
                self._lose_gateway(gw, now)
        precursors.discard(sender)
        if broken and precursors:
            self._send_rerr(broken, [], precursors, now)

    def _send_rerr(self, broken: list[tuple[bytes, int]], lost: list[bytes],
                   precursors: set[bytes], now: float) -> None:
        window = self._rerr_sent
        while window and window[0] <= now - 1.0:
            window.popleft()
        if len(window) >= self.config.rerr_ratelimit:
            self._drop("rerr_ratelimit")
            return
        window.append(now)
        body = Rerr(self.identity.public_key, self._next_counter(), 0,
                    tuple(broken[:64]), tuple(lost[:64]))
        signed, sig = self._sign(body)
        data = encode_control(T_RERR, self.id, signed, sig)
        if len(precursors) == 1:
            self._unicast(next(iter(precursors)), data, "rerr")
        else:
            self._broadcast(data, "rerr", now)

    # ----------------------------------------------------------------- route table

    def _neighbour_route(self, node: bytes, now: float) -> None:
        self._update_route(node, node, 1, 0, False, self.config.active_route_timeout_s, now)

    def _update_route(self, dest: bytes, next_hop: bytes, hops: int, seq: int, seq_valid: bool,
                      lifetime: float, now: float, gateway_line: LineStatus | None = None) -> None:
        """Install or refresh a route by RFC 3561 6.2's rules; emit RouteAdded on change."""
        route = self._routes.get(dest)
        expiry = now + lifetime
        if route is None:
            if len(self._routes) >= self.config.max_known_nodes and not self._evict_route():
                self._drop("route_table_full")
                return
            route = Route(dest, next_hop, hops, seq, seq_valid, True, expiry,
                          gateway_line=gateway_line)
            self._routes[dest] = route
            self._route_up(route, now)
            return
        newer = seq_valid and (not route.seq_valid or seq > route.seq)
        same_better = seq_valid and route.seq_valid and seq == route.seq and (
            not route.valid or hops < route.hops)
        direct = dest == next_hop and hops == 1
        if newer or same_better or (direct and (not route.valid or route.hops > 1)) or (
                not route.valid and not route.seq_valid):
            changed = not route.valid or route.next_hop != next_hop or route.hops != hops
            route.next_hop, route.hops = next_hop, hops
            if seq_valid:
                route.seq, route.seq_valid = seq, True
            if gateway_line is not None:
                route.gateway_line = gateway_line
            route.valid = True
            route.expiry = expiry if changed else max(route.expiry, expiry)
            if changed:
                self._route_up(route, now)
            return
        if route.valid and route.next_hop == next_hop:
            route.expiry = max(route.expiry, expiry)
            if gateway_line is not None:
                route.gateway_line = gateway_line

    def _route_up(self, route: Route, now: float) -> None:
        self._events.append(ev.RouteAdded(route.dest, route.next_hop, route.hops, route.seq,
                                          route.expiry - now, now))
        self._arm_route(route)
        if route.dest in self._gateways or route.gateway_line is not None:
            self._reselect_gateway(now, "route to gateway")

    def _evict_route(self) -> bool:
        for dest, route in self._routes.items():
            if not route.valid:
                del self._routes[dest]
                route.gone = True
                return True
        return False

    def _invalidate(self, route: Route, reason: str, now: float) -> None:
        route.valid = False
        route.expiry = now + self.config.delete_period_s
        self._arm_route(route)
        self._events.append(ev.RouteBroken(route.dest, route.next_hop, route.hops, route.seq,
                                           reason, now))
        if route.dest == self._gateway or route.next_hop == self._gateway_next_hop():
            self._reselect_gateway(now, f"route broken: {reason}")

    def _arm_route(self, route: Route) -> None:
        """Keep one timer per route, at the earliest deadline it needs (stale ones are ignored)."""
        if route.expiry < route.timer_at:
            route.timer_at = route.expiry
            self._push_timer(route.expiry, "route", route)

    def _route_timer(self, route: Route, now: float) -> None:
        if route.expiry > now:
            self._arm_route(route)
        elif route.valid:
            self._invalidate(route, "expired", now)
        else:
            del self._routes[route.dest]
            route.gone = True

    # ----------------------------------------------------------------- gateways

    def _gateway_next_hop(self) -> bytes | None:
        gw = self._gateway
        return self._routes[gw].next_hop if gw is not None and gw in self._routes else None

    def _gateway_score(self, gw: bytes) -> float | None:
        """Lower is better: hops, plus penalties for a lossy first link and a weak line."""
        route = self._routes.get(gw)
        line = self._gateways.get(gw)
        if route is None or not route.valid or line is None or not line.is_gateway:
            return None
        nb = self._neighbours.get(route.next_hop)
        link_quality = nb.quality if nb is not None else 0.5
        return route.hops + (1.0 - link_quality) + (1.0 - line.quality())

    def _reselect_gateway(self, now: float, reason: str) -> None:
        old = self._gateway
        if self._line.is_gateway:
            new: bytes | None = None
        else:
            scored = [(s, gw) for gw in self._gateways
                      if (s := self._gateway_score(gw)) is not None]
            new = min(scored)[1] if scored else None
            if old is not None and new is not None and new != old:
                current = self._gateway_score(old)
                best = min(scored)[0]
                if current is not None and best > current - self.config.gateway_switch_margin:
                    new = old
        if new == old:
            return
        self._gateway = new
        self._gateway_backoff = self.config.gateway_retry_s
        if new is None:
            self._events.append(ev.GatewayChanged(old, None, None, 0, 0, None, reason, now))
            if not self._line.is_gateway:
                self._push_timer(now, "gw_check", None)
            return
        route = self._routes[new]
        self._events.append(ev.GatewayChanged(old, new, route.next_hop, route.hops, route.seq,
                                              self._gateways[new], reason, now))
        if old is None:
            self._send_hello(now)  # neighbours without a gateway learn at once that we have one
        self._push_timer(route.expiry - self.config.net_traversal_s, "gw_refresh", route)
        self._flush_buffer(BACKHAUL, now)

    def _gateway_refresh(self, route: Route, now: float) -> None:
        """Renew the route to the gateway we depend on shortly before it expires."""
        if (route.dest != self._gateway or self._routes.get(route.dest) is not route
                or not route.valid or self._line.is_gateway):
            return  # a chain for a gateway we no longer use: let it end
        due = route.expiry - self.config.net_traversal_s
        if due > now:
            self._push_timer(due, "gw_refresh", route)
            return
        self._stats["gateway_refreshes"] += 1
        self._start_discovery(BACKHAUL, now, gateway=True)
        self._push_timer(route.expiry, "gw_refresh", route)

    def _lose_gateway(self, gw: bytes, now: float) -> None:
        """`gw` lost its line (its HELLO or an RERR said so): forget it and tell precursors."""
        self._gateways.pop(gw, None)
        route = self._routes.get(gw)
        if route is not None and route.gateway_line is not None:
            route.gateway_line = None
            if route.precursors:
                self._send_rerr([], [gw], set(route.precursors), now)
        if gw == self._gateway:
            self._reselect_gateway(now, "gateway lost its line")

    def _gateway_hint(self, hops: int, now: float) -> None:
        """A neighbour announced a gateway `hops` away from us: ask now if it beats ours.

        Without one, this beats waiting for a backed-off retry; with one, a strictly shorter
        way is asked for at most once per DELETE_PERIOD (hysteresis may keep the old one).
        A TTL of 1 suffices: the announcing neighbour answers for its gateway.
        """
        if self._gateway is not None:
            if hops >= self._routes[self._gateway].hops or now < self._next_hint:
                return
            self._next_hint = now + self.config.delete_period_s
        disc = self._discoveries.get(BACKHAUL)
        if disc is None:
            self._start_discovery(BACKHAUL, now, gateway=True, ttl=1)
        elif not disc.hinted:
            disc.hinted = True
            disc.ttl, disc.retries = 1, 0
            self._send_rreq(disc, now)

    def _best_gateway_neighbour(self) -> bytes | None:
        best = min(((n.gateway_hops, -n.quality, n.node) for n in self._neighbours.values()
                    if n.gateway_hops != NO_GATEWAY and n.node not in self._blacklist),
                   default=None)
        return best[2] if best is not None else None

    def _gateway_check(self, now: float) -> None:
        """While our line is down and no gateway is known, look for one (rate-limited)."""
        if self._line.is_gateway or self._gateway is not None:
            return
        if BACKHAUL not in self._discoveries:
            self._start_discovery(BACKHAUL, now, gateway=True)

    # ----------------------------------------------------------------- route discovery

    def _start_discovery(self, dest: bytes, now: float, gateway: bool = False,
                         ttl: int | None = None) -> None:
        if dest in self._discoveries:
            return
        cfg = self.config
        if ttl is None:
            known = self._routes.get(self._gateway if gateway and self._gateway else dest)
            ttl = cfg.ttl_start if known is None else min(known.hops + cfg.ttl_increment,
                                                           cfg.net_diameter)
        disc = _Discovery(dest, ttl, 0, now, gateway, now)
        self._discoveries[dest] = disc
        self._stats["route_discoveries"] += 1
        self._send_rreq(disc, now)

    def _send_rreq(self, disc: _Discovery, now: float) -> None:
        cfg = self.config
        window = self._rreq_sent
        while window and window[0] <= now - 1.0:
            window.popleft()
        if len(window) >= cfg.rreq_ratelimit:
            self._stats["rreq_ratelimited"] += 1
            self._push_timer(window[0] + 1.0, "rreq_send", disc.dest)
            return
        window.append(now)
        self._seq += 1
        known = self._routes.get(disc.dest)
        flags = F_GRATUITOUS
        if disc.gateway:
            flags |= F_GATEWAY
        if known is None or not known.seq_valid:
            flags |= F_UNKNOWN_SEQ
        seed = self._rng.randbytes(HASH_LEN)
        # No honest copy travels more hops than its TTL, so the chain need be no longer:
        # verifying costs one hash per hop left, and ring searches start small.
        body = Rreq(self.identity.public_key, self._next_counter(), self._seq, disc.dest,
                    known.seq if known is not None else 0, flags, disc.ttl,
                    hash_chain(seed, disc.ttl))
        signed, sig = self._sign(body)
        self._stats["rreq_originated"] += 1
        data = encode_control(T_RREQ, self.id, signed, sig, disc.ttl, 0, seed)
        helper = self._best_gateway_neighbour() if disc.gateway and disc.ttl == 1 else None
        if helper is not None:
            # A neighbour's HELLO says it reaches a gateway: ask it alone, so that one node
            # answers instead of every neighbour with a gateway route.
            self._stats["rreq_unicast_gateway"] += 1
            self._unicast(helper, data, "rreq")
        else:
            self._broadcast(data, "rreq", now)
        if disc.ttl < cfg.net_diameter:
            # RING_TRAVERSAL_TIME with the measured hop time: small rings answer quickly.
            wait = 2 * self.node_traversal_s * (disc.ttl + cfg.timeout_buffer)
        else:
            # The full-diameter retries keep RFC timing: how long a search may last before
            # its packets are dropped is what lets a moving network reconnect in time.
            wait = cfg.net_traversal_s * (2 ** disc.retries)
        disc.deadline = now + wait
        self._push_timer(disc.deadline, "discovery", disc.dest)

    def _discovery_timer(self, dest: bytes, now: float) -> None:
        disc = self._discoveries.get(dest)
        if disc is None or disc.deadline > now:
            return
        cfg = self.config
        if disc.ttl < cfg.net_diameter:
            disc.ttl += cfg.ttl_increment
            if disc.ttl > cfg.ttl_threshold:
                disc.ttl = cfg.net_diameter
        else:
            disc.retries += 1
            if disc.retries > cfg.rreq_retries:
                del self._discoveries[dest]
                dropped = 0
                for _item in self._take_buffer(dest):
                    dropped += 1
                    self._drop("no_route_found")
                    self._events.append(ev.DataDropped(dest, "no_route_found", now))
                self._events.append(ev.RouteDiscoveryFailed(dest, disc.retries, dropped, now))
                if disc.gateway and not self._line.is_gateway:
                    self._push_timer(now + self._gateway_backoff, "gw_check", None)
                    self._gateway_backoff = min(2 * self._gateway_backoff,
                                                cfg.gateway_retry_max_s)
                return
        self._send_rreq(disc, now)

    def _finish_discovery(self, disc: _Discovery, now: float) -> None:
        del self._discoveries[disc.dest]
        self._stats["route_discovery_ms_total"] += int((now - disc.started) * 1000)
        self._stats["route_discoveries_ok"] += 1

    # ----------------------------------------------------------------- data

    def _can_send(self, dest: bytes) -> bool:
        route = self._routes.get(dest)
        return route is not None and route.valid and dest in self._keys

    def _enqueue(self, dest: bytes, payload: bytes, now: float) -> None:
        cfg = self.config
        queue = self._buffer.setdefault(dest, deque())
        if len(queue) >= cfg.max_buffered_per_dest or self._buffered >= cfg.max_buffered_packets:
            self._drop("buffer_full")
            self._events.append(ev.DataDropped(dest, "buffer_full", now))
            return
        queue.append(_Buffered(payload, now))
        self._buffered += 1
        self._push_timer(now + cfg.effective_buffer_timeout_s, "buffer", dest)

    def _take_buffer(self, dest: bytes) -> list[_Buffered]:
        queue = self._buffer.pop(dest, None)
        if not queue:
            return []
        self._buffered -= len(queue)
        return list(queue)

    def _expire_buffer(self, dest: bytes, now: float) -> None:
        queue = self._buffer.get(dest)
        limit = now - self.config.effective_buffer_timeout_s
        while queue and queue[0].queued <= limit:
            queue.popleft()
            self._buffered -= 1
            self._drop("buffer_timeout")
            self._events.append(ev.DataDropped(dest, "buffer_timeout", now))
        if queue is not None and not queue:
            del self._buffer[dest]

    def _flush_buffer(self, dest: bytes, now: float) -> None:
        if dest == BACKHAUL:
            target = self._gateway
            if target is None or not self._can_send(target):
                return
        else:
            target = dest
            if not self._can_send(dest):
                return
        for item in self._take_buffer(dest):
            self._originate_data(target, item.payload, dest == BACKHAUL, now)

    def _originate_data(self, dest: bytes, payload: bytes, backhaul: bool, now: float) -> None:
        if dest not in self._introduced:
            self._introduce(dest, now)
        counter = self._next_counter()
        header = Data(self.id, self.id, dest, counter, self.config.data_ttl, 0,
                      F_BACKHAUL if backhaul else 0, b"")
        try:
            sealed = self._sealer.seal(self._keys[dest], counter, payload, header.header())
        except SealError:
            self._drop("bad_peer_key")
            return
        frame = Data(self.id, self.id, dest, counter, self.config.data_ttl, 0, header.flags,
                     sealed)
        self._route_data(frame, now)

    def _introduce(self, dest: bytes, now: float) -> None:
        """Send `dest` our key (and a route to us) ahead of our first data.

        A route learned while forwarding someone else's RREP leaves `dest` without our public
        key, so it could not open what we seal. A gratuitous RREP for ourselves travels the
        route first; our own discoveries do this already (RREQs ask for gratuitous RREPs).
        """
        route = self._routes.get(dest)
        if route is None:
            return
        self._mark_introduced(dest)
        self._stats["rrep_introductions"] += 1
        self._send_rrep(dest=self.id, dest_pk=self.identity.public_key, dest_seq=self._seq,
                        requester=dest, first_hops=0, lifetime=self.config.my_route_timeout_s,
                        gateway_line=None, to=route.next_hop, now=now)

    def _mark_introduced(self, dest: bytes) -> None:
        self._introduced[dest] = None
        self._introduced.move_to_end(dest)
        if len(self._introduced) > self.config.max_known_nodes:
            self._introduced.popitem(last=False)

    def _route_data(self, frame: Data, now: float, prev_hop: bytes | None = None) -> None:
        """Send `frame` (its sender field already ours) on; `prev_hop`: who handed it to us."""
        route = self._routes.get(frame.dest)
        if route is None or not route.valid:
            self._drop("no_route")
            self._events.append(ev.DataDropped(frame.dest, "no_route", now))
            seq = route.seq if route is not None else 0
            if prev_hop is not None:
                self._send_rerr([(frame.dest, seq)], [], {prev_hop}, now)
            return
        cfg = self.config
        route.expiry = max(route.expiry, now + cfg.active_route_timeout_s)
        hop = self._routes.get(route.next_hop)
        if hop is not None and hop.valid:
            hop.expiry = max(hop.expiry, now + cfg.active_route_timeout_s)
        if prev_hop is not None:
            # Whoever sends us traffic for dest must hear of its break (RFC 3561 only adds
            # precursors on RREP; routes learned from others' RREQ floods would have none).
            route.precursors.add(prev_hop)
            back = self._routes.get(frame.origin)
            if back is not None and back.valid:
                back.expiry = max(back.expiry, now + cfg.active_route_timeout_s)
            self._stats["data_forwarded"] += 1
        self._unicast(route.next_hop, encode_data(frame), "data")

    def _on_data(self, frame: Data, now: float) -> None:
        if frame.dest != self.id:
            if frame.ttl <= 1:
                self._drop("data_ttl")
                self._events.append(ev.DataDropped(frame.dest, "data_ttl", now))
                return
            self._route_data(Data(self.id, frame.origin, frame.dest, frame.counter,
                                  frame.ttl - 1, frame.hops + 1, frame.flags, frame.sealed), now,
                             frame.sender)
            return
        origin_pk = self._keys.get(frame.origin)
        if origin_pk is None:
            self._drop("unknown_origin_key")
            return
        if self._data_replay.check(frame.origin, frame.counter) is not Freshness.FRESH:
            self._drop("data_replay")
            return
        try:
            payload = self._sealer.open(origin_pk, frame.counter, frame.sealed, frame.header())
        except SealError:
            self._drop("bad_seal")
            return
        self._data_replay.accept(frame.origin, frame.counter)
        self._mark_introduced(frame.origin)  # it sealed to us, so it has our key
        hops = frame.hops + 1
        back = self._routes.get(frame.origin)
        if back is not None and back.valid:
            back.expiry = max(back.expiry, now + self.config.active_route_timeout_s)
        if frame.flags & F_BACKHAUL:
            if not self._line.is_gateway:
                self._drop("not_gateway")
                self._send_rerr([], [self.id], {frame.sender}, now)
                return
            self._gateway_users.add(frame.sender)
            self._stats["backhaul_delivered"] += 1
            self._events.append(ev.BackhaulData(frame.origin, payload, hops, now))
            return
        self._stats["data_delivered"] += 1
        self._events.append(ev.DataReceived(frame.origin, payload, hops, now))

