"""Byte templates of schema-valid transactions: a receiver's fast path that skips decoding.

A received block's transactions must match their schemas, but ingesting it needs only their
types (for the index). Decoding ~0.8 KB of CBOR into dicts and checking them took ~9.5 us of
the ~30 us a block costs besides its signature; a regular expression over the encoded bytes
takes ~1.2 us. `tx_template(tx_type)` spells, as a bytes pattern, the deterministic CBOR of
`[type, body]` for every body whose fields are all present, in canonical key order, with
values of the forms below; the pattern only matches well-formed CBOR items whose decoded
value the type's schema accepts. It is a fast path, not a validator: whatever it does not
match (a field left out, non-shortest lengths, a negative zero, a non-ASCII string, a kind it
does not spell) goes through decoding and the schema check as before, so it may refuse a
valid body but never accepts an invalid one.

Spelled: ints (major types 0 and 1; an encoding whose every value is in bounds, or the
in-bounds values of the one- and two-byte forms), finite floats with no bound or a lower
bound of 0 (half, single and double precision, with the exponent's all-ones pattern left
out; and the ints that `Float` accepts), bytes, ASCII strings and lists of items of these
kinds (their first 65 lengths from the lower bound), bools, nested maps of the same, and
None for optional fields. A type with its own `check`, or with a free map, an `any` field or
a list of those, has no template.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from ledger import codec

if TYPE_CHECKING:
    from ledger.tx import Field, TxType

MAX_LENGTHS = 65
"""Lengths of a bytes, str or list field spelled, from its lower bound (one branch each)."""
_ANY = rb"[\x00-\xff]"


def _span(first: float, last: float, base: int = 0) -> bytes | None:
    """A character class of the bytes `base + first` .. `base + last` (None when empty)."""
    if last < first:
        return None
    lo, hi = (re.escape(bytes([base + int(v)])) for v in (first, last))
    return b"[" + lo + b"-" + hi + b"]"


def _int(lo: float | None, hi: float | None) -> bytes:
    """CBOR ints (major types 0 and 1) whose value is within [lo, hi] (None: unbounded)."""
    low = -math.inf if lo is None else lo
    high = math.inf if hi is None else hi
    forms = []
    # One-byte and two-byte forms: the in-bounds part of 0..23, 0..255, -1..-24, -1..-256
    # (a negative int is -1 - u for the u it carries).
    for head, last, base, negative in ((b"", 23, 0, False), (b"\\x18", 255, 0, False),
                                       (b"", 23, 0x20, True), (b"\\x38", 255, 0, True)):
        if negative:
            span = _span(max(0, -1 - high), min(last, -1 - low), base)
        else:
            span = _span(max(0, low), min(last, high), base)
        if span is not None:
            forms.append(head + span)
    for major0, size in ((0x19, 2), (0x1A, 4), (0x1B, 8)):  # longer: all in bounds or none
        if low <= 0 and high >= 2 ** (8 * size) - 1:
            forms.append(re.escape(bytes([major0])) + _ANY + b"{%d}" % size)
        if low <= -(2 ** (8 * size)) and high >= -1:
            forms.append(re.escape(bytes([major0 + 0x20])) + _ANY + b"{%d}" % size)
    return b"(?:" + b"|".join(forms) + b")" if forms else rb"(?!)"


def _float(lo: float | None, hi: float | None) -> bytes | None:
    """Finite floats (and ints) >= lo, for lo None or 0 and no upper bound."""
    if hi is not None or lo not in (None, 0):
        return None
    signs = (0,) if lo == 0 else (0, 0x80)  # lo 0: the sign bit clear (-0.0 falls through)
    # The exponent is all ones (inf, NaN) when these bits of the first two bytes are set:
    # half 0x7c of the first; single 0x7f of the first and 0x80 of the second; double 0x7f
    # of the first and 0xf0 of the second.
    forms = []
    for sign in signs:
        top = re.escape(bytes([sign + 0x7F]))
        forms += [b"\\xf9" + _cls(sign, sign + 0x7B) + _ANY,
                  b"\\xfa(?:" + _cls(sign, sign + 0x7E) + _ANY + b"|" + top + _cls(0, 0x7F) + b")"
                  + _ANY + b"{2}",
                  b"\\xfb(?:" + _cls(sign, sign + 0x7E) + _ANY + b"|" + top + _cls(0, 0xEF) + b")"
                  + _ANY + b"{6}"]
    return b"(?:" + b"|".join([*forms, _int(lo, None)]) + b")"


def _cls(first: int, last: int) -> bytes:
    span = _span(first, last)
    assert span is not None
    return span


def _sized(major: int, lo: float | None, hi: float | None, unit: bytes) -> bytes | None:
    """Byte strings, ASCII text strings or lists (`unit`: a byte, character or item) of lo..hi
    units; only the first `MAX_LENGTHS` lengths from lo (longer ones are decoded)."""
    first = 0 if lo is None else max(0, int(lo))
    last = 255 if hi is None else min(255, int(hi))
    last = min(last, first + MAX_LENGTHS - 1)
    if last < first:
        return None
    forms = []
    for n in range(first, last + 1):
        head = bytes([major + n]) if n < 24 else bytes([major + 24, n])
        forms.append(re.escape(head) + (unit + b"{%d}" % n if n else b""))
    return b"(?:" + b"|".join(forms) + b")"


def _value(spec: Field) -> bytes | None:
    kind = spec.kind
    pattern: bytes | None
    if kind == "int":
        pattern = _int(spec.lo, spec.hi)
    elif kind == "float":
        pattern = _float(spec.lo, spec.hi)
    elif kind == "bytes":
        pattern = _sized(0x40, spec.lo, spec.hi, _ANY)
    elif kind == "str":
        pattern = _sized(0x60, spec.lo, spec.hi, rb"[\x00-\x7f]")
    elif kind == "bool":
        pattern = rb"[\xf4\xf5]"
    elif kind == "map" and spec.fields is not None:
        pattern = _map(spec.fields)
    elif kind == "list" and spec.items is not None:
        item = _value(spec.items)
        pattern = None if item is None else _sized(0x80, spec.lo, spec.hi, b"(?:" + item + b")")
    else:
        return None  # lists of anything, free maps, any: decoded and checked
    if pattern is None:
        return None
    return b"(?:\\xf6|" + pattern + b")" if spec.optional else pattern


def canonical_order(names: Iterable[str]) -> tuple[str, ...]:
    """Map keys in the order deterministic CBOR writes them (shorter encoded key first)."""
    return tuple(sorted(names, key=lambda name: (len(name.encode()), name.encode())))


def _map(fields: Mapping[str, Field]) -> bytes | None:
    """A map holding every field, keys in canonical order (as `Block.create` writes them)."""
    if len(fields) > 23:
        return None
    out = [re.escape(bytes([0xA0 + len(fields)]))]
    for key in canonical_order(fields):
        value = _value(fields[key])
        if value is None:
            return None
        out += [re.escape(codec.encode(key)), value]
    return b"".join(out)


def tx_template(tx_type: TxType) -> bytes | None:
    """The pattern of `[type, body]` for schema-valid bodies of this type, or None."""
    if tx_type.check is not None:
        return None
    body = _map(tx_type.fields)
    if body is None:
        return None
    return b"\\x82" + re.escape(codec.encode(tx_type.name)) + body


def first_type(raw: bytes, start: int) -> str | None:
    """The type name of the transaction encoded at `raw[start:]`, if it is spelled as a
    template spells it (`[text, ...]` with an ASCII name)."""
    if raw[start:start + 1] != b"\x82":
        return None
    head = raw[start + 1] if start + 1 < len(raw) else 0
    if 0x60 <= head < 0x78:
        name = raw[start + 2:start + 2 + head - 0x60]
    elif head == 0x78 and start + 2 < len(raw):
        name = raw[start + 3:start + 3 + raw[start + 2]]
    else:
        return None
    return name.decode("ascii") if name.isascii() else None


class Runs:
    """Compiled patterns of runs of one template: 1, 2, 4, ... transactions back to back.

    A run of n matches as the runs of n's binary digits, so at most 13 patterns are ever
    compiled per type (~2 ms each), whatever counts peers send."""

    def __init__(self, name: str, template: bytes) -> None:
        self.name = name
        self.template = template
        self.runs: dict[int, re.Pattern[bytes]] = {}

    def _run(self, size: int) -> re.Pattern[bytes]:
        run = self.runs.get(size)
        if run is None:
            run = self.runs[size] = re.compile(b"(?:" + self.template + b"){%d}" % size,
                                               re.DOTALL)
        return run

    def match_one(self, raw: bytes, start: int, end: int) -> int:
        """Where one transaction of the template at `raw[start:]` ends, or -1."""
        found = self._run(1).match(raw, start, end)
        return -1 if found is None else found.end()

    def match(self, raw: bytes, start: int, end: int, count: int) -> bool:
        """True when `raw[start:end]` is exactly `count` transactions of the template."""
        whole = self.runs.get(count)  # a power of two seen before: the usual case
        if whole is not None:
            return whole.fullmatch(raw, start, end) is not None
        pos = start
        size = 1
        while count:
            if count & size:
                found = self._run(size).match(raw, pos, end)
                if found is None:
                    return False
                pos = found.end()
                count ^= size
            size <<= 1
        return pos == end
