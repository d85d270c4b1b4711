"""Difference sketches over feed heads: an estimator and an invertible Bloom lookup table.

Range reconciliation (`ledger.reconcile`) spends ~12 bytes per range and needs about ten
ranges per difference when many feeds each differ a little. A sketch costs a size set by the
difference alone:

- `Estimator`: the items split into `buckets` by the first two bytes of the author key; per
  bucket a 1-byte fingerprint and the item count mod 256, plus an 8-byte fingerprint of the
  whole set. Comparing two estimators gives the number of differing buckets, hence (by the
  occupancy formula) about how many feeds differ, and from the counts about how many of
  those the other side lacks entirely (one sketch item) rather than holds at another head
  (two items).
- `Iblt`: an XOR invertible Bloom lookup table (Goodrich and Mitzenmacher 2011; Eppstein et
  al., "What's the difference?", SIGCOMM 2011) of keys `author[:6] + height (4 bytes) +
  head hash[:2]`. Each key goes to one cell in each of `HASHES` equal parts; a cell holds the
  XOR of its keys and of their 3-byte checks. Subtracting the peer's table from ours leaves
  the symmetric difference, which `decode` peels cell by cell; a key we hold is ours alone,
  any other is the peer's alone. No counts are needed for that, which keeps a cell at 15 bytes.

Pure and bounded: decoding a table from the wire does at most one pass per cell and returns at
most as many keys as cells; a table that does not peel clean returns None (the caller falls
back to range reconciliation). Keys of heights >= 2^32 do not fit: such a side does not use
sketches.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ledger.reconcile import Item, ReconIndex

KEY_PREFIX = 6
"""Bytes of the author key in a sketch key (wants name a feed by this prefix at least)."""
KEY_LEN = KEY_PREFIX + 4 + 2
CHECK_LEN = 3
CELL_LEN = KEY_LEN + CHECK_LEN
HASHES = 4
MAX_HEIGHT = 2**32 - 1
MAX_BUCKETS = 4096
BUCKET_LEN = 2
"""Per estimator bucket: 1-byte fingerprint, 1-byte count (mod 256)."""
_SALT = b"manet-ledger-sketch/1"


def sketch_key(item: Item) -> bytes:
    """The sketch key of a feed head (`item.hash` is the head hash, at least 2 bytes)."""
    return item.author[:KEY_PREFIX] + item.height.to_bytes(4, "big") + item.hash[:2]


def key_parts(key: bytes) -> tuple[bytes, int, bytes]:
    """(author prefix, height, head hash prefix) of a sketch key."""
    return key[:KEY_PREFIX], int.from_bytes(key[KEY_PREFIX:KEY_PREFIX + 4], "big"), key[-2:]


def usable(items: Iterable[Item]) -> bool:
    """True when every item fits a sketch key (heights below 2^32)."""
    return all(it.height <= MAX_HEIGHT for it in items)


def _digest(key: bytes) -> bytes:
    return hashlib.blake2b(key, digest_size=16, key=_SALT).digest()


# ------------------------------------------------------------------------------- estimator

def bucket_count(items: int) -> int:
    """Buckets an initiator with `items` feeds uses: a power of two, 16..128."""
    target = max(16, min(128, items // 8))
    return 1 << (target - 1).bit_length()


@dataclass(frozen=True, slots=True)
class Estimator:
    """Per-bucket fingerprints and counts of one side's items (see the module docstring)."""

    total: bytes
    buckets: bytes

    @classmethod
    def of(cls, index: ReconIndex, buckets: int) -> Estimator:
        if buckets < 1 or buckets > MAX_BUCKETS or buckets & (buckets - 1):
            raise ValueError("buckets must be a power of two up to 4096")
        shift = 16 - (buckets.bit_length() - 1)
        out = bytearray()
        i = 0
        for b in range(buckets):
            hi = None if b == buckets - 1 else ((b + 1) << shift).to_bytes(2, "big")
            _i, j = index.span(b"", hi)
            out += index.fingerprint(i, j)[:1] + bytes([(j - i) & 0xFF])
            i = j
        return cls(index.fingerprint(0, len(index)), bytes(out))

    def compare(self, other: Estimator) -> tuple[int, int]:
        """(differing buckets, sum over buckets of |count difference|), from the counts mod 256."""
        if len(other.buckets) != len(self.buckets):
            raise ValueError("estimators of different sizes")
        differing = lacking = 0
        a, b = self.buckets, other.buckets
        for k in range(0, len(a), BUCKET_LEN):
            if a[k:k + BUCKET_LEN] != b[k:k + BUCKET_LEN]:
                differing += 1
                delta = (a[k + 1] - b[k + 1]) & 0xFF
                lacking += min(delta, 256 - delta)
        if not differing and self.total != other.total:
            differing = 1  # every bucket matched by chance: still at least one
        return differing, lacking


def estimate_items(differing: int, lacking: int, buckets: int) -> int | None:
    """How many sketch keys the symmetric difference probably holds (a generous guess), or
    None when the buckets are saturated and no useful estimate exists.

    `differing` of `buckets` buckets differ: with d feeds differing, the expected number is
    buckets * (1 - (1 - 1/buckets)^d), inverted here. A feed one side lacks is one key, a
    feed held at two heads is two; `lacking` (count differences) tells them apart."""
    if differing == 0:
        return 0
    if differing >= buckets or buckets < 2:
        return None
    feeds = math.log(1 - differing / buckets) / math.log(1 - 1 / buckets)
    if feeds > 4 * buckets:
        return None
    high = feeds + math.sqrt(feeds) + 1
    return math.ceil(high + max(0.0, feeds - lacking))


def cells_for(keys: int) -> int:
    """Table size (a multiple of `HASHES`) that peels `keys` keys with high probability."""
    return HASHES * math.ceil((1.4 * keys + 12) / HASHES)


# ------------------------------------------------------------------------------- table

class Iblt:
    """An XOR invertible Bloom lookup table of sketch keys (no counts; see the module doc)."""

    def __init__(self, cells: int) -> None:
        if cells < HASHES or cells % HASHES:
            raise ValueError(f"cells must be a positive multiple of {HASHES}")
        self.cells = cells
        self.keys = [0] * cells
        self.checks = [0] * cells

    def _positions(self, digest: bytes) -> tuple[int, ...]:
        part = self.cells // HASHES
        return tuple(p * part + int.from_bytes(digest[4 * p:4 * p + 4], "big") % part
                     for p in range(HASHES))

    def add(self, key: bytes) -> None:
        digest = _digest(key)
        value = int.from_bytes(key, "big")
        check = int.from_bytes(digest[-CHECK_LEN:], "big")
        for pos in self._positions(digest):
            self.keys[pos] ^= value
            self.checks[pos] ^= check

    @classmethod
    def of(cls, keys: Iterable[bytes], cells: int) -> Iblt:
        table = cls(cells)
        for key in keys:
            table.add(key)
        return table

    def subtract(self, other: Iblt) -> Iblt:
        """The table of the symmetric difference of both key sets."""
        if other.cells != self.cells:
            raise ValueError("tables of different sizes")
        out = Iblt(self.cells)
        out.keys = [a ^ b for a, b in zip(self.keys, other.keys, strict=True)]
        out.checks = [a ^ b for a, b in zip(self.checks, other.checks, strict=True)]
        return out

    def decode(self) -> list[bytes] | None:
        """The keys of this (difference) table, or None when it does not peel clean."""
        keys, checks = list(self.keys), list(self.checks)
        out: list[bytes] = []
        pending = list(range(self.cells))
        while pending:
            pos = pending.pop()
            value = keys[pos]
            if value == 0 and checks[pos] == 0:
                continue
            if value >> (8 * KEY_LEN):
                return None
            key = value.to_bytes(KEY_LEN, "big")
            digest = _digest(key)
            check = int.from_bytes(digest[-CHECK_LEN:], "big")
            positions = self._positions(digest)
            if check != checks[pos] or pos not in positions:
                continue  # not pure (yet)
            out.append(key)
            if len(out) > self.cells:
                return None
            for p in positions:
                keys[p] ^= value
                checks[p] ^= check
                pending.append(p)
        if any(keys) or any(checks):
            return None
        return out

    def to_bytes(self) -> bytes:
        out = bytearray()
        for key, check in zip(self.keys, self.checks, strict=True):
            out += key.to_bytes(KEY_LEN, "big") + check.to_bytes(CHECK_LEN, "big")
        return bytes(out)

    @classmethod
    def from_bytes(cls, data: bytes) -> Iblt:
        """A table from the wire; raises ValueError unless `data` is whole cells."""
        if not data or len(data) % CELL_LEN or (len(data) // CELL_LEN) % HASHES:
            raise ValueError(f"a table is a multiple of {HASHES} cells of {CELL_LEN} bytes")
        table = cls(len(data) // CELL_LEN)
        for c in range(table.cells):
            cell = data[c * CELL_LEN:(c + 1) * CELL_LEN]
            table.keys[c] = int.from_bytes(cell[:KEY_LEN], "big")
            table.checks[c] = int.from_bytes(cell[KEY_LEN:], "big")
        return table


def split_difference(decoded: Sequence[bytes],
                     mine: set[bytes]) -> tuple[list[bytes], list[bytes]]:
    """(keys only we hold, keys only the peer holds) of a decoded difference."""
    ours = [k for k in decoded if k in mine]
    theirs = [k for k in decoded if k not in mine]
    return ours, theirs
