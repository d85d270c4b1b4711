"""The sync planner: reconnects trigger a sync, routes are chosen, failures back off."""

from __future__ import annotations

from ledger.planner import PlannerConfig, SyncPlanner
from mesh import events as ev
from mesh.line import LineStatus

UP = LineStatus(True, "lte", -90, True, 50)
DOWN = LineStatus()


def test_reconnect_routes_and_backoff() -> None:
    p = SyncPlanner(now=0.0, config=PlannerConfig(interval_s=60, retry_s=5, max_retry_s=20))
    assert p.poll(0.0) is None and p.get_timer() is None  # no route yet
    p.on_event(ev.GatewayChanged(None, b"g" * 8, b"n" * 8, 2, 1, UP, "found", 1.0), 1.0)
    assert p.get_timer() == 1.0
    assert p.poll(1.0) == "gateway" and p.poll(1.0) is None  # one at a time
    p.finished(False, 2.0)
    assert p.get_timer() == 7.0
    p.finished(False, 7.0)
    p.finished(False, 17.0)
    assert p.get_timer() == 37.0  # 5, 10, then capped at 20
    p.on_event(ev.LineStatusChanged(DOWN, UP, 20.0), 20.0)
    assert p.poll(20.0) == "direct"  # own line back: sync at once, directly
    p.finished(True, 21.0)
    assert p.get_timer() == 81.0 and p.last_ok == 21.0
    p.on_event(ev.LineStatusChanged(UP, DOWN, 30.0), 30.0)
    assert p.route == "gateway" and p.poll(30.0) == "gateway"  # route changed
    p.finished(True, 31.0)
    p.on_event(ev.GatewayChanged(b"g" * 8, None, None, 0, 0, None, "lost", 40.0), 40.0)
    assert p.route is None and p.get_timer() is None
    p.on_event(ev.ManetLeft(41.0), 41.0)  # other events change nothing
    assert p.poll(100.0) is None
