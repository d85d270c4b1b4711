"""Blocks: one signed link of an author's append-only feed. Codec and signing only.

Wire form (deterministic CBOR): `[version, author, height, prev, timestamp_ms, txs, signature]`
where `author` is the 32-byte Ed25519 public key, `prev` the hash of the block at `height - 1`
(32 zero bytes for the genesis block at height 0), `txs` a list of `[type, body]`.
The signature covers `SIGNATURE_CONTEXT` + the same array without its last element, which is
the encoded block with its first byte changed and the signature cut off, so neither signing nor
verifying re-encodes anything. The block hash is SHA-256 of the whole encoded block.

A block is its exact bytes: its hash, duplicate and equivocation checks all compare bytes.
Authors encode canonically (`Block.create`), but a receiver does not re-encode to check it:
the signature covers every byte but the signature's own, whose framing (`0x58 0x40` + 64
bytes at the very end, a 7-item array header at the start) `decode_block` pins down, and
libsodium refuses malleated signatures, so nobody but the author can make a second encoding
of a block that still verifies. If the author signs two encodings of one height, they are two
different blocks at one height: an equivocation, caught and proven like any other.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import FrozenInstanceError
from typing import Any, Protocol

from ledger import codec
from ledger.errors import BlockError, CodecError, TxError
from ledger.tx import Transaction, TxRegistry, wire_transactions

VERSION = 1
HASH_LEN = 32
KEY_LEN = 32
SIG_LEN = 64
GENESIS_PREV = bytes(HASH_LEN)
MAX_BLOCK_BYTES = 1024 * 1024
MAX_BLOCK_TXS = 4096
SIGNATURE_CONTEXT = b"manet-ledger-block/1"
_SIG_TAIL = 2 + SIG_LEN  # CBOR byte-string header (0x58 0x40) + 64 bytes


class Signer(Protocol):
    """What signs blocks: `mesh.identity.Identity` fits."""

    @property
    def public_key(self) -> bytes: ...

    def sign(self, message: bytes) -> bytes: ...


class Block:
    """A decoded block. Build with `Block.create` (author side) or `decode_block` (receiver).

    Immutable, compared by its fields (not `raw` or `hash`), like the frozen dataclass it was.
    A received block keeps its checked wire transactions and makes `txs` when first read:
    ingesting needs only their types (`tx_types`, for the index), and making eight
    `Transaction` objects a block cost as much as checking their schemas.
    """

    __slots__ = (
        "_txs",
        "_wire",
        "author",
        "hash",
        "height",
        "prev",
        "raw",
        "signature",
        "timestamp_ms",
        "tx_types",
    )
    author: bytes
    height: int
    prev: bytes
    timestamp_ms: int
    signature: bytes
    raw: bytes
    hash: bytes
    tx_types: list[str]
    """The type of each transaction, in order."""
    _txs: tuple[Transaction, ...] | None
    _wire: list[list[Any]] | None

    def __init__(self, author: bytes, height: int, prev: bytes, timestamp_ms: int,
                 txs: tuple[Transaction, ...], signature: bytes, raw: bytes,
                 hash: bytes) -> None:
        for name, value in (("author", author), ("height", height), ("prev", prev),
                            ("timestamp_ms", timestamp_ms), ("signature", signature),
                            ("raw", raw), ("hash", hash), ("tx_types", [tx.type for tx in txs]),
                            ("_txs", tuple(txs)), ("_wire", None)):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    @property
    def txs(self) -> tuple[Transaction, ...]:
        txs = self._txs
        if txs is None:
            wire = self._wire
            if wire is None:  # its templates vouched for it: decoded only now
                wire = codec.decode(self.raw, MAX_BLOCK_BYTES, check_types=False,
                                    canonical=False)[5]
            txs = wire_transactions(wire)
            _set_txs(self, txs)
            _set_wire(self, None)
        return txs

    def _key(self) -> tuple[Any, ...]:
        return (self.author, self.height, self.prev, self.timestamp_ms, self.txs,
                self.signature)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not Block:
            return NotImplemented
        assert isinstance(other, Block)
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash((self.author, self.height, self.signature))

    def __repr__(self) -> str:
        return (f"Block(author={self.author!r}, height={self.height}, prev={self.prev!r}, "
                f"timestamp_ms={self.timestamp_ms}, txs={self.txs!r}, "
                f"signature={self.signature!r})")

    @classmethod
    def create(cls, signer: Signer, height: int, prev: bytes, timestamp_ms: int,
               txs: tuple[Transaction, ...]) -> Block:
        """Sign a new block (the caller has validated the transactions)."""
        unsigned = codec.encode([VERSION, signer.public_key, height, prev, timestamp_ms,
                                 [tx.to_wire() for tx in txs]])
        signature = signer.sign(SIGNATURE_CONTEXT + unsigned)
        raw = b"\x87" + unsigned[1:] + b"\x58\x40" + signature
        return cls(signer.public_key, height, prev, timestamp_ms, txs, signature, raw,
                   hashlib.sha256(raw).digest())

    def signing_bytes(self) -> bytes:
        return signing_bytes(self.raw)

    @property
    def size(self) -> int:
        return len(self.raw)


def signing_bytes(raw: bytes) -> bytes:
    """The message a block's signature covers, cut from its encoding."""
    return SIGNATURE_CONTEXT + b"\x86" + raw[1:-_SIG_TAIL]


def decode_block(raw: bytes, registry: TxRegistry) -> Block:
    """Parse untrusted bytes into a block whose transactions match their schemas.

    Raises `BlockError` (reason "malformed", "version" or "tx") and never anything else.
    The signature is not checked here; `ledger.validate.check_block` does that, and only then
    is the block trusted (see the module docstring for why it is not re-encoded).

    First the fast path: a block whose header is spelled in its usual form and whose
    transactions each match their type's byte template is taken without decoding
    (`ledger.template`; its `txs` are decoded when read). Anything else is decoded and
    checked field by field.
    """
    if len(raw) <= MAX_BLOCK_BYTES and raw[-_SIG_TAIL:-SIG_LEN] == b"\x58\x40":
        found = _USUAL.match(raw, 0, len(raw) - _SIG_TAIL)
        if found is not None:
            block = _from_template(raw, found, registry)
            if block is not None:
                return block
    return _decode(raw, registry)


def _decode(raw: bytes, registry: TxRegistry) -> Block:
    """`decode_block` without the fast path: decode, then check every field."""
    try:
        value: Any = codec.decode(raw, MAX_BLOCK_BYTES, check_types=False, canonical=False)
    except CodecError as exc:
        raise BlockError("malformed", str(exc)) from exc
    if raw[:1] != b"\x87" or raw[-_SIG_TAIL:-SIG_LEN] != b"\x58\x40":
        raise BlockError("malformed", "a block is a 7-item array ending in its signature")
    if type(value) is not list or len(value) != 7:
        raise BlockError("malformed", "a block is a 7-item array")
    version, author, height, prev, ts, txs, sig = value
    if version != VERSION:
        raise BlockError("version", f"unsupported block version {version!r}")
    if type(author) is not bytes or len(author) != KEY_LEN:
        raise BlockError("malformed", "author must be a 32-byte public key")
    if type(height) is not int or not 0 <= height < 2**63:
        raise BlockError("malformed", "height out of range")
    if type(prev) is not bytes or len(prev) != HASH_LEN:
        raise BlockError("malformed", "prev must be a 32-byte hash")
    if type(ts) is not int or not 0 <= ts < 2**63:
        raise BlockError("malformed", "timestamp out of range")
    if type(sig) is not bytes or len(sig) != SIG_LEN or sig != raw[-SIG_LEN:]:
        raise BlockError("malformed", "signature must be the block's last 64 bytes")
    if type(txs) is not list or len(txs) > MAX_BLOCK_TXS:
        raise BlockError("malformed", f"txs must be a list of at most {MAX_BLOCK_TXS}")
    try:
        types = registry.check_wire(txs)
    except TxError as exc:
        raise BlockError("tx", str(exc)) from exc
    return _received(author, height, prev, ts, types, txs, sig, raw)


def _received(author: bytes, height: int, prev: bytes, ts: int, types: list[str],
              wire: list[Any] | None, sig: bytes, raw: bytes) -> Block:
    """A received block, made through its slots: `__init__` (ten `object.__setattr__`)
    cost about a microsecond a block, as much as the checks of `_decode`."""
    block = _new(Block)
    _set_author(block, author)
    _set_height(block, height)
    _set_prev(block, prev)
    _set_ts(block, ts)
    _set_types(block, types)
    _set_txs(block, None)
    _set_wire(block, wire)
    _set_sig(block, sig)
    _set_raw(block, raw)
    _set_hash(block, hashlib.sha256(raw).digest())
    return block


_UINT = rb"(?:[\x00-\x17]|\x18.|\x19.{2}|\x1a.{4}|\x1b.{8})"
_USUAL = re.compile(
    rb"\x87" + re.escape(bytes([VERSION])) + rb"\x58\x20(.{32})(" + _UINT + rb")\x58\x20(.{32})("
    + _UINT + rb")([\x80-\x97]|\x98.|\x99.{2})", re.DOTALL)
"""The head of a block as `Block.create` writes it: version, 32-byte author, height, 32-byte
prev, timestamp, the transactions' array header; then come the transactions and the
signature (`\\x58\\x40` and 64 bytes)."""


def _from_template(raw: bytes, found: re.Match[bytes], registry: TxRegistry) -> Block | None:
    """The block whose head `_USUAL` matched (and whose last 66 bytes frame a signature), if
    each transaction matches its type's template; None: decode it instead (also for what
    the slow path must refuse)."""
    author, height_raw, prev, ts_raw, count_raw = found.group(1, 2, 3, 4, 5)
    # A CBOR head: its value in the initial byte (< 24, less the major type's 0x80 for the
    # array), or in the bytes after it.
    height = int.from_bytes(height_raw[1:] or height_raw, "big")
    ts = int.from_bytes(ts_raw[1:] or ts_raw, "big")
    count = int.from_bytes(count_raw[1:], "big") if len(count_raw) > 1 else count_raw[0] - 0x80
    if height >= 2**63 or ts >= 2**63 or count > MAX_BLOCK_TXS:
        return None
    start, end = found.end(), len(raw) - _SIG_TAIL
    if count:
        types = registry.match_wire(raw, start, end, count)
        if types is None:
            return None
    elif start == end:
        types = []
    else:
        return None
    return _received(author, height, prev, ts, types, None, raw[-SIG_LEN:], raw)


_new = object.__new__
(_set_author, _set_height, _set_prev, _set_ts, _set_types, _set_txs, _set_wire, _set_sig,
 _set_raw, _set_hash) = (Block.__dict__[name].__set__ for name in (
    "author", "height", "prev", "timestamp_ms", "tx_types", "_txs", "_wire", "signature", "raw",
    "hash"))
