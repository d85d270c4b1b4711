"""Canonical encoding and hashing: the only way contract data becomes bytes.

CBOR with canonical (sorted-key, shortest-form) encoding, so that equal data gives equal
bytes on every node, which is what makes a state hash comparable across nodes.
"""

from __future__ import annotations

import hashlib
from typing import Any

import cbor2

from ledger.contracts.errors import InvalidTransaction

MAX_PAYLOAD = 16384
"""Bytes: larger contract payloads are refused before decoding."""


def encode(value: Any) -> bytes:
    return cbor2.dumps(value, canonical=True)


def decode(data: bytes) -> Any:
    """Decode untrusted bytes; any malformed input raises `InvalidTransaction`."""
    if len(data) > MAX_PAYLOAD:
        raise InvalidTransaction(f"payload of {len(data)} bytes exceeds {MAX_PAYLOAD}")
    try:
        return cbor2.loads(data)
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise InvalidTransaction(f"payload is not CBOR: {exc}") from exc


def decode_trusted(data: bytes, limit: int = 1 << 30) -> Any:
    """Decode bytes this node wrote itself (a snapshot), with a larger size limit."""
    if len(data) > limit:
        raise InvalidTransaction(f"{len(data)} bytes exceed {limit}")
    try:
        return cbor2.loads(data)
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise InvalidTransaction(f"not CBOR: {exc}") from exc


def digest(*parts: bytes) -> bytes:
    """SHA-256 over length-prefixed parts (so that ("ab","c") and ("a","bc") differ)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(4, "big"))
        h.update(part)
    return h.digest()
