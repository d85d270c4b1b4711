"""Wire protocol between `sim-radio medium` and real agent processes (loopback UDP).

Each UDP datagram carries one message: a CBOR array `[version, tag, ...fields]`.
The medium is the radio: an agent sends it a frame with a link destination (a node
index) or None for broadcast, and the medium delivers the frame to every node in range
as `FrameIn` with the sender's node index as link source. Link addresses in the
simulated medium are node indexes (ints), so the mesh core answers to what it was given.

Sans-I/O: only encode/decode here; sockets live in `medium_client` and `medium_server`.
"""

from __future__ import annotations

from dataclasses import dataclass

import cbor2

VERSION = 1
"""Bumped on any incompatible change; a peer with another version is refused."""

MAX_FRAME = 16_384
"""Largest mesh frame carried in one message (the mesh core fragments above its MTU)."""

MAX_MESSAGE = MAX_FRAME + 256
"""Largest datagram accepted: a frame plus the envelope."""

NODE_ID_LEN = 8

_JOIN = "join"
_WELCOME = "welcome"
_REFUSED = "refused"
_OUT = "out"
_IN = "in"
_MOVE = "move"
_LEAVE = "leave"


class MediumProtocolError(ValueError):
    """A datagram that is not a valid medium message; it is dropped and counted."""


@dataclass(frozen=True, slots=True)
class Join:
    """Agent -> medium: attach this process as one simulated node.

    `node_index` picks a node of the scenario (its mobility and line); None asks the medium
    for a free one. `position` (x, y in metres) pins a node that has no scenario mobility.
    Sending Join again is harmless (it is how a client retries over lossy UDP).
    """

    node_id: bytes
    node_index: int | None = None
    position: tuple[float, float] | None = None


@dataclass(frozen=True, slots=True)
class Welcome:
    """Medium -> agent: joined; `node_index` is this node's link address on the medium."""

    node_index: int
    range_m: float
    mtu: int


@dataclass(frozen=True, slots=True)
class Refused:
    """Medium -> agent: a Join (or a message from an unknown address) was refused."""

    reason: str


@dataclass(frozen=True, slots=True)
class FrameOut:
    """Agent -> medium: transmit `frame` to node `link_dst`, or to all in range if None."""

    frame: bytes
    link_dst: int | None


@dataclass(frozen=True, slots=True)
class FrameIn:
    """Medium -> agent: `frame` heard from node `link_src`."""

    frame: bytes
    link_src: int


@dataclass(frozen=True, slots=True)
class Move:
    """Agent -> medium: this node is now at (x, y) (e.g. a real GPS fix)."""

    position: tuple[float, float]


@dataclass(frozen=True, slots=True)
class Leave:
    """Agent -> medium: detach this process; its node index becomes free."""


Message = Join | Welcome | Refused | FrameOut | FrameIn | Move | Leave


def _position(value: tuple[float, float] | None) -> list[float] | None:
    return None if value is None else [float(value[0]), float(value[1])]


def encode(msg: Message) -> bytes:
    """Encode one message as a datagram (deterministic CBOR)."""
    fields: list[object]
    if isinstance(msg, Join):
        fields = [_JOIN, msg.node_id, msg.node_index, _position(msg.position)]
    elif isinstance(msg, Welcome):
        fields = [_WELCOME, msg.node_index, float(msg.range_m), msg.mtu]
    elif isinstance(msg, Refused):
        fields = [_REFUSED, msg.reason]
    elif isinstance(msg, FrameOut):
        if len(msg.frame) > MAX_FRAME:
            raise MediumProtocolError(f"frame of {len(msg.frame)} bytes exceeds {MAX_FRAME}")
        fields = [_OUT, msg.frame, msg.link_dst]
    elif isinstance(msg, FrameIn):
        if len(msg.frame) > MAX_FRAME:
            raise MediumProtocolError(f"frame of {len(msg.frame)} bytes exceeds {MAX_FRAME}")
        fields = [_IN, msg.frame, msg.link_src]
    elif isinstance(msg, Move):
        fields = [_MOVE, _position(msg.position)]
    elif isinstance(msg, Leave):
        fields = [_LEAVE]
    else:  # pragma: no cover - the type checker rules this out
        raise MediumProtocolError(f"not a medium message: {msg!r}")
    return cbor2.dumps([VERSION, *fields], canonical=True)


def _int(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise MediumProtocolError(f"{what} must be a non-negative int, got {value!r}")
    return value


def _opt_int(value: object, what: str) -> int | None:
    return None if value is None else _int(value, what)


def _bytes(value: object, what: str, limit: int) -> bytes:
    if not isinstance(value, bytes):
        raise MediumProtocolError(f"{what} must be bytes, got {type(value).__name__}")
    if len(value) > limit:
        raise MediumProtocolError(f"{what} of {len(value)} bytes exceeds {limit}")
    return value


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MediumProtocolError(f"{what} must be a number, got {value!r}")
    result = float(value)
    if result != result or result in (float("inf"), float("-inf")):
        raise MediumProtocolError(f"{what} must be finite")
    return result


def _opt_position(value: object) -> tuple[float, float] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != 2:
        raise MediumProtocolError(f"position must be [x, y], got {value!r}")
    return (_number(value[0], "x"), _number(value[1], "y"))


def _arity(fields: list[object], count: int, tag: str) -> None:
    if len(fields) != count:
        raise MediumProtocolError(f"{tag!r} takes {count} fields, got {len(fields)}")


def decode(data: bytes) -> Message:
    """Decode one datagram; anything malformed raises `MediumProtocolError` only."""
    if len(data) > MAX_MESSAGE:
        raise MediumProtocolError(f"datagram of {len(data)} bytes exceeds {MAX_MESSAGE}")
    try:
        value = cbor2.loads(data)
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise MediumProtocolError(f"not CBOR: {exc}") from exc
    if not isinstance(value, list) or len(value) < 2:
        raise MediumProtocolError("a message is an array [version, tag, ...]")
    version, tag, *fields = value
    if version != VERSION:
        raise MediumProtocolError(f"unsupported version {version!r} (this is {VERSION})")
    if tag == _OUT:
        _arity(fields, 2, tag)
        return FrameOut(_bytes(fields[0], "frame", MAX_FRAME), _opt_int(fields[1], "link_dst"))
    if tag == _IN:
        _arity(fields, 2, tag)
        return FrameIn(_bytes(fields[0], "frame", MAX_FRAME), _int(fields[1], "link_src"))
    if tag == _JOIN:
        _arity(fields, 3, tag)
        node_id = _bytes(fields[0], "node_id", NODE_ID_LEN)
        if len(node_id) != NODE_ID_LEN:
            raise MediumProtocolError(f"node_id must be {NODE_ID_LEN} bytes")
        return Join(node_id, _opt_int(fields[1], "node_index"), _opt_position(fields[2]))
    if tag == _WELCOME:
        _arity(fields, 3, tag)
        return Welcome(
            _int(fields[0], "node_index"), _number(fields[1], "range_m"), _int(fields[2], "mtu")
        )
    if tag == _REFUSED:
        _arity(fields, 1, tag)
        if not isinstance(fields[0], str):
            raise MediumProtocolError("reason must be a string")
        return Refused(fields[0][:200])
    if tag == _MOVE:
        _arity(fields, 1, tag)
        position = _opt_position(fields[0])
        if position is None:
            raise MediumProtocolError("move needs a position")
        return Move(position)
    if tag == _LEAVE:
        _arity(fields, 0, tag)
        return Leave()
    raise MediumProtocolError(f"unknown message tag {tag!r}")
