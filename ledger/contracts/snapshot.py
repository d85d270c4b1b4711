"""Snapshots of final contract state, so that final history need not be replayed (or kept).

A snapshot is the state right after the final prefix of a replay (what backhaul checkpoints
cover), with the timers still pending then and the feed heights it covers. Replaying from a
snapshot skips the covered transactions and continues from its state. That matters twice:
the ledger may prune others' checkpointed blocks (their transactions are then gone), and it
keeps only the highest checkpointed height per feed, not which checkpoint covered what;
a snapshot saved at each checkpoint keeps that boundary: what was final stays final even
when a later checkpoint covers a transaction with an older block time.

`Snapshot` is pure data with a symmetric codec; `save`/`load` are the file edge.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ledger.contracts import codec
from ledger.contracts.errors import InvalidTransaction, StoreError
from ledger.contracts.tx import ContractTx

VERSION = 1
MAX_SNAPSHOT = 1 << 30

TimerRow = tuple[int, int, str, str, str, dict[str, Any]]
"""(at_ms, scheduling seq, origin tx id, contract, method, args)."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Final state at a checkpoint. `raw_state` is canonical CBOR, decoded afresh per use so
    that no replay can change the snapshot."""

    heights: Mapping[bytes, int]
    time_ms: int
    raw_state: bytes
    state_hash: str
    timers: tuple[TimerRow, ...]
    timer_seq: int
    count: int

    def covers(self, tx: ContractTx) -> bool:
        return self.heights.get(tx.author, -1) >= tx.height

    def state(self) -> dict[str, Any]:
        value = codec.decode_trusted(self.raw_state)
        assert isinstance(value, dict)
        return value

    def encode(self) -> bytes:
        return codec.encode({
            "v": VERSION, "heights": {k.hex(): v for k, v in self.heights.items()},
            "time_ms": self.time_ms, "state": self.raw_state, "state_hash": self.state_hash,
            "timers": [list(t) for t in self.timers], "timer_seq": self.timer_seq,
            "count": self.count})

    @classmethod
    def decode(cls, data: bytes) -> Snapshot:
        """Parse a snapshot and check its state against its hash; raises `StoreError`."""
        try:
            value = codec.decode_trusted(data, MAX_SNAPSHOT)
        except InvalidTransaction as exc:
            raise StoreError(f"snapshot is not CBOR: {exc}") from exc
        try:
            if value["v"] != VERSION:
                raise StoreError(f"snapshot version {value['v']} is not {VERSION}")
            heights = {bytes.fromhex(k): int(v) for k, v in value["heights"].items()}
            raw = value["state"]
            timers = tuple((int(t[0]), int(t[1]), str(t[2]), str(t[3]), str(t[4]), dict(t[5]))
                           for t in value["timers"])
            snap = cls(heights=heights, time_ms=int(value["time_ms"]), raw_state=bytes(raw),
                       state_hash=str(value["state_hash"]), timers=timers,
                       timer_seq=int(value["timer_seq"]), count=int(value["count"]))
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise StoreError(f"malformed snapshot ({type(exc).__name__}: {exc})") from exc
        if hashlib.sha256(snap.raw_state).hexdigest() != snap.state_hash:
            raise StoreError("snapshot state does not match its hash")
        return snap


def save(path: str | os.PathLike[str], snapshot: Snapshot) -> None:
    """Write atomically (temporary file, fsync, rename): a power cut leaves the old one."""
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(snapshot.encode())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, target)


def load(path: str | os.PathLike[str]) -> Snapshot | None:
    """The snapshot at `path`, None if there is none; `StoreError` if it is corrupt."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StoreError(f"cannot read snapshot {path}: {exc.strerror}") from exc
    return Snapshot.decode(data)
