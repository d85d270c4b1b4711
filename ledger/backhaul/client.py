"""The agent's side of a backhaul sync: connect, authenticate, run a session, keep the checkpoint.

This is asyncio edge code; the ledger's store is used from the calling thread (the agent's loop),
which is what the agent does with its ledger anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ledger.backhaul import protocol as p
from ledger.backhaul.exchange import exchange_sync
from ledger.checkpoint import Checkpoint, decode_checkpoint, verify_proofs
from ledger.errors import AuthError, CheckpointError, SyncError
from ledger.ledger import Ledger
from ledger.sync import SyncConfig, SyncStats
from mesh.identity import verify as ed25519_verify

if TYPE_CHECKING:
    import ssl  # annotations only: the agent loads OpenSSL only when it uses TLS


@dataclass(slots=True)
class SyncResult:
    """How a sync with the backhaul went."""

    state: str
    stats: SyncStats
    checkpoint: Checkpoint | None
    finalized: int
    """Feeds whose checkpointed height the checkpoint raised or confirmed."""
    error: str | None = None
    seconds: float = 0.0


async def _read(reader: asyncio.StreamReader, timeout: float) -> tuple[int, bytes]:
    try:
        header = await asyncio.wait_for(reader.readexactly(p.HEADER), timeout)
        body = await asyncio.wait_for(reader.readexactly(p.frame_length(header)), timeout)
    except asyncio.IncompleteReadError as exc:
        detail = f"the backhaul closed mid-frame after {len(exc.partial)} bytes"
        raise SyncError("hung up", detail) from exc
    return p.split(body)


class FrameWriter(Protocol):
    """The writing half the client needs: asyncio.StreamWriter, or a mesh stream endpoint."""

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...


async def sync_with_backhaul(ledger: Ledger, host: str, port: int, *,
                             backhaul_key: bytes | None = None,
                             ssl_context: ssl.SSLContext | None = None,
                             timeout: float = 30.0,
                             proofs_for: Sequence[bytes] | None = None,
                             config: SyncConfig | None = None) -> SyncResult:
    """One sync with the backhaul at host:port over TCP (TLS with `ssl_context`).

    `proofs_for` names the feeds to get checkpoint proofs for (default: ours, then the others we
    hold, up to 1,024). `backhaul_key` pins the server's Ed25519 key (recommended; None trusts
    the key the server shows for this sync). Raises `AuthError` when refused, `SyncError` when
    either side cut the session, `CheckpointError` for a bad checkpoint; blocks received before
    that stay stored.
    """
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, ssl=ssl_context, limit=p.MAX_FRAME_BYTES), timeout)
    return await sync_over(ledger, reader, writer, backhaul_key=backhaul_key, timeout=timeout,
                           proofs_for=proofs_for, config=config)


async def sync_over(ledger: Ledger, reader: asyncio.StreamReader, writer: FrameWriter, *,
                    backhaul_key: bytes | None = None, timeout: float = 30.0,
                    proofs_for: Sequence[bytes] | None = None,
                    config: SyncConfig | None = None) -> SyncResult:
    """The backhaul protocol over any byte stream (TCP, or a mesh stream through a gateway)."""
    started = time.monotonic()
    try:
        kind, payload = await _read(reader, timeout)
        if kind != p.F_HELLO:
            raise AuthError("expected HELLO from the backhaul")
        server_key, server_nonce = p.parse_hello(payload)
        if backhaul_key is not None and server_key != backhaul_key:
            raise AuthError("the backhaul presented another key than the pinned one")
        nonce = os.urandom(32)
        if proofs_for is not None:
            wanted = list(proofs_for)
        else:  # our own feed first, then the others we hold (retention needs their proofs)
            wanted = [ledger.author] + [h.author for h in ledger.store.heads()
                                        if h.author != ledger.author]
        writer.write(p.frame_value(p.F_AUTH, [
            ledger.author, nonce, ledger.identity.sign(p.auth_message(server_nonce, server_key)),
            wanted[:p.MAX_PROOF_REQUESTS]]))
        kind, payload = await _read(reader, timeout)
        if kind == p.F_ERROR:
            raise AuthError(f"backhaul refused: {p.parse_value(payload)}")
        ok = p.parse_value(payload)
        if (kind != p.F_OK or type(ok) is not list or len(ok) != 1 or type(ok[0]) is not bytes
                or not ed25519_verify(server_key, ok[0], p.ok_message(nonce, ledger.author))):
            raise AuthError("the backhaul did not prove its key")
        now = time.time()
        session = ledger.sync_session(initiator=True, peer="backhaul:" + server_key.hex(),
                                      now=now, config=config)
        writer.write(p.frame(p.F_SYNC, session.start(now)))
        await exchange_sync(session, lambda: _read(reader, timeout), writer.write, writer.drain)
        kind, payload = await _read(reader, timeout)
        if kind != p.F_CHECKPOINT:
            raise CheckpointError("expected a checkpoint after the sync")
        value = p.parse_value(payload)
        if type(value) is not list or len(value) != 2 or type(value[0]) is not bytes \
                or type(value[1]) is not list:
            raise CheckpointError("malformed checkpoint frame")
        checkpoint = decode_checkpoint(value[0], server_key, ledger.verify_cache.verify)
        heads = verify_proofs(checkpoint, value[1])
        ledger.store.put_checkpoint(checkpoint.backhaul, checkpoint.seq, checkpoint.time_ms,
                                    checkpoint.root, checkpoint.raw, heads)
        ledger.prune()  # the checkpoint may have made others' old blocks prunable
        return SyncResult(session.state, session.stats, checkpoint, len(heads),
                          seconds=time.monotonic() - started)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()
