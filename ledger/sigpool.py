"""Signature checks in child processes, beside the ingesting thread's Python work.

Threads could not do this. libsodium releases the GIL while it checks a signature, but a
thread that loops over checks needs the GIL back after each one, and while the ingesting
thread decodes blocks (pure Python) it waits for a forced switch (5 ms) or a C call that
lets go: measured, while the first 1,000-block batch decoded (~30 ms, in which a core checks
~700 signatures) a pool thread checked 192; the rest waited for the end of the batch, when
both threads verified. A child process has its own interpreter, so it checks while this one
decodes, validates and stores.

    pool = SignaturePool(processes=1)
    ticket = pool.send(chunk)      # [(public key, signature, message), ...]; None: do it yourself
    pool.ready(ticket)             # answered yet? (never waits)
    bad = pool.receive(ticket)     # index of the first bad signature, -1 when all hold,
                                   # None when the child is gone (then check the chunk yourself)
    pool.abandon(ticket)           # checked it myself after all: drop the answer
    pool.close()

The children start with the pool. They hold no state: chunks go out and come back in order,
and at most `MAX_IN_FLIGHT` wait per child, so the caller checks the rest itself and neither
side idles; rather than wait for a child (a busy machine starves an idle-priority child),
the caller checks the chunk itself and abandons the child's answer. Not thread-safe: one
ingesting thread at a time uses a pool (the ledger's own thread, the backhaul's store
thread). A child exits when its pipe closes (its parent closed the pool or died); it
ignores Ctrl-C, which its parent handles.

Wire (pipes, private to this module): request `>II` (count, body length), then per signature
the 32-byte key, the 64-byte signature, `>I` message length and the message; answer `>i`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import struct
import subprocess
import sys
from collections.abc import Sequence
from typing import BinaryIO

Signed = tuple[bytes, bytes, bytes]
"""(public key, signature, message)."""
Ticket = tuple[int, int]
"""(child, sequence number of the chunk at that child)."""

MAX_IN_FLIGHT = 3
"""Chunks waiting per child: one being checked, two queued behind it."""
_REQUEST = struct.Struct(">II")
_LENGTH = struct.Struct(">I")
_ANSWER = struct.Struct(">i")
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_CHILD = "import sys; from ledger.sigpool import serve; serve(sys.stdin.buffer, sys.stdout.buffer)"


class _Child:
    """One child process and its two pipes (raw: answers are polled without blocking)."""

    def __init__(self) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        self.proc = subprocess.Popen([sys.executable, "-c", _CHILD], bufsize=0,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.to_child = self.proc.stdin.fileno()
        self.from_child = self.proc.stdout.fileno()
        self.sent = 0
        """Chunks sent; a chunk's sequence number is the count before it."""
        self.read = 0
        """Answers read (they come in sequence order)."""
        self.answers: dict[int, int] = {}
        self.abandoned: set[int] = set()
        self.alive = True
        self._partial = b""
        with contextlib.suppress(OSError):  # room for every chunk in flight, so that a send
            fcntl.fcntl(self.to_child, _F_SETPIPE_SZ, 1 << 20)  # never waits for the child

    def busy(self) -> bool:
        """Reads the answers that are ready, without waiting; True while the child still
        has `MAX_IN_FLIGHT` chunks to check, or is still checking chunks the caller did
        itself (a starved child: no new work until it caught up, none of it wasted)."""
        self.poll()
        return self.sent - self.read >= MAX_IN_FLIGHT or bool(self.abandoned)

    def poll(self) -> None:
        """Read the answers that are ready, without waiting."""
        while (self.alive and self.sent > self.read
               and select.select([self.from_child], [], [], 0)[0]):
            self._read()

    def send(self, chunk: Sequence[Signed]) -> int | None:
        parts: list[bytes] = []
        for key, signature, message in chunk:
            parts += (key, signature, _LENGTH.pack(len(message)), message)
        body = b"".join(parts)
        data = memoryview(_REQUEST.pack(len(chunk), len(body)) + body)
        try:
            while data:
                data = data[os.write(self.to_child, data):]
        except OSError:
            self.alive = False
            return None
        self.sent += 1
        return self.sent - 1

    def receive(self, seq: int) -> int | None:
        while seq not in self.answers:
            if not self.alive:
                return None
            self._read()
        return self.answers.pop(seq)

    def _read(self) -> None:
        """Read what answers there are (waits for one); a closed pipe: the child is gone."""
        try:
            data = os.read(self.from_child, _ANSWER.size * max(1, self.sent - self.read))
        except OSError:
            data = b""
        if not data:
            self.alive = False
            return
        data = self._partial + data
        whole = len(data) - len(data) % _ANSWER.size
        for (answer,) in _ANSWER.iter_unpack(data[:whole]):
            if self.read in self.abandoned:
                self.abandoned.discard(self.read)
            else:
                self.answers[self.read] = answer
            self.read += 1
        self._partial = data[whole:]

    def close(self) -> None:
        """Stop the child at once: it holds nothing, and at idle priority on a busy machine
        it could take seconds to reach the end of its pipe."""
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()
        self.proc.kill()
        self.proc.wait()


class SignaturePool:
    """`processes` children that check chunks of signatures (see the module docstring).
    They start here, so that their start (~70 ms) does not delay the first batch."""

    def __init__(self, processes: int = 1) -> None:
        if processes < 1:
            raise ValueError("a signature pool needs at least one process")
        self._children: list[_Child] = []
        with contextlib.suppress(OSError):  # none started: every chunk is checked inline
            for _ in range(processes):
                self._children.append(_Child())

    def send(self, chunk: Sequence[Signed]) -> Ticket | None:
        """Hand `chunk` to a child with room; returns its ticket, or None when every child is
        busy (or gone): the caller checks the chunk itself."""
        for index, child in enumerate(self._children):
            if child.alive and not child.busy():
                seq = child.send(chunk)
                if seq is not None:
                    return index, seq
        return None

    def ready(self, ticket: Ticket) -> bool:
        """True when `receive(ticket)` would not wait (answered, or the child is gone)."""
        child = self._children[ticket[0]]
        child.poll()
        return ticket[1] in child.answers or not child.alive

    def receive(self, ticket: Ticket) -> int | None:
        """The answer to the chunk of `ticket` (waits for it): the index of its first bad
        signature, -1 when all hold, or None when the child is gone (check it yourself)."""
        return self._children[ticket[0]].receive(ticket[1])

    def abandon(self, ticket: Ticket) -> None:
        """The caller checked that chunk itself: drop its answer when it comes."""
        child = self._children[ticket[0]]
        if child.answers.pop(ticket[1], None) is None and ticket[1] >= child.read:
            child.abandoned.add(ticket[1])

    def close(self) -> None:
        """Stop the children; later chunks are all checked by the caller."""
        for child in self._children:
            child.close()
        self._children = []


def serve(stdin: BinaryIO, stdout: BinaryIO) -> None:
    """The child's loop: answer each chunk until the parent closes the pipe."""
    from mesh.identity import verify

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Take a spare core, not the ingesting process's share of a busy one: SCHED_IDLE runs
    # only where nothing else wants the CPU (nice 10 still took ~10 % of a shared core).
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        with contextlib.suppress(OSError):
            os.nice(19)
    while True:
        header = stdin.read(_REQUEST.size)
        if len(header) != _REQUEST.size:
            return
        count, size = _REQUEST.unpack(header)
        body = stdin.read(size)
        if len(body) != size:
            return
        bad, at = -1, 0
        for i in range(count):
            key, signature = body[at:at + 32], body[at + 32:at + 96]
            (length,) = _LENGTH.unpack_from(body, at + 96)
            message = body[at + 100:at + 100 + length]
            at += 100 + length
            if not verify(key, signature, message):
                bad = i
                break
        try:
            stdout.write(_ANSWER.pack(bad))
            stdout.flush()
        except BrokenPipeError:  # the parent closed the pool before this (abandoned) answer
            return

