"""The backhaul server: asyncio edge around the sans-I/O sync session.

Store work (SQLite or PostgreSQL, which block) runs in one worker thread, so the event loop
only moves bytes; sessions of many agents interleave at message granularity.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from ledger.backhaul import protocol as p
from ledger.backhaul.exchange import exchange_sync
from ledger.checkpoint import Checkpoint, MerkleTree
from ledger.errors import AuthError, SyncError
from ledger.sync import SyncConfig, SyncSession, SyncStore
from ledger.tx import TxRegistry
from mesh.identity import Identity, VerifyCache
from mesh.identity import verify as ed25519_verify

log = logging.getLogger("manet.backhaul")
T = TypeVar("T")


class BackhaulStore(SyncStore, Protocol):
    """A sync store that also keeps the enrolment registry."""

    def is_enrolled(self, key: bytes) -> bool: ...

    def enrol(self, key: bytes, name: str, now_ms: int) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    checkpoint_interval_s: float = 10.0
    """A new checkpoint is signed when the last one is older than this (0: every sync)."""
    idle_timeout_s: float = 60.0
    """A connection that sends nothing for this long is closed."""
    sync: SyncConfig = field(default_factory=SyncConfig)
    backlog: int = 4096
    """Pending connections the kernel queues. Agents wait for the server's HELLO, so a connection
    dropped from a full accept queue would hang until the agent's timeout: keep this large."""


class BackhaulServer:
    """Holds the store, the backhaul identity and the current checkpoint."""

    def __init__(self, store: BackhaulStore, identity: Identity, registry: TxRegistry, *,
                 config: ServerConfig | None = None) -> None:
        self.store = store
        self.identity = identity
        self.registry = registry
        self.config = config or ServerConfig()
        self.verify_cache = VerifyCache(capacity=1 << 18)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="backhaul-store")
        self.checkpoint: Checkpoint | None = None
        self.tree: MerkleTree | None = None
        self.checkpoint_at = float("-inf")
        self.seq = int(time.time() * 1000)
        self.server: asyncio.Server | None = None
        self.stats = {"sessions": 0, "complete": 0, "refused": 0, "cut": 0, "blocks_in": 0}

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def start(self, host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> int:
        """Listen; returns the bound port (0 picks a free one)."""
        self.server = await asyncio.start_server(self.handle, host, port, ssl=ssl_context,
                                                 limit=p.MAX_FRAME_BYTES,
                                                 backlog=self.config.backlog)
        return int(self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        self.executor.shutdown(wait=True)

    def _current_checkpoint(self, now: float) -> tuple[Checkpoint, MerkleTree]:
        """Runs in the store thread: re-sign when the last checkpoint is too old."""
        if (self.checkpoint is None or self.tree is None
                or now - self.checkpoint_at >= self.config.checkpoint_interval_s):
            tree = MerkleTree(self.store.heads())
            self.seq += 1
            self.checkpoint = Checkpoint.create(self.identity, self.seq, int(now * 1000), tree)
            self.tree = tree
            self.checkpoint_at = now
        return self.checkpoint, self.tree

    async def _read(self, reader: asyncio.StreamReader) -> tuple[int, bytes]:
        timeout = self.config.idle_timeout_s
        header = await asyncio.wait_for(reader.readexactly(p.HEADER), timeout)
        body = await asyncio.wait_for(reader.readexactly(p.frame_length(header)), timeout)
        return p.split(body)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats["sessions"] += 1
        peer = "?"
        try:
            nonce = os.urandom(32)
            writer.write(p.frame_value(p.F_HELLO, [self.identity.public_key, nonce]))
            kind, payload = await self._read(reader)
            if kind != p.F_AUTH:
                raise AuthError("expected AUTH")
            auth = p.parse_auth(payload)
            peer = auth.client_key.hex()
            if not ed25519_verify(auth.client_key, auth.signature,
                                  p.auth_message(nonce, self.identity.public_key)):
                raise AuthError("bad AUTH signature")
            if not await self._run(self.store.is_enrolled, auth.client_key):
                raise AuthError("key not enrolled")
            writer.write(p.frame_value(p.F_OK, [self.identity.sign(
                p.ok_message(auth.client_nonce, auth.client_key))]))
            session = await self._run(self._new_session, peer)
            await self._sync(session, reader, writer)
            cp, tree = await self._run(self._current_checkpoint, time.time())
            proofs = [pr for a in auth.proofs_for if (pr := tree.proof(a)) is not None]
            writer.write(p.frame_value(p.F_CHECKPOINT, [cp.raw, proofs]))
            await writer.drain()
            self.stats["complete"] += 1
        except AuthError as exc:
            self.stats["refused"] += 1
            log.info("refused %s: %s", peer[:16], exc)
            writer.write(p.frame_value(p.F_ERROR, [str(exc)]))
        except SyncError as exc:
            self.stats["cut"] += 1
            log.warning("cut %s: %s", peer[:16], exc)
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError) as exc:
            log.info("connection from %s ended: %r", peer[:16], exc)
        finally:
            try:
                await writer.drain()
                writer.close()
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass

    def _new_session(self, peer: str) -> SyncSession:
        return SyncSession(self.store, self.registry, initiator=False, peer=peer,
                           now=time.time(), config=self.config.sync,
                           verifier=self.verify_cache.verify)

    async def _sync(self, session: SyncSession, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> None:
        async def receive(payload: bytes) -> bytes | None:
            return await self._run(session.receive, payload, time.time())

        await exchange_sync(session, lambda: self._read(reader), writer.write, writer.drain,
                            receive)
        self.stats["blocks_in"] += session.stats.blocks_in
