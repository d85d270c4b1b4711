"""Many mesh cores wired through an in-memory link graph, in virtual time.

For tests, the demo and the core benchmark: no sockets, no radio model, a clock that only
moves when the next event is due. Links are directed, so a one-way link is one call; every
frame takes `delay_s` to cross a link, and a `loss` function may drop any frame.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from random import Random

from mesh import events as ev
from mesh.config import WIFI, LinkProfile, MeshConfig
from mesh.frames import DecodeCache
from mesh.identity import Identity, VerifyCache
from mesh.line import LINE_DOWN, LineStatus
from mesh.node import MeshNode, Transmit

IFACE = "radio0"


class LinkGraph:
    """N nodes (indices 0..n-1, which are also their link addresses) and directed links."""

    def __init__(self, n: int, *, seed: int = 1, config: MeshConfig | None = None,
                 profile: LinkProfile = WIFI, delay_s: float = 0.001,
                 lines: dict[int, LineStatus] | None = None, shared_cache: bool = True) -> None:
        rng = Random(seed)
        cache = VerifyCache() if shared_cache else None
        decoded = DecodeCache() if shared_cache else None
        self.now = 0.0
        self.delay_s = delay_s
        self.links: set[tuple[int, int]] = set()
        self.loss: Callable[[int, int, Transmit], bool] | None = None
        self.nodes = [
            MeshNode(identity=Identity.from_seed(rng.randbytes(32)), rng=Random(rng.random()),
                     now=0.0, interfaces={IFACE: profile}, config=config,
                     line=(lines or {}).get(i, LINE_DOWN), verify_cache=cache,
                     decode_cache=decoded)
            for i in range(n)
        ]
        self.index = {node.id: i for i, node in enumerate(self.nodes)}
        self.events: list[list[ev.Event]] = [[] for _ in range(n)]
        self.sent: list[tuple[float, int, Transmit]] = []
        self.wakes = [0] * n
        """Timer wake-ups per node: how often `handle_timer` was called."""
        self._queue: list[tuple[float, int, int, int, bytes]] = []
        self._seq = 0

    # topology -------------------------------------------------------------------------------
    def connect(self, a: int, b: int, *, one_way: bool = False) -> None:
        self.links.add((a, b))
        if not one_way:
            self.links.add((b, a))

    def cut(self, a: int, b: int, *, one_way: bool = False) -> None:
        self.links.discard((a, b))
        if not one_way:
            self.links.discard((b, a))

    def line(self, pairs: Iterable[tuple[int, int]]) -> None:
        for a, b in pairs:
            self.connect(a, b)

    @classmethod
    def chain(cls, n: int, **kw: object) -> LinkGraph:
        net = cls(n, **kw)  # type: ignore[arg-type]
        net.line((i, i + 1) for i in range(n - 1))
        return net

    @classmethod
    def grid(cls, w: int, h: int, **kw: object) -> LinkGraph:
        net = cls(w * h, **kw)  # type: ignore[arg-type]
        for y in range(h):
            for x in range(w):
                i = y * w + x
                if x + 1 < w:
                    net.connect(i, i + 1)
                if y + 1 < h:
                    net.connect(i, i + w)
        return net

    @classmethod
    def ring(cls, n: int, **kw: object) -> LinkGraph:
        net = cls.chain(n, **kw)
        net.connect(n - 1, 0)
        return net

    # running --------------------------------------------------------------------------------
    def id(self, i: int) -> bytes:
        return self.nodes[i].id

    def _collect(self, i: int) -> None:
        node = self.nodes[i]
        for tx in node.datagrams_to_send():
            self.sent.append((self.now, i, tx))
            dst = tx.link_dst
            if dst is None:
                targets = sorted(b for (a, b) in self.links if a == i)
            else:
                targets = [dst] if isinstance(dst, int) and (i, dst) in self.links else []
            for j in targets:
                if self.loss is not None and self.loss(i, j, tx):
                    continue
                self._seq += 1
                heapq.heappush(self._queue, (self.now + self.delay_s, self._seq, j, i, tx.data))
        while (event := node.next_event()) is not None:
            self.events[i].append(event)

    def run(self, until: float) -> None:
        """Advance virtual time to `until`, delivering frames and firing timers in order."""
        while True:
            timers = [(t, i) for i, n in enumerate(self.nodes) if (t := n.get_timer()) is not None]
            next_timer = min(timers) if timers else None
            next_frame = self._queue[0][0] if self._queue else None
            if next_frame is not None and (next_timer is None or next_frame <= next_timer[0]):
                if next_frame > until:
                    break
                when, _, j, i, data = heapq.heappop(self._queue)
                self.now = when
                self.nodes[j].receive(data, IFACE, i, when)
                self._collect(j)
            elif next_timer is not None and next_timer[0] <= until:
                self.now = max(self.now, next_timer[0])
                self.wakes[next_timer[1]] += 1
                self.nodes[next_timer[1]].handle_timer(self.now)
                self._collect(next_timer[1])
            else:
                break
        self.now = until

    def send(self, src: int, dest: bytes, payload: bytes) -> None:
        self.nodes[src].send_data(dest, payload, self.now)
        self._collect(src)

    def set_line(self, i: int, status: LineStatus) -> None:
        self.nodes[i].set_line(status, self.now)
        self._collect(i)

    def inject(self, j: int, data: bytes, from_link: int) -> None:
        """Hand node j raw bytes as if heard from `from_link` (for forged-frame tests)."""
        self.nodes[j].receive(data, IFACE, from_link, self.now)
        self._collect(j)

    def of_type(self, i: int, kind: type[ev.Event]) -> list[ev.Event]:
        return [e for e in self.events[i] if isinstance(e, kind)]
