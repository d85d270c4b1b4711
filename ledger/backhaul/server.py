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
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol, TypeVar

from ledger.backhaul import protocol as p
from ledger.backhaul.exchange import exchange_sync
from ledger.checkpoint import Checkpoint, MerkleTree
from ledger.errors import AuthError, SyncError
from ledger.ledger import default_verify_processes
from ledger.sigpool import SignaturePool
from ledger.sync import SyncConfig, SyncSession, SyncStore
from ledger.tx import TxRegistry
from mesh.identity import Identity
from mesh.identity import verify as ed25519_verify

log = logging.getLogger("manet.backhaul")
T = TypeVar("T")


class BackhaulStore(SyncStore, Protocol):
    """A sync store that also keeps the enrolment registry."""

    def is_enrolled(self, key: bytes) -> bool: ...

    def enrol(self, key: bytes, name: str, now_ms: int) -> None: ...

    def close(self) -> None: ...

    def group(self) -> AbstractContextManager[None]: ...


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
    verify_processes: int = field(default_factory=default_verify_processes)
    """Child processes that check received blocks' signatures beside the store thread
    (`LedgerConfig.verify_processes`; 1 on a multi-core machine, else 0: inline)."""
    group_commit: int = 64
    """Sync messages of different agents handled in one store transaction (one fsync or
    PostgreSQL commit for all; each is answered after that commit). 1: a commit per message."""


class BackhaulServer:
    """Holds the store, the backhaul identity and the current checkpoint."""

    def __init__(self, store: BackhaulStore, identity: Identity, registry: TxRegistry, *,
                 config: ServerConfig | None = None) -> None:
        self.store = store
        self.identity = identity
        self.registry = registry
        self.config = config or ServerConfig()
        self.verify_pool: SignaturePool | None = None
        if self.config.verify_processes > 0:
            self.verify_pool = SignaturePool(self.config.verify_processes)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="backhaul-store")
        self.checkpoint: Checkpoint | None = None
        self.tree: MerkleTree | None = None
        self.checkpoint_at = float("-inf")
        self.seq = int(time.time() * 1000)
        self.server: asyncio.Server | None = None
        self.stats = {"sessions": 0, "complete": 0, "refused": 0, "cut": 0, "blocks_in": 0,
                      "commits": 0}
        self._waiting: deque[tuple[Callable[[], Any], asyncio.Future[Any]]] = deque()
        self._committing = False

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def _run_grouped(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn` in the store thread inside a group commit with whatever other sessions
        queued meanwhile; returns (or raises) once the group is durable."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._waiting.append((partial(fn, *args), future))
        self._next_group()
        return await future

    def _next_group(self) -> None:
        """(Loop thread.) Start the next group unless one is being committed."""
        if self._committing or not self._waiting:
            return
        batch = [self._waiting.popleft()
                 for _ in range(min(len(self._waiting), max(1, self.config.group_commit)))]
        self._committing = True
        job = asyncio.get_running_loop().run_in_executor(self.executor, self._commit_group,
                                                         batch)
        job.add_done_callback(partial(self._group_done, batch))

    def _commit_group(self, batch: list[tuple[Callable[[], Any], asyncio.Future[Any]]]
                      ) -> list[tuple[bool, Any]]:
        """(Store thread.) Each call's result or exception, all made durable by one commit."""
        results: list[tuple[bool, Any]] = []
        with self.store.group():
            for fn, _future in batch:
                try:
                    results.append((True, fn()))
                except Exception as exc:  # that session's own failure, handed back to it
                    results.append((False, exc))
        self.stats["commits"] += 1
        return results

    def _group_done(self, batch: list[tuple[Callable[[], Any], asyncio.Future[Any]]],
                    job: asyncio.Future[list[tuple[bool, Any]]]) -> None:
        """(Loop thread.) Hand out the results; a failed commit fails every call of the group
        (none of their writes is durable)."""
        self._committing = False
        try:
            results = job.result()
        except Exception as exc:
            results = [(False, exc)] * len(batch)
        for (_fn, future), (ok, value) in zip(batch, results, strict=True):
            if future.done():
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
        self._next_group()

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
        if self.verify_pool is not None:
            self.verify_pool.close()

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
                           verifier=ed25519_verify, pool=self.verify_pool)

    async def _sync(self, session: SyncSession, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> None:
        async def receive(payload: bytes) -> bytes | None:
            return await self._run_grouped(session.receive, payload, time.time())

        await exchange_sync(session, lambda: self._read(reader), writer.write, writer.drain,
                            receive)
        self.stats["blocks_in"] += session.stats.blocks_in
