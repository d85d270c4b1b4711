"""The wire format: deterministic CBOR frames, versioned and typed. No crypto, no sending.

Every frame is a CBOR array `[version, type, sender, ...]`, where `sender` is the node id of
the hop that transmitted it. Control frames (HELLO, RREQ, RREP, RERR, RREP-ACK) are
`[version, type, sender, signed, unsigned, signature]`: `signed` is a CBOR byte string holding
the originator's fields (deterministic CBOR), so a forwarder copies it and the signature
untouched and only rewrites `unsigned` (TTL, hop count, hop hash). DATA frames carry an
AEAD-sealed payload instead of a signature. Fragments of frames larger than a link's MTU use a
compact binary header (first byte 0x01), since BLE's 20-byte writes cannot afford CBOR's.

`decode()` takes untrusted bytes and returns a frame or raises `FrameError`; it checks the
size before parsing and the type and range of every field.
"""

from __future__ import annotations

import hashlib
import struct
from collections import deque
from dataclasses import dataclass
from typing import Any

import cbor2

from mesh.identity import NODE_ID_LEN, PUBLIC_KEY_LEN, SIGNATURE_LEN, node_id_of
from mesh.line import LineStatus

VERSION = 1
MAX_FRAME_BYTES = 2048
HASH_LEN = 16
BACKHAUL = b"\xff" * NODE_ID_LEN
"""The well-known destination id meaning "the backhaul, through any gateway"."""
NO_GATEWAY = 255
SIGNATURE_CONTEXT = b"manet-mesh/1"
"""Prefix of every signed message, so a mesh signature is never valid anywhere else."""

T_HELLO = 1
T_RREQ = 2
T_RREP = 3
T_RERR = 4
T_RREP_ACK = 5
T_DATA = 6
KIND_OF = {T_HELLO: "hello", T_RREQ: "rreq", T_RREP: "rrep", T_RERR: "rerr",
           T_RREP_ACK: "rrep_ack", T_DATA: "data"}

# RREQ flags (RFC 3561 J/R/G/D/U plus our gateway search).
F_GRATUITOUS = 0x01
F_DEST_ONLY = 0x02
F_UNKNOWN_SEQ = 0x04
F_GATEWAY = 0x08
"""RREQ: looking for any gateway (dest is BACKHAUL). RREP: the route leads to a gateway."""
F_NO_DELETE = 0x20
"""RERR: N flag (local repair in progress)."""
F_BACKHAUL = 0x01
"""DATA: the payload is for the backhaul; the destination gateway hands it up its line."""

FRAGMENT_MARK = 0x01
FRAGMENT_HEADER = struct.Struct("!BHBB")  # mark, fragment id, index, count
U64 = (1 << 64) - 1


class FrameError(Exception):
    """Bytes that are not a valid frame. `reason` names the counter it is recorded under."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def hop_hash(value: bytes) -> bytes:
    """One step of the SAODV hop-count hash chain."""
    return hashlib.sha256(value).digest()[:HASH_LEN]


def hash_chain(value: bytes, steps: int) -> bytes:
    for _ in range(steps):
        value = hashlib.sha256(value).digest()[:HASH_LEN]
    return value


# --- signed bodies --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello:
    origin_pk: bytes
    counter: int
    hello_no: int
    interval_ms: int
    line: LineStatus
    gateway_hops: int = NO_GATEWAY
    """Hops from the sender to the gateway it uses (0: it is one; NO_GATEWAY: none known)."""
    echo: tuple[bytes, int, int] | None = None
    """(neighbour, its last HELLO number heard, microseconds held since): one neighbour per
    HELLO, in turn, learns the link's round trip and that the link works both ways."""

    def fields(self) -> list[Any]:
        return [self.origin_pk, self.counter, self.hello_no, self.interval_ms, self.line.to_wire(),
                self.gateway_hops, list(self.echo) if self.echo else []]

    @classmethod
    def parse(cls, f: list[Any]) -> Hello:
        pk, counter, hello_no, interval_ms, line, gateway_hops, echo = _exact(f, 7)
        if echo == []:
            parsed_echo = None
        else:
            node, echoed_no, held_us = _exact(echo, 3)
            parsed_echo = (_node(node), _u64(echoed_no), _uint(held_us, 600_000_000))
        return cls(_pk(pk), _u64(counter), _u64(hello_no), _uint(interval_ms, 600_000),
                   _line(line), _uint(gateway_hops, NO_GATEWAY), parsed_echo)


@dataclass(frozen=True, slots=True)
class Rreq:
    origin_pk: bytes
    counter: int
    """The originator's message counter; also serves as the RREQ ID."""
    origin_seq: int
    dest: bytes
    dest_seq: int
    flags: int
    max_hops: int
    top_hash: bytes

    def fields(self) -> list[Any]:
        return [self.origin_pk, self.counter, self.origin_seq, self.dest, self.dest_seq,
                self.flags, self.max_hops, self.top_hash]

    @classmethod
    def parse(cls, f: list[Any]) -> Rreq:
        pk, counter, oseq, dest, dseq, flags, max_hops, top = _exact(f, 8)
        return cls(_pk(pk), _u64(counter), _u64(oseq), _node(dest), _u64(dseq),
                   _uint(flags, 0xFF), _uint(max_hops, 255), _hash(top))


@dataclass(frozen=True, slots=True)
class Rrep:
    origin_pk: bytes
    """Key of the node that made this reply: the destination, or an intermediate node."""
    counter: int
    dest: bytes
    dest_pk: bytes
    """The destination's key (node id = hash of it), so the requester can seal data to it."""
    dest_seq: int
    requester: bytes
    """The RREQ originator this reply travels back to."""
    lifetime_ms: int
    flags: int
    first_hops: int
    """Hop count the replier starts from (0 from the destination, its distance otherwise)."""
    max_hops: int
    top_hash: bytes
    line: LineStatus | None
    """A gateway's line status, on replies with F_GATEWAY."""

    def fields(self) -> list[Any]:
        return [self.origin_pk, self.counter, self.dest, self.dest_pk, self.dest_seq,
                self.requester, self.lifetime_ms, self.flags, self.first_hops, self.max_hops,
                self.top_hash, None if self.line is None else self.line.to_wire()]

    @classmethod
    def parse(cls, f: list[Any]) -> Rrep:
        pk, counter, dest, dpk, dseq, req, life, flags, first, max_hops, top, line = _exact(f, 12)
        return cls(_pk(pk), _u64(counter), _node(dest), _pk(dpk), _u64(dseq), _node(req),
                   _uint(life, 3_600_000), _uint(flags, 0xFF), _uint(first, 255),
                   _uint(max_hops, 255), _hash(top),
                   None if line is None else _line(line))


@dataclass(frozen=True, slots=True)
class Rerr:
    origin_pk: bytes
    counter: int
    flags: int
    unreachable: tuple[tuple[bytes, int], ...]
    """(destination, its last known sequence number) pairs."""
    gateways_lost: tuple[bytes, ...]
    """Gateways on this path that lost their line (the node itself may still be reachable)."""

    def fields(self) -> list[Any]:
        return [self.origin_pk, self.counter, self.flags,
                [[d, s] for d, s in self.unreachable], list(self.gateways_lost)]

    @classmethod
    def parse(cls, f: list[Any]) -> Rerr:
        pk, counter, flags, unreachable, lost = _exact(f, 5)
        if not isinstance(unreachable, list) or not isinstance(lost, list):
            raise TypeError("rerr lists")
        if len(unreachable) > 64 or len(lost) > 64:
            raise ValueError("rerr too long")
        pairs = tuple((_node(d), _u64(s)) for d, s in (_exact(p, 2) for p in unreachable))
        return cls(_pk(pk), _u64(counter), _uint(flags, 0xFF), pairs,
                   tuple(_node(g) for g in lost))


@dataclass(frozen=True, slots=True)
class RrepAck:
    origin_pk: bytes
    counter: int
    acked: int
    """The counter of the RREP this acknowledges."""

    def fields(self) -> list[Any]:
        return [self.origin_pk, self.counter, self.acked]

    @classmethod
    def parse(cls, f: list[Any]) -> RrepAck:
        pk, counter, acked = _exact(f, 3)
        return cls(_pk(pk), _u64(counter), _u64(acked))


Body = Hello | Rreq | Rrep | Rerr | RrepAck
BODY_TYPES: dict[int, type[Body]] = {T_HELLO: Hello, T_RREQ: Rreq, T_RREP: Rrep,
                                     T_RERR: Rerr, T_RREP_ACK: RrepAck}
TYPE_OF: dict[type[Body], int] = {v: k for k, v in BODY_TYPES.items()}


@dataclass(frozen=True, slots=True)
class Control:
    """A signed control frame as received: the body, the exact signed bytes, the hop fields.

    On an RREQ `ttl` is the remaining TTL; on an RREP it is the hop-local flags (bit 0: the
    sender wants an RREP-ACK, RFC 3561's A flag, which is per hop and so not signed).
    """

    type: int
    sender: bytes
    body: Body
    signed: bytes
    signature: bytes
    ttl: int = 0
    hop_count: int = 0
    hop_hash: bytes = b""
    origin: bytes = b""
    """Node id of the signer (hash of body.origin_pk), computed once when decoded."""

    @property
    def kind(self) -> str:
        return KIND_OF[self.type]


@dataclass(frozen=True, slots=True)
class Data:
    """An end-to-end sealed payload with its routing header (all a forwarder sees)."""

    sender: bytes
    origin: bytes
    dest: bytes
    counter: int
    """The originator's message counter: the AEAD nonce and the replay-window index."""
    ttl: int
    hops: int
    flags: int
    sealed: bytes

    kind = "data"

    def header(self) -> bytes:
        """The fields the AEAD authenticates (not ttl, hops or sender, which forwarders change)."""
        return b"".join((self.origin, self.dest, self.counter.to_bytes(8, "big"),
                         bytes((self.flags,))))


Frame = Control | Data


SIGNING_PREFIX = {t: SIGNATURE_CONTEXT + bytes((t,)) for t in BODY_TYPES}
"""What precedes the signed bytes in the message each frame type's signature covers."""


def signing_message(frame_type: int, signed: bytes) -> bytes:
    return SIGNING_PREFIX[frame_type] + signed


def encode_body(body: Body) -> bytes:
    return cbor2.dumps(body.fields(), canonical=True)


def encode_control(frame_type: int, sender: bytes, signed: bytes, signature: bytes,
                   ttl: int = 0, hop_count: int = 0, hash_value: bytes = b"") -> bytes:
    unsigned = [ttl, hop_count, hash_value] if frame_type in (T_RREQ, T_RREP) else []
    return cbor2.dumps([VERSION, frame_type, sender, signed, unsigned, signature], canonical=True)


def encode_data(d: Data) -> bytes:
    return cbor2.dumps([VERSION, T_DATA, d.sender, d.origin, d.dest, d.counter, d.ttl, d.hops,
                        d.flags, d.sealed], canonical=True)


def decode(data: bytes, max_bytes: int = MAX_FRAME_BYTES,
           ids: dict[bytes, bytes] | None = None) -> Frame:
    """Parse untrusted bytes into a frame, or raise FrameError. Signatures are not checked.

    With `ids`, the frame's sender, origin (and a data frame's destination) are taken from
    it when equal ones are there, and added otherwise (see DecodeCache).
    """
    if len(data) > max_bytes:
        raise FrameError("oversized", f"{len(data)} bytes > {max_bytes}")
    if not data:
        raise FrameError("truncated", "empty frame")
    try:
        outer = cbor2.loads(data)
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise FrameError("malformed", f"not CBOR: {exc}") from exc
    if not isinstance(outer, list) or len(outer) < 3:
        raise FrameError("malformed", "not a frame array")
    if outer[0] != VERSION or type(outer[0]) is not int:
        raise FrameError("version", f"unsupported version {outer[0]!r}")
    frame_type = outer[1]
    try:
        sender = _node(outer[2])
        if ids is not None:
            sender = ids.setdefault(sender, sender)
        if frame_type == T_DATA:
            _, _, _, origin, dest, counter, ttl, hops, flags, sealed = _exact(outer, 10)
            if not isinstance(sealed, bytes):
                raise TypeError("sealed payload must be bytes")
            origin, dest = _node(origin), _node(dest)
            if ids is not None:
                origin, dest = ids.setdefault(origin, origin), ids.setdefault(dest, dest)
            return Data(sender, origin, dest, _u64(counter), _uint(ttl, 255),
                        _uint(hops, 255), _uint(flags, 0xFF), sealed)
        body_type = BODY_TYPES.get(frame_type) if type(frame_type) is int else None
        if body_type is None:
            raise FrameError("unknown_type", f"frame type {frame_type!r}")
        _, _, _, signed, unsigned, signature = _exact(outer, 6)
        if not isinstance(signed, bytes) or not isinstance(signature, bytes):
            raise TypeError("signed part and signature must be bytes")
        if len(signature) != SIGNATURE_LEN:
            raise ValueError("bad signature length")
        fields = cbor2.loads(signed)
        if not isinstance(fields, list):
            raise TypeError("signed part must be an array")
        body = body_type.parse(fields)
        ttl = hop_count = 0
        hash_value = b""
        if frame_type in (T_RREQ, T_RREP):
            ttl, hop_count, hash_value = _exact(unsigned, 3)
            ttl, hop_count, hash_value = _uint(ttl, 255), _uint(hop_count, 255), _hash(hash_value)
        elif unsigned != []:
            raise ValueError("unexpected unsigned fields")
        origin = node_id_of(body.origin_pk)
        if ids is not None:
            origin = ids.setdefault(origin, origin)
        return Control(frame_type, sender, body, signed, signature, ttl, hop_count, hash_value,
                       origin)
    except FrameError:
        raise
    except (cbor2.CBORDecodeError, ValueError, TypeError, IndexError, OverflowError,
            RecursionError) as exc:
        raise FrameError("malformed", str(exc) or type(exc).__name__) from exc


class DecodeCache:
    """Remembers decoded frames by their bytes, bounded (oldest out).

    Decoding is a pure function of the bytes and frames are immutable, so a simulator may
    share one cache among all its nodes: a broadcast heard by twelve neighbours is parsed
    once. Only frames that decode are kept; errors are raised every time. Oldest out by a
    deque of keys (as VerifyCache: `next(iter(dict))` gets slow once the cache is full).

    Node ids in the frames it decodes are shared objects: every core keys its tables by
    them, and a lookup with the very object stored as key skips comparing the bytes (and
    reading them from memory, which at 1,000 simulated nodes is a cache miss). The table
    is emptied when it reaches `capacity` ids (sharing then starts again).

    Checking a received RREQ's or RREP's hop chain is pure as well: `hash_chain` remembers
    its results (bounded the same way), so the receivers of one transmission hash once.
    """

    def __init__(self, capacity: int = 16384) -> None:
        self.capacity = capacity
        self._frames: dict[bytes, Frame] = {}
        self._order: deque[bytes] = deque()
        self._ids: dict[bytes, bytes] = {}
        self._chains: dict[tuple[bytes, int], bytes] = {}
        self.hits = 0

    def decode(self, data: bytes, max_bytes: int = MAX_FRAME_BYTES) -> Frame:
        if len(data) > max_bytes:
            raise FrameError("oversized", f"{len(data)} bytes > {max_bytes}")
        frame = self._frames.get(data)
        if frame is not None:
            self.hits += 1
            return frame
        ids = self._ids
        if len(ids) >= self.capacity:
            ids.clear()
        frame = decode(data, max_bytes, ids)
        self._frames[data] = frame
        self._order.append(data)
        if len(self._order) > self.capacity:
            del self._frames[self._order.popleft()]
        return frame

    def hash_chain(self, value: bytes, steps: int) -> bytes:
        """`hash_chain(value, steps)`, remembered."""
        key = (value, steps)
        chains = self._chains
        top = chains.get(key)
        if top is None:
            if len(chains) >= self.capacity:
                chains.clear()
            top = chains[key] = hash_chain(value, steps)
        return top


# --- fragments -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fragment:
    frag_id: int
    index: int
    count: int
    chunk: bytes

    kind = "frag"


def is_fragment(data: bytes) -> bool:
    return bool(data) and data[0] == FRAGMENT_MARK


def fragment(data: bytes, mtu: int, frag_id: int) -> list[bytes]:
    """Split a frame into fragments of at most `mtu` bytes each."""
    room = mtu - FRAGMENT_HEADER.size
    if room < 1:
        raise ValueError(f"MTU {mtu} is too small for fragments")
    count = -(-len(data) // room)
    if count > 255:
        raise ValueError(f"a {len(data)}-byte frame needs {count} fragments at MTU {mtu}")
    return [FRAGMENT_HEADER.pack(FRAGMENT_MARK, frag_id & 0xFFFF, i, count)
            + data[i * room:(i + 1) * room] for i in range(count)]


def decode_fragment(data: bytes) -> Fragment:
    if len(data) <= FRAGMENT_HEADER.size:
        raise FrameError("truncated", "fragment without payload")
    _, frag_id, index, count = FRAGMENT_HEADER.unpack_from(data)
    if count == 0 or index >= count:
        raise FrameError("malformed", f"fragment {index} of {count}")
    return Fragment(frag_id, index, count, data[FRAGMENT_HEADER.size:])


# --- field checks ----------------------------------------------------------------------------


def _exact(value: Any, n: int) -> list[Any]:
    if not isinstance(value, list) or len(value) != n:
        raise ValueError(f"expected an array of {n}")
    return value


def _uint(value: Any, limit: int) -> int:
    if type(value) is not int or not 0 <= value <= limit:
        raise ValueError(f"integer out of range 0..{limit}")
    return value


def _u64(value: Any) -> int:
    return _uint(value, U64)


def _bytes(value: Any, n: int, what: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != n:
        raise ValueError(f"{what} must be {n} bytes")
    return value


def _pk(value: Any) -> bytes:
    return _bytes(value, PUBLIC_KEY_LEN, "public key")


_LINES: dict[tuple[int, int, int, int], LineStatus] = {}
_LINES_MAX = 4096


def _line(value: Any) -> LineStatus:
    """LineStatus.from_wire, shared: equal lines decode to one object.

    LineStatus is immutable, so a receiver can tell an unchanged line by identity instead
    of comparing fields (every HELLO carries one).
    """
    if type(value) is list and len(value) == 4 and all(type(v) is int for v in value):
        key = (value[0], value[1], value[2], value[3])
        line = _LINES.get(key)
        if line is None:
            line = LineStatus.from_wire(value)
            if len(_LINES) >= _LINES_MAX:
                _LINES.clear()
            _LINES[key] = line
        return line
    return LineStatus.from_wire(value)  # raises the precise error


def _node(value: Any) -> bytes:
    return _bytes(value, NODE_ID_LEN, "node id")


def _hash(value: Any) -> bytes:
    return _bytes(value, HASH_LEN, "hop hash")
