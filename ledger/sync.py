"""The sync session: a sans-I/O core that two peers (or an agent and the backhaul) drive.

    session = SyncSession(store, registry, initiator=True, peer="...", now=now)
    out = session.start(now)                 # initiator only; bytes to send
    reply = session.receive(data, now)       # bytes to send back, or None (nothing to send)
    session.state                            # "running" | "complete" | "failed"

No sockets, no clock, no randomness: the caller moves bytes and passes `now` (wall seconds).
The session reads and writes the local store (synchronously), which is what makes an
interrupted sync resumable: every block is validated and stored as its message arrives, so a
new session after a cut reconciles from the new heads and asks only for what is still missing.

Message (deterministic CBOR map):
{0: version, 1: ranges, 2: wants, 3: blocks, 4: done, 5: error, 6: no_push, 7: proofs,
 8: estimator, 9: sketch}
- ranges: groups [lo, mode, payload]; mode 1 (fingerprints): payload [[hi, ...], fps],
  consecutive sub-ranges from lo, `fps` their 8-byte fingerprints end to end (an empty
  range has `EMPTY_FP`); mode 2 (item list): payload [hi, ids, [height, ...]], `ids` the
  items' author prefix (first 8 bytes of the key) + 8-byte head hash end to end
  (see `ledger.reconcile`); hi None = end. Packing them saves the per-value CBOR headers,
  which were a third of the reconciliation bytes;
- wants: [[author prefix, from_height], ...]: send me the feed(s) with that prefix (6 bytes
  or more) from there;
- blocks: encoded blocks, each feed in height order;
- done: the sender has nothing more to ask or send; the session ends when both said done;
- no_push: the sender only uploads; send it nothing it did not ask for;
- proofs: [[block, block], ...] equivocation proofs the sender holds (first message only): the
  receiver checks them, keeps them and stops extending the author's feed.
- estimator: [whole-set fingerprint, per-bucket fingerprints and counts] (`ledger.sketch`),
  the initiator's first message when it holds more than `IDLIST_MAX` feeds;
- sketch: the responder's invertible Bloom lookup table of its feed heads, sized from the
  difference the estimator shows (`ledger.sketch.Iblt`), the reply to an estimator.
A side that receives an item list knows both sides of that range: it asks for what it lacks
and pushes what the other lacks, without another round trip. So does an initiator that
decodes a sketch (its table subtracted from the peer's gives the heads that differ). When
the estimator shows too many differences, or the sketch does not decode, reconciliation
goes on by ranges from the whole key space (the responder, resp. the initiator, sends the
first fingerprints): finding a difference then costs one round trip more than ranges alone.

Bounds: a message is at most `max_message_bytes`; ranges, items and wants per message are
capped; a session stores at most `max_session_bytes` of blocks and `max_new_feeds` new feeds
(the rest waits for the next session). A peer that sends an invalid block or breaks the
protocol is cut: the session fails with `SyncError`, the reason goes to the store's peers table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ledger import codec, sketch
from ledger.block import MAX_BLOCK_BYTES
from ledger.errors import BlockError, CodecError, SyncError
from ledger.ingest import BlockStore, accept_proof, ingest
from ledger.reconcile import (
    BRANCHES,
    EMPTY_FP,
    FP_LEN,
    ID_LEN,
    IDLIST_MAX,
    PREFIX_LEN,
    Item,
    ReconIndex,
)
from ledger.sigpool import SignaturePool
from ledger.tx import TxRegistry
from ledger.validate import MAX_FUTURE_MS, FeedHead, Verifier
from mesh.identity import verify as ed25519_verify

VERSION = 3
"""2: no sketches; 3: estimator and sketch (a version-2 peer is cut as malformed)."""
M_FP = 1
M_IDS = 2
(K_VERSION, K_RANGES, K_WANTS, K_BLOCKS, K_DONE, K_ERROR, K_NO_PUSH, K_PROOFS, K_EST,
 K_SKETCH) = range(10)
_KEYS = frozenset(range(10))
MAX_PROOFS = 16
"""Equivocation proofs passed on per session (they are rare; each is two blocks)."""


class SyncStore(BlockStore, Protocol):
    """What a session needs from a store (SqliteStore and PostgresStore provide it)."""

    def heads(self) -> list[FeedHead]: ...

    def base_height(self, author: bytes) -> int: ...

    def blocks_from(self, author: bytes, from_height: int, limit: int,
                    max_bytes: int) -> list[bytes]: ...

    def mark_synced(self, peer: str, now_ms: int) -> None: ...

    def mark_cut(self, peer: str, reason: str, now_ms: int) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncConfig:
    """Limits of one session (both directions)."""

    max_message_bytes: int = 4 * 1024 * 1024
    """Largest message we send or accept."""
    max_ranges: int = 4096
    """Ranges per message accepted."""
    max_items: int = 65536
    """Items (in item lists) per message accepted."""
    max_wants: int = 65536
    """Wants per message accepted."""
    max_session_bytes: int = 256 * 1024 * 1024
    """Block bytes we store in one session; beyond that we stop asking (next session goes on)."""
    max_new_feeds: int = 100_000
    """Feeds new to us accepted in one session."""
    max_future_ms: int = MAX_FUTURE_MS
    max_messages: int = 100_000
    """Messages one session may exchange: a peer that never says done cannot keep us forever."""
    fetch: bool = True
    """Ask for the peer's feeds. False = upload only: we tell the peer not to push anything
    we did not ask for (a device syncing with a fleet's backhaul does not want every feed)."""
    sketch: bool = True
    """As initiator, open with a difference estimator and reconcile by sketch (False: by
    ranges from the first message). A responder always answers an estimator."""
    max_sketch_cells: int = 65536
    """Largest sketch we build or accept (15 bytes a cell; a sketch decodes ~0.7 keys a cell)."""


@dataclass(slots=True)
class SyncStats:
    messages_out: int = 0
    messages_in: int = 0
    bytes_out: int = 0
    bytes_in: int = 0
    blocks_out: int = 0
    blocks_in: int = 0
    block_bytes_in: int = 0
    block_bytes_out: int = 0
    recon_messages: int = 0
    """Messages exchanged until no range was left to reconcile."""
    duplicates: int = 0
    equivocations: int = 0
    sketch_cells: int = 0
    """Cells of the sketch this session used (0: none)."""
    sketch_failed: bool = False
    """The sketch did not decode and reconciliation went on by ranges."""


@dataclass(slots=True)
class _Plan:
    """What we still owe the peer: feed -> next height to send."""

    pushes: dict[bytes, int] = field(default_factory=dict)


class SyncSession:
    """One sync with one peer; see the module docstring for the protocol."""

    def __init__(self, store: SyncStore, registry: TxRegistry, *, initiator: bool, peer: str,
                 now: float, config: SyncConfig | None = None,
                 verifier: Verifier = ed25519_verify,
                 on_blocks: Callable[[int], None] | None = None,
                 pool: SignaturePool | None = None) -> None:
        """`pool`: where to verify received blocks' signatures (`ledger.ingest.ingest`)."""
        self.store = store
        self.registry = registry
        self.initiator = initiator
        self.peer = peer
        self.config = config or SyncConfig()
        self.verifier = verifier
        self.on_blocks = on_blocks
        self.pool = pool
        self.index = ReconIndex(store.heads())
        self.state = "running"
        self.error: SyncError | None = None
        self.stats = SyncStats()
        self._plan = _Plan()
        self._out_ranges: list[list[Any]] = []
        self._out_est: list[bytes] | None = None
        self._out_sketch: bytes | None = None
        self._sent_est = False
        self._wants_new: list[list[Any]] = []
        self._peer_fetches = True
        self._sent_done = False
        self._got_done = False
        self._recon_open = True
        self._stored_bytes = 0
        self._new_feeds = 0
        self._started = now

    # ---------------------------------------------------------------- driving

    def start(self, now: float) -> bytes:
        """The initiator's first message: fingerprints (or the item list) of all its feeds."""
        if not self.initiator or self.stats.messages_out:
            raise SyncError("local", "start() is for the initiator, once")
        n = len(self.index)
        if self.config.sketch and n > IDLIST_MAX and sketch.usable(self.index.items):
            est = sketch.Estimator.of(self.index, sketch.bucket_count(n))
            self._out_est = [est.total, est.buckets]
            self._sent_est = True
        else:
            self._out_ranges = self._describe(b"", None, 0, n)
        return self._build(now)

    def receive(self, data: bytes, now: float) -> bytes | None:
        """Handle a peer message; return our reply, or None when we have nothing to send.

        Raises `SyncError` when the peer is at fault (the session is then "failed" and the
        peer is recorded as cut); the caller should send `error_message()` and hang up.
        """
        if self.state != "running":
            raise SyncError("local", f"session is {self.state}")
        self.stats.messages_in += 1
        self.stats.bytes_in += len(data)
        try:
            if self.stats.messages_in + self.stats.messages_out > self.config.max_messages:
                raise SyncError("bounds", f"more than {self.config.max_messages} messages")
            msg = self._parse(data)
            if K_ERROR in msg:
                raise SyncError("peer_error", str(msg[K_ERROR])[:200])
            self._got_done = bool(msg.get(K_DONE, False))
            self._peer_fetches = not msg.get(K_NO_PUSH, False)
            self._take_proofs(msg.get(K_PROOFS, []), now)
            self._take_blocks(msg.get(K_BLOCKS, []), now)
            self._take_wants(msg.get(K_WANTS, []))
            self._take_estimator(msg.get(K_EST))
            self._take_sketch(msg.get(K_SKETCH))
            self._take_ranges(msg.get(K_RANGES, []))
        except SyncError as exc:
            self._fail(exc, now)
            raise
        if (self._recon_open and not (self._out_ranges or self._out_est or self._out_sketch)
                and not (msg.get(K_RANGES) or K_EST in msg or K_SKETCH in msg)):
            self._recon_open = False
            self.stats.recon_messages = self.stats.messages_in + self.stats.messages_out
        if self._got_done and self._sent_done and self._idle():
            self._complete(now)
            return None
        reply = self._build(now)
        if self._got_done and self._sent_done:
            self._complete(now)
        return reply

    def error_message(self) -> bytes:
        """What to send the peer when we cut it (names the reason)."""
        reason = self.error.reason if self.error is not None else "error"
        return codec.encode({K_VERSION: VERSION, K_ERROR: reason})

    def fail_local(self, reason: str, now: float) -> None:
        """The transport broke (timeout, disconnect): end the session; what was stored stays."""
        if self.state == "running":
            self.state = "failed"
            self.error = SyncError("transport", reason)

    # ---------------------------------------------------------------- internals

    def _idle(self) -> bool:
        return not (self._out_ranges or self._plan.pushes or self._wants_new or self._out_est
                    or self._out_sketch)

    def _complete(self, now: float) -> None:
        self.state = "complete"
        if self._recon_open:
            self._recon_open = False
            self.stats.recon_messages = self.stats.messages_in + self.stats.messages_out
        self.store.mark_synced(self.peer, int(now * 1000))

    def _fail(self, exc: SyncError, now: float) -> None:
        self.state = "failed"
        self.error = exc
        if exc.reason != "peer_error":
            self.store.mark_cut(self.peer, str(exc), int(now * 1000))

    def _parse(self, data: bytes) -> dict[int, Any]:
        try:
            msg = codec.decode(data, self.config.max_message_bytes, canonical=False)
        except CodecError as exc:
            raise SyncError("malformed", str(exc)) from exc
        if type(msg) is not dict or msg.get(K_VERSION) != VERSION:
            raise SyncError("malformed", f"not a sync message of version {VERSION}")
        for key in msg:
            if key not in _KEYS:
                raise SyncError("malformed", f"unknown key {key!r}")
        for key, limit in ((K_RANGES, self.config.max_ranges), (K_WANTS, self.config.max_wants),
                           (K_BLOCKS, None)):
            value = msg.get(key, [])
            if type(value) is not list or (limit is not None and len(value) > limit):
                raise SyncError("bounds", f"field {key} is not a list within limits")
        return msg

    def _take_blocks(self, raws: list[Any], now: float) -> None:
        if not raws:
            return
        for raw in raws:
            if type(raw) is not bytes or len(raw) > MAX_BLOCK_BYTES:
                raise SyncError("malformed", "blocks must be byte strings")
        if self._stored_bytes >= self.config.max_session_bytes:
            # We stopped asking at the limit; a peer that keeps pushing is cut (what we stored
            # stays, and the next session goes on from there).
            raise SyncError("bounds", f"over {self.config.max_session_bytes} bytes this session")
        try:
            result = ingest(self.store, raws, self.registry, int(now * 1000),
                            verifier=self.verifier, max_future_ms=self.config.max_future_ms,
                            pool=self.pool)
        except BlockError as exc:
            raise SyncError("invalid_block", str(exc)) from exc
        sizes = [len(r) for r in raws]
        self.stats.blocks_in += len(raws)
        self.stats.block_bytes_in += sum(sizes)
        self.stats.duplicates += result.duplicates
        self.stats.equivocations += result.equivocations
        self._stored_bytes += sum([len(b.raw) for b in result.stored])
        self._new_feeds += [b.height for b in result.stored].count(0)
        if self.on_blocks is not None and result.stored:
            self.on_blocks(len(result.stored))
        if self._new_feeds > self.config.max_new_feeds:
            raise SyncError("bounds", f"more than {self.config.max_new_feeds} new feeds")

    def _take_proofs(self, proofs: Any, now: float) -> None:
        """Equivocation proofs first, so that a flagged feed's blocks are refused at once."""
        if type(proofs) is not list or len(proofs) > MAX_PROOFS:
            raise SyncError("bounds", f"at most {MAX_PROOFS} proofs per message")
        for proof in proofs:
            if (type(proof) is not list or len(proof) != 2 or type(proof[0]) is not bytes
                    or type(proof[1]) is not bytes):
                raise SyncError("malformed", "a proof is [block, block]")
            try:
                if accept_proof(self.store, proof[0], proof[1], self.registry, int(now * 1000),
                                verifier=self.verifier):
                    self.stats.equivocations += 1
            except BlockError as exc:
                raise SyncError("invalid_proof", str(exc)) from exc

    def _take_wants(self, wants: list[Any]) -> None:
        for want in wants:
            if (type(want) is not list or len(want) != 2 or type(want[0]) is not bytes
                    or not sketch.KEY_PREFIX <= len(want[0]) <= 32
                    or type(want[1]) is not int or want[1] < 0):
                raise SyncError("malformed", "a want is [author prefix, from_height]")
            for author in self.index.authors_with_prefix(want[0]):
                self._push(author, want[1])

    def _offer(self, author: bytes, from_height: int) -> None:
        """Push what the peer lacks without having asked, unless it said it only uploads."""
        if self._peer_fetches:
            self._push(author, from_height)

    def _push(self, author: bytes, from_height: int) -> None:
        if from_height < self.store.base_height(author):
            return  # pruned here: the peer gets those blocks from the backhaul
        known = self._plan.pushes.get(author)
        self._plan.pushes[author] = from_height if known is None else min(known, from_height)

    def _want(self, prefix: bytes, from_height: int) -> None:
        if self.config.fetch:
            self._wants_new.append([prefix, from_height])

    def _take_estimator(self, value: Any) -> None:
        """The initiator's estimator: answer with a sketch sized from the difference, or with
        ranges when the difference is too large (or we hold so few feeds that a list is
        cheaper, or heights too high for sketch keys)."""
        if value is None:
            return
        if (self.initiator or self.stats.messages_in != 1 or type(value) is not list
                or len(value) != 2 or type(value[0]) is not bytes or len(value[0]) != FP_LEN
                or type(value[1]) is not bytes):
            raise SyncError("malformed", "an estimator is [fingerprint, buckets], first only")
        buckets = len(value[1]) // sketch.BUCKET_LEN
        if (len(value[1]) % sketch.BUCKET_LEN or not 1 <= buckets <= sketch.MAX_BUCKETS
                or buckets & (buckets - 1)):
            raise SyncError("malformed", "estimator buckets must be a power of two")
        n = len(self.index)
        if n <= IDLIST_MAX or not sketch.usable(self.index.items):
            self._out_ranges = self._describe(b"", None, 0, n)
            return
        mine = sketch.Estimator.of(self.index, buckets)
        differing, lacking = mine.compare(sketch.Estimator(value[0], value[1]))
        keys = sketch.estimate_items(differing, lacking, buckets)
        if keys == 0:
            return  # the same feed heads on both sides
        cells = 0 if keys is None else sketch.cells_for(keys)
        if keys is None or cells > self.config.max_sketch_cells or cells > 2 * n + 16:
            self._out_ranges = self._describe(b"", None, 0, n)
            return
        table = sketch.Iblt.of((sketch.sketch_key(it) for it in self.index.items), cells)
        self._out_sketch = table.to_bytes()
        self.stats.sketch_cells = cells

    def _take_sketch(self, value: Any) -> None:
        """The responder's sketch: decode the difference and act on it as on an item list;
        if it does not decode, reconcile by ranges instead."""
        if value is None:
            return
        if not self._sent_est or self.stats.messages_in != 1 or type(value) is not bytes:
            raise SyncError("malformed", "a sketch answers our estimator, once")
        if len(value) > self.config.max_sketch_cells * sketch.CELL_LEN:
            raise SyncError("bounds", "sketch too large")
        try:
            theirs = sketch.Iblt.from_bytes(value)
        except ValueError as exc:
            raise SyncError("malformed", str(exc)) from exc
        self.stats.sketch_cells = theirs.cells
        mine = {sketch.sketch_key(it): it for it in self.index.items}
        decoded = theirs.subtract(sketch.Iblt.of(mine, theirs.cells)).decode()
        if decoded is None:
            self.stats.sketch_failed = True
            self._out_ranges = self._describe(b"", None, 0, len(self.index))
            return
        ours, peers = sketch.split_difference(decoded, set(mine))
        seen: set[bytes] = set()
        for key in peers:
            prefix, height, head = sketch.key_parts(key)
            seen.add(prefix)
            owns = self.index.authors_with_prefix(prefix)
            if not owns:
                self._want(prefix, 0)
            for author in owns:
                own = self.index.item_of(author)
                assert own is not None
                if own.height < height:
                    self._want(author[:PREFIX_LEN], own.height + 1)
                elif own.height > height:
                    self._offer(author, height + 1)
                elif own.hash[:len(head)] != head:
                    self._want(author[:PREFIX_LEN], height)  # an equivocation
                    self._push(author, height)
        for key in ours:
            if key[:sketch.KEY_PREFIX] not in seen:
                self._offer(mine[key].author, 0)  # a feed the peer does not hold

    def _take_ranges(self, groups: list[Any]) -> None:
        ranges_seen = 0
        items_seen = 0
        floor: bytes | None = b""
        for group in groups:
            if type(group) is not list or len(group) != 3 or type(group[0]) is not bytes:
                raise SyncError("malformed", "a range group is [lo, mode, payload]")
            lo, mode, payload = group
            if floor is None or lo < floor:
                raise SyncError("malformed", "range groups must be ordered and disjoint")
            if mode == M_FP:
                if (type(payload) is not list or len(payload) != 2 or type(payload[0]) is not list
                        or not payload[0] or type(payload[1]) is not bytes
                        or len(payload[1]) != FP_LEN * len(payload[0])):
                    raise SyncError("malformed", "fingerprint payload is [[hi, ...], fps]")
                ranges_seen += len(payload[0])
                if ranges_seen > self.config.max_ranges:
                    raise SyncError("bounds", "too many ranges in one message")
                fps = payload[1]
                for k, hi in enumerate(payload[0]):
                    if hi is not None and type(hi) is not bytes:
                        raise SyncError("malformed", "a range bound is bytes or None")
                    if floor is None or (hi is not None and hi <= lo):
                        raise SyncError("malformed", "ranges must be ordered and disjoint")
                    fp = fps[k * FP_LEN:(k + 1) * FP_LEN]
                    i, j = self.index.span(lo, hi)
                    if self.index.fingerprint(i, j) != fp:
                        if fp == EMPTY_FP:  # the peer has nothing here
                            for it in self.index.items[i:j]:
                                self._offer(it.author, 0)
                        else:
                            self._out_ranges += self._describe(lo, hi, i, j)
                    lo = hi if hi is not None else lo
                    floor = hi
            elif mode == M_IDS:
                if (type(payload) is not list or len(payload) != 3
                        or (payload[0] is not None and type(payload[0]) is not bytes)
                        or type(payload[1]) is not bytes or type(payload[2]) is not list
                        or len(payload[1]) != ID_LEN * len(payload[2])):
                    raise SyncError("malformed", "item list payload is [hi, ids, heights]")
                hi = payload[0]
                if hi is not None and hi <= lo:
                    raise SyncError("malformed", "ranges must be ordered and disjoint")
                ranges_seen += 1
                items_seen += len(payload[2])
                if items_seen > self.config.max_items or ranges_seen > self.config.max_ranges:
                    raise SyncError("bounds", "too many items in one message")
                i, j = self.index.span(lo, hi)
                self._compare(payload[1], payload[2], i, j)
                floor = hi
            else:
                raise SyncError("malformed", f"unknown range mode {mode!r}")

    def _compare(self, ids: bytes, heights: list[Any], i: int, j: int) -> None:
        theirs: dict[bytes, tuple[int, bytes]] = {}
        for k, height in enumerate(heights):
            if type(height) is not int or height < 0:
                raise SyncError("malformed", "an item's height is an int >= 0")
            item = ids[k * ID_LEN:(k + 1) * ID_LEN]
            theirs[item[:PREFIX_LEN]] = (height, item[PREFIX_LEN:])
        mine = {it.author[:PREFIX_LEN]: it for it in self.index.items[i:j]}
        for prefix, (height, hash8) in theirs.items():
            own: Item | None = mine.get(prefix)
            if own is None:
                self._want(prefix, 0)
            elif own.height < height:
                self._want(prefix, own.height + 1)
            elif own.height > height:
                self._offer(own.author, height + 1)
            elif own.hash != hash8:
                self._want(prefix, height)  # same height, other block: an equivocation
                self._push(own.author, height)
        for prefix, own in mine.items():
            if prefix not in theirs:
                self._offer(own.author, 0)

    def _describe(self, lo: bytes, hi: bytes | None, i: int, j: int) -> list[list[Any]]:
        """Our view of [lo, hi): the item list when small, else fingerprints of sub-ranges."""
        if j - i <= IDLIST_MAX:
            items = self.index.items[i:j]
            return [[lo, M_IDS, [hi, b"".join(it.author[:PREFIX_LEN] + it.hash for it in items),
                                 [it.height for it in items]]]]
        subs = self.index.split(lo, hi, i, j, BRANCHES)
        return [[lo, M_FP, [[b for _a, b, _x, _y in subs],
                            b"".join(self.index.fingerprint(x, y) for _a, _b, x, y in subs)]]]

    def _build(self, now: float) -> bytes:
        msg: dict[int, Any] = {K_VERSION: VERSION}
        if not self.config.fetch:
            msg[K_NO_PUSH] = True
        if self._out_est is not None:
            msg[K_EST] = self._out_est
            self._out_est = None
        if self._out_sketch is not None:
            msg[K_SKETCH] = self._out_sketch
            self._out_sketch = None
        if self.stats.messages_out == 0:
            proofs: list[list[bytes]] = []
            room = self.config.max_message_bytes // 4
            for a, b in self.store.equivocation_raws(MAX_PROOFS):
                room -= len(a) + len(b)
                if room < 0:
                    break
                proofs.append([a, b])
            if proofs:
                msg[K_PROOFS] = proofs
        if self._out_ranges:
            msg[K_RANGES] = self._out_ranges
            self._out_ranges = []
        wants = self._wants_new
        if wants and self._stored_bytes < self.config.max_session_bytes:
            msg[K_WANTS] = wants
        self._wants_new = []
        budget = self.config.max_message_bytes - 64 * 1024
        blocks: list[bytes] = []
        used = 0
        for author in list(self._plan.pushes):
            if used >= budget:
                break
            start = self._plan.pushes[author]
            head = self.store.head(author)
            chunk = [] if head is None else self.store.blocks_from(author, start, 1024,
                                                                   budget - used)
            if chunk and blocks and used + len(chunk[0]) > budget:
                break
            blocks += chunk
            used += sum(len(r) for r in chunk)
            if head is None or not chunk or start + len(chunk) > head.height:
                del self._plan.pushes[author]
            else:
                self._plan.pushes[author] = start + len(chunk)
        if blocks:
            msg[K_BLOCKS] = blocks
            self.stats.blocks_out += len(blocks)
            self.stats.block_bytes_out += used
        # We are done when we owe nothing and expect nothing; the wants we just sent or still
        # hold are answered by the peer's next message.
        done = not (msg.get(K_RANGES) or msg.get(K_WANTS) or self._plan.pushes or K_EST in msg
                    or K_SKETCH in msg)
        if done:
            msg[K_DONE] = True
            self._sent_done = True
        else:
            self._sent_done = False
        data = codec.encode(msg)
        self.stats.messages_out += 1
        self.stats.bytes_out += len(data)
        return data
