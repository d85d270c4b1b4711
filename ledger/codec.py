"""Deterministic CBOR in and out, strict on input. No crypto, no I/O.

Hashes and signatures are computed over encoded bytes, so one value must have exactly one
encoding: `decode` re-encodes what it parsed and rejects input that is not already canonical
(RFC 8949 core deterministic encoding, as `cbor2` writes with `canonical=True`). It also
rejects tags, NaN and infinities, and any type outside int, float, bytes, str, bool, None,
list and map.
"""

from __future__ import annotations

import io
import math
from typing import Any

import cbor2

from ledger.errors import CodecError

MAX_DEPTH = 16


def encode(value: Any) -> bytes:
    """Deterministic CBOR of `value` (maps sorted by encoded key, shortest integer forms)."""
    return cbor2.dumps(value, canonical=True)


def _reject_tag(_decoder: Any, tag: Any) -> Any:
    raise CodecError(f"CBOR tag {tag.tag} is not allowed")


def _check(value: Any, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise CodecError("CBOR nested too deeply")
    kind = type(value)
    if kind in (int, bytes, str, bool) or value is None:
        return
    if kind is float:
        if not math.isfinite(value):
            raise CodecError("CBOR floats must be finite")
        return
    if kind is list:
        for item in value:
            _check(item, depth + 1)
        return
    if kind is dict:
        for key, item in value.items():
            if type(key) not in (str, int):
                raise CodecError("CBOR map keys must be strings or integers")
            _check(item, depth + 1)
        return
    raise CodecError(f"CBOR value of type {kind.__name__} is not allowed")


def check_plain(value: Any) -> None:
    """Raise `CodecError` unless `value` holds only plain CBOR types (no tags, NaN, sets...)."""
    _check(value, 0)


def decode(data: bytes, max_bytes: int, *, check_types: bool = True,
           canonical: bool = True) -> Any:
    """Parse untrusted bytes; raise `CodecError` unless they are one CBOR item of plain types
    (no trailing bytes) and, with `canonical`, in deterministic encoding.

    `check_types=False` skips the walk over every value, for callers whose own schema checks
    the type of every value anyway (blocks: the transaction schemas do it; fields of kind
    "any" are walked there). `canonical=False` skips re-encoding the value to compare (the
    costliest step), for bytes whose identity does not depend on it: sync messages, which
    nobody hashes or signs, and blocks, whose signature covers their exact bytes (see
    `ledger.block`)."""
    if len(data) > max_bytes:
        raise CodecError(f"{len(data)} bytes exceeds the limit of {max_bytes}")
    stream = io.BytesIO(data)
    try:
        value = cbor2.CBORDecoder(stream, tag_hook=_reject_tag).decode()
    except CodecError:
        raise
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise CodecError(f"malformed CBOR: {exc}") from exc
    if stream.tell() != len(data):
        raise CodecError(f"{len(data) - stream.tell()} bytes after the CBOR item")
    if check_types:
        _check(value, 0)
    if canonical and encode(value) != data:
        raise CodecError("CBOR is not in deterministic (canonical) encoding")
    return value
