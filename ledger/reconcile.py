"""Range-based set reconciliation over feed heads (the idea of Negentropy), pure and in memory.

Each side's items are its feed heads `(author, height, hash)`, ordered by author key. A range
`[lo, hi)` of author keys is summarised by a fingerprint: the sum (mod 2^128) of its items'
hashes, hashed with the count. Prefix sums make any range's fingerprint O(log n). Ranges that
match are dropped; ranges that differ are split into `BRANCHES` parts until they hold at most
`IDLIST_MAX` items, which are then sent as a list. Finding d differences among n feeds costs
about log_B(n / IDLIST_MAX) round trips and O(d log n) bytes, independent of the blocks held.

Range bounds are the shortest prefixes of author keys that separate two neighbours, so a
bound usually takes 1-3 bytes on the wire.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass

from ledger.validate import FeedHead

BRANCHES = 8
IDLIST_MAX = 16
ITEM_HASH_LEN = 8
PREFIX_LEN = 8
"""Item lists and wants name a feed by this many leading bytes of its author key."""
FP_LEN = 8
ID_LEN = PREFIX_LEN + ITEM_HASH_LEN
"""An item on the wire: author prefix and head hash (its height travels beside it)."""
_MOD = 1 << 128


@dataclass(frozen=True, slots=True)
class Item:
    """A feed head as reconciliation sees it (`hash` cut to ITEM_HASH_LEN bytes)."""

    author: bytes
    height: int
    hash: bytes


def item_value(author: bytes, height: int, hash8: bytes) -> int:
    digest = hashlib.sha256(author + height.to_bytes(8, "big") + hash8).digest()
    return int.from_bytes(digest[:16], "big")


def fingerprint(total: int, count: int) -> bytes:
    return hashlib.sha256(total.to_bytes(16, "big") + count.to_bytes(8, "big")).digest()[:FP_LEN]


EMPTY_FP = fingerprint(0, 0)
"""The fingerprint of a range without items (stands in for a count of zero)."""


def separator(before: bytes, key: bytes) -> bytes:
    """The shortest prefix p of `key` with before < p <= key."""
    for n in range(1, len(key) + 1):
        if key[:n] > before:
            return key[:n]
    return key


class ReconIndex:
    """A sorted snapshot of one side's feed heads, with prefix sums of their item values."""

    def __init__(self, heads: Sequence[FeedHead]) -> None:
        ordered = sorted(heads, key=lambda h: h.author)
        self.items = [Item(h.author, h.height, h.hash[:ITEM_HASH_LEN]) for h in ordered]
        self.keys = [it.author for it in self.items]
        sums = [0]
        for it in self.items:
            sums.append((sums[-1] + item_value(it.author, it.height, it.hash)) % _MOD)
        self._sums = sums

    def __len__(self) -> int:
        return len(self.items)

    def span(self, lo: bytes, hi: bytes | None) -> tuple[int, int]:
        """Indices [i, j) of the items with lo <= author < hi (hi None: no upper bound)."""
        i = bisect_left(self.keys, lo)
        j = len(self.keys) if hi is None else bisect_left(self.keys, hi)
        return i, max(i, j)

    def authors_with_prefix(self, prefix: bytes) -> list[bytes]:
        """Our authors whose key starts with `prefix` (one, unless someone ground a collision)."""
        out: list[bytes] = []
        k = bisect_left(self.keys, prefix)
        while k < len(self.keys) and self.keys[k].startswith(prefix) and len(out) < 16:
            out.append(self.keys[k])
            k += 1
        return out

    def item_of(self, author: bytes) -> Item | None:
        k = bisect_left(self.keys, author)
        return self.items[k] if k < len(self.keys) and self.keys[k] == author else None

    def fingerprint(self, i: int, j: int) -> bytes:
        return fingerprint((self._sums[j] - self._sums[i]) % _MOD, j - i)

    def split(self, lo: bytes, hi: bytes | None, i: int, j: int,
              parts: int = BRANCHES) -> list[tuple[bytes, bytes | None, int, int]]:
        """Cut [lo, hi) into up to `parts` sub-ranges of about equal item counts."""
        count = j - i
        parts = max(1, min(parts, count))
        out: list[tuple[bytes, bytes | None, int, int]] = []
        start_key, start = lo, i
        for p in range(1, parts):
            cut = i + count * p // parts
            if cut <= start:
                continue
            bound = separator(self.keys[cut - 1], self.keys[cut])
            out.append((start_key, bound, start, cut))
            start_key, start = bound, cut
        out.append((start_key, hi, start, j))
        return out
