"""When and how a device syncs its ledger with the backhaul: the agent glue's decision core.

Sans-I/O: feed it the mesh events that matter and the time; `poll(now)` says whether to start
a sync now and by which route, `finished(ok, now)` reports the outcome. The agent then runs
`ledger.backhaul.client.sync_with_backhaul` (route "direct": our own line reaches the backhaul)
or `ledger.backhaul.mesh.MeshSyncClient.sync` (route "gateway": through the mesh), and re-arms
one timer at `get_timer()`.

Policy: sync at once when a route to the backhaul appears (reconnect), then every
`interval_s`; after a failure retry with exponential backoff; one sync at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

from mesh import events as ev


@dataclass(frozen=True, slots=True, kw_only=True)
class PlannerConfig:
    interval_s: float = 60.0
    """Seconds between syncs while a route to the backhaul lasts."""
    retry_s: float = 5.0
    """First retry delay after a failed sync (doubles up to `max_retry_s`)."""
    max_retry_s: float = 300.0


class SyncPlanner:
    """Decides when to sync and by which route ("direct" or "gateway")."""

    def __init__(self, *, now: float, config: PlannerConfig | None = None) -> None:
        self.config = config or PlannerConfig()
        self.line_up = False
        self.gateway: bytes | None = None
        self.running = False
        self.failures = 0
        self._due: float | None = None
        self.last_ok: float | None = None
        self._now = now

    @property
    def route(self) -> str | None:
        if self.line_up:
            return "direct"
        if self.gateway is not None:
            return "gateway"
        return None

    def on_event(self, event: ev.Event, now: float) -> None:
        had = self.route
        if isinstance(event, ev.LineStatusChanged):
            self.line_up = event.new.is_gateway
        elif isinstance(event, ev.GatewayChanged):
            self.gateway = event.new
        else:
            return
        if self.route is None:
            self._due = None
        elif had is None or had != self.route:
            self._due = now  # reconnected, or the route changed: sync now
            self.failures = 0

    def poll(self, now: float) -> str | None:
        """The route to sync over now, or None. Marks the sync as running."""
        if self.running or self.route is None or self._due is None or now < self._due:
            return None
        self.running = True
        self._due = None
        return self.route

    def finished(self, ok: bool, now: float) -> None:
        self.running = False
        if ok:
            self.failures = 0
            self.last_ok = now
            delay = self.config.interval_s
        else:
            self.failures += 1
            delay = min(self.config.max_retry_s,
                        self.config.retry_s * 2 ** (self.failures - 1))
        self._due = now + delay if self.route is not None else None

    def get_timer(self) -> float | None:
        return None if self.running else self._due
