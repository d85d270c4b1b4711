"""Receiving blocks: decode, validate against the feed head, detect equivocation, store.

Shared by peers and the backhaul, over any store with the `BlockStore` methods (SQLite or
PostgreSQL). A block that fails validation raises `BlockError`: the caller cuts the peer that
sent it. Blocks validated before the bad one in the same batch are stored first, so nothing
good is lost.

Signatures are the costly part. With a `SignaturePool`, they are checked in chunks in child
processes while this thread decodes and validates the next blocks (`ledger.sigpool` says why
not threads). Nothing is stored before its signature held.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ledger.block import Block, decode_block, signing_bytes
from ledger.errors import BlockError
from ledger.sigpool import SignaturePool, Signed, Ticket
from ledger.tx import TxRegistry
from ledger.validate import MAX_FUTURE_MS, FeedHead, Verifier, check_link
from mesh.identity import verify as ed25519_verify

VERIFY_CHUNK = 32
"""Blocks per chunk of signatures handed to a pool (a backhaul message holds ~100)."""


class BlockStore(Protocol):
    """The part of a store that ingestion needs."""

    def head(self, author: bytes) -> FeedHead | None: ...

    def flag_of(self, author: bytes) -> str | None: ...

    def block_raw(self, author: bytes, height: int) -> bytes | None: ...

    def put_blocks(self, blocks: Sequence[Block]) -> None: ...

    def record_equivocation(self, author: bytes, height: int, raw_a: bytes, raw_b: bytes,
                            now_ms: int) -> None: ...

    def equivocation_raws(self, limit: int) -> list[tuple[bytes, bytes]]: ...


@dataclass(slots=True)
class IngestResult:
    """What happened to a batch of received blocks."""

    stored: list[Block] = field(default_factory=list)
    duplicates: int = 0
    equivocations: int = 0
    refused_flagged: int = 0
    stale: int = 0
    """Blocks below a pruned feed's base: already final, dropped."""


def ingest(store: BlockStore, raws: Iterable[bytes], registry: TxRegistry, now_ms: int, *,
           verifier: Verifier = ed25519_verify,
           max_future_ms: int = MAX_FUTURE_MS,
           pool: SignaturePool | None = None) -> IngestResult:
    """Validate and durably store `raws` (each feed's blocks in height order).

    With `pool`, most signatures are checked in its child processes (with libsodium; the
    rest here with `verifier`)."""
    result = IngestResult()
    # A feed's head: from the store, then the last block taken (it has a head's fields).
    heads: dict[bytes, FeedHead | Block | None] = {}
    flags: dict[bytes, str | None] = {}
    pending = _Pending(store, result, verifier, pool)
    pending_raw: dict[tuple[bytes, int], bytes] = {}
    try:
        for raw in raws:
            block = decode_block(raw, registry)
            author = block.author
            if author in heads:
                head = heads[author]
            else:
                head = heads[author] = store.head(author)
                flags[author] = store.flag_of(author)
            if flags[author] is not None:
                result.refused_flagged += 1
                continue
            if head is not None and block.height <= head.height:
                known = pending_raw.get((author, block.height))
                if known is None:
                    known = store.block_raw(author, block.height)
                if known == raw:
                    result.duplicates += 1
                    continue
                if known is None:
                    result.stale += 1
                    continue
                if not verifier(author, block.signature, block.signing_bytes()):
                    raise BlockError("signature", f"bad signature at height {block.height}")
                pending.flush()
                store.record_equivocation(author, block.height, known, raw, now_ms)
                flags[author] = "equivocation"
                result.equivocations += 1
                continue
            check_link(block, head, now_ms, max_future_ms=max_future_ms)
            pending.add(block)
            pending_raw[(author, block.height)] = raw
            heads[author] = block
    except BaseException:
        pending.flush()  # what held before the fault (raises instead at an earlier bad signature)
        raise
    pending.flush()
    return result


def _first_bad(verifier: Verifier, signed: Sequence[Signed]) -> int:
    """Index of the first (key, signature, message) that fails, or -1."""
    for i, (key, signature, message) in enumerate(signed):
        if not verifier(key, signature, message):
            return i
    return -1


class _Pending:
    """Blocks that passed every check but (with a pool) their signature, in order.

    With a pool, every `VERIFY_CHUNK` blocks go to a child process as one chunk while this
    thread decodes the next ones; when every child is busy, this thread checks the chunk
    itself. At the end of the batch it checks the last, partial chunk, then, newest first,
    every chunk not answered yet (the children work oldest first): it never waits for a
    child, which a busy machine may starve (children run at idle priority)."""

    def __init__(self, store: BlockStore, result: IngestResult, verifier: Verifier,
                 pool: SignaturePool | None) -> None:
        self.store = store
        self.result = result
        self.verifier = verifier
        self.pool = pool
        self.blocks: list[Block] = []
        self.chunks: list[tuple[int, list[Signed], Ticket | None, int]] = []
        """(first block, signatures, the pool's ticket or None, first bad index if known)"""
        self.chunked = 0

    def add(self, block: Block) -> None:
        if self.pool is None:
            if not self.verifier(block.author, block.signature, signing_bytes(block.raw)):
                raise BlockError("signature", f"bad signature at height {block.height}")
            self.blocks.append(block)
            return
        self.blocks.append(block)
        if len(self.blocks) - self.chunked >= VERIFY_CHUNK:
            self._chunk(send=True)

    def _chunk(self, *, send: bool) -> None:
        assert self.pool is not None
        start = self.chunked
        chunk = [(b.author, b.signature, b.signing_bytes()) for b in self.blocks[start:]]
        self.chunked = len(self.blocks)
        ticket = self.pool.send(chunk) if send else None
        bad = _first_bad(self.verifier, chunk) if ticket is None else -1
        self.chunks.append((start, chunk, ticket, bad))
        if bad >= 0:
            self.flush()  # stores what held before it, then raises

    def _first_bad_block(self) -> int:
        """Index of the first block whose signature failed, or -1, once every chunk is
        answered, by a child or here: this thread never waits for a child, it checks the
        newest chunk not answered yet (a child works oldest first), then looks again."""
        pool = self.pool
        assert pool is not None
        chunks, self.chunks = self.chunks, []
        found = {k: known for k, (_s, _c, ticket, known) in enumerate(chunks) if ticket is None}
        tickets = {k: ticket for k, (_s, _c, ticket, _b) in enumerate(chunks)
                   if ticket is not None}
        waiting = sorted(tickets)
        try:
            while waiting:
                waiting = [k for k in waiting if not pool.ready(tickets[k])]
                if not waiting:
                    break
                k = waiting.pop()
                pool.abandon(tickets[k])
                found[k] = _first_bad(self.verifier, chunks[k][1])
            bad = -1
            for k, (start, chunk, ticket, _known) in enumerate(chunks):
                if bad >= 0:
                    if ticket is not None and k not in found:
                        pool.abandon(ticket)
                    continue
                first = found[k] if ticket is None or k in found else pool.receive(ticket)
                if first is None:  # the child is gone: check its chunk here
                    first = _first_bad(self.verifier, chunk)
                if first >= 0:
                    bad = start + first
        except BaseException:
            pool.close()  # answers left unread: check everything here from now on
            raise
        return bad

    def flush(self) -> None:
        """Store the blocks up to the first bad signature in one durable commit; raise there."""
        bad = -1
        if self.pool is not None:
            if self.chunked < len(self.blocks):
                self._chunk(send=False)  # here, while the children finish theirs
            bad = self._first_bad_block()
        blocks = self.blocks if bad < 0 else self.blocks[:bad]
        self.store.put_blocks(blocks)
        self.result.stored += blocks
        failed = None if bad < 0 else self.blocks[bad]
        self.blocks = []
        self.chunked = 0
        if failed is not None:
            raise BlockError("signature", f"bad signature at height {failed.height}")


def accept_proof(store: BlockStore, raw_a: bytes, raw_b: bytes, registry: TxRegistry,
                 now_ms: int, *, verifier: Verifier = ed25519_verify) -> bool:
    """Check an equivocation proof from a peer (two different blocks, one author, one height,
    both validly signed) and keep it; True when it was new. Raises `BlockError` if it is not a
    proof (the peer sent junk: cut it)."""
    a = decode_block(raw_a, registry)
    b = decode_block(raw_b, registry)
    if a.author != b.author or a.height != b.height or raw_a == raw_b:
        raise BlockError("proof", "not two different blocks of one author at one height")
    for block in (a, b):
        if not verifier(block.author, block.signature, block.signing_bytes()):
            raise BlockError("proof", "a block of the proof is not signed by its author")
    if store.flag_of(a.author) is not None:
        return False
    store.record_equivocation(a.author, a.height, raw_a, raw_b, now_ms)
    return True
