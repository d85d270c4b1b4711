"""Two sync sessions wired to each other in memory: for tests, benchmarks and simulators.

The bytes go straight from one session to the other (no sockets), optionally cut after a
number of messages, so an interrupted sync can be exercised deterministically.
"""

from __future__ import annotations

from dataclasses import dataclass

from ledger.errors import SyncError
from ledger.ledger import Ledger
from ledger.sync import SyncConfig, SyncSession


@dataclass(slots=True)
class PairResult:
    initiator: SyncSession
    responder: SyncSession
    messages: int
    cut: bool
    """True when the exchange was interrupted by `cut_after`."""
    error: SyncError | None = None

    @property
    def round_trips(self) -> float:
        return self.messages / 2

    @property
    def wire_bytes(self) -> int:
        return self.initiator.stats.bytes_out + self.responder.stats.bytes_out


def sync_pair(a: Ledger, b: Ledger, now: float, *, cut_after: int | None = None,
              config: SyncConfig | None = None, responder_config: SyncConfig | None = None,
              a_name: str = "a", b_name: str = "b") -> PairResult:
    """Run a full session between `a` (initiator) and `b`; SyncError is returned, not raised.
    `config` applies to both sides unless `responder_config` is given for `b`."""
    sa = a.sync_session(initiator=True, peer=b_name, now=now, config=config)
    sb = b.sync_session(initiator=False, peer=a_name, now=now, config=responder_config or config)
    message: bytes | None = sa.start(now)
    sent = 1
    receiver, sender = sb, sa
    try:
        while message is not None:
            if cut_after is not None and sent > cut_after:
                sa.fail_local("cut", now)
                sb.fail_local("cut", now)
                return PairResult(sa, sb, sent - 1, True)
            reply = receiver.receive(message, now)
            if reply is not None:
                sent += 1
            message = reply
            receiver, sender = sender, receiver
    except SyncError as exc:
        return PairResult(sa, sb, sent, False, exc)
    return PairResult(sa, sb, sent, False)
