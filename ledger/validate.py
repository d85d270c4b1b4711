"""Validation of a block against the feed head it extends. Pure functions, no storage.

Checks, cheapest first: height and chain link, timestamp sanity, size, then the signature
(the expensive part), so that junk costs no cryptography. Schema checks of the transactions
happen while decoding (`ledger.block.decode_block`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ledger.block import GENESIS_PREV, MAX_BLOCK_BYTES, Block
from ledger.errors import BlockError
from mesh.identity import verify as ed25519_verify

MAX_FUTURE_MS = 5 * 60 * 1000
"""How far a block's timestamp may be ahead of our clock (devices' clocks drift)."""

Verifier = Callable[[bytes, bytes, bytes], bool]
"""(public key, signature, message) -> bool; `mesh.identity.VerifyCache.verify` fits."""


@dataclass(frozen=True, slots=True)
class FeedHead:
    """The last block we hold of a feed (or the base a pruned feed resumes from)."""

    author: bytes
    height: int
    hash: bytes
    timestamp_ms: int


def check_block(block: Block, head: FeedHead | None, now_ms: int, *,
                max_future_ms: int = MAX_FUTURE_MS,
                verifier: Verifier = ed25519_verify) -> None:
    """Raise `BlockError` unless `block` validly extends `head` (None: the feed is new to us)."""
    check_link(block, head, now_ms, max_future_ms=max_future_ms)
    if not verifier(block.author, block.signature, block.signing_bytes()):
        raise BlockError("signature", f"bad signature at height {block.height}")


def check_link(block: Block, head: FeedHead | Block | None, now_ms: int, *,
               max_future_ms: int = MAX_FUTURE_MS) -> None:
    """Every check of `check_block` but the signature (for callers that verify in batches).
    `head` may be the previous block itself (it has a head's fields)."""
    if head is None:
        if block.height != 0:
            raise BlockError("gap", f"height {block.height} of an unknown feed (expected 0)")
        if block.prev != GENESIS_PREV:
            raise BlockError("link", "genesis block must have an all-zero prev")
    else:
        if head.author != block.author:
            raise BlockError("author", "block extends another author's feed")
        if block.height != head.height + 1:
            raise BlockError("gap", f"height {block.height} after head {head.height}")
        if block.prev != head.hash:
            raise BlockError("link", f"prev hash does not match the block at {head.height}")
        if block.timestamp_ms < head.timestamp_ms:
            raise BlockError("time", "timestamp before the previous block's")
    if block.timestamp_ms > now_ms + max_future_ms:
        raise BlockError("time", f"timestamp {block.timestamp_ms - now_ms} ms in the future")
    if block.size > MAX_BLOCK_BYTES:
        raise BlockError("size", f"{block.size} bytes")


def head_of(block: Block) -> FeedHead:
    return FeedHead(block.author, block.height, block.hash, block.timestamp_ms)
