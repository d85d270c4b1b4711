"""Real agent processes in a chain of 5 network namespaces: A - B - C - D - E.

Shows a route over 4 hops with data delivered, random loss (nftables `numgen random`)
tolerated, metrics served, and a clean SIGTERM shutdown followed by a restart that resumes.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from agent.lab import Lab, lab_available
from ledger import Ledger
from mesh.identity import Identity

SKIP = lab_available()
pytestmark = [pytest.mark.netns, pytest.mark.skipif(SKIP is not None, reason=SKIP or "")]
NAMES = ["A", "B", "C", "D", "E"]
METRICS_PORT = 9479


@pytest.fixture(scope="module")
def chain() -> Iterator[Lab]:
    lab = Lab()
    try:
        for name in NAMES:
            lab.add_host(name)
        for a, b in itertools.pairwise(NAMES):
            lab.link(a, b)
        for name in NAMES:
            lab.start_agent(name, hello_s=0.5,
                            metrics_port=METRICS_PORT if name == "A" else 0)
        lab.wait_ready()
        for name, count in zip(NAMES, [1, 2, 2, 2, 1], strict=True):
            lab.wait_neighbours(name, count)
        yield lab
    finally:
        lab.close()


def test_route_over_four_hops_delivers_data(chain: Lab) -> None:
    e_id = chain.hosts["E"].node_id
    chain.request("A", "send", dest=e_id, text="over four hops")
    inbox = chain.wait_for(lambda: chain.request("E", "inbox"), 10, "E receives")
    assert inbox[0]["source"] == chain.hosts["A"].node_id
    assert bytes.fromhex(inbox[0]["payload_hex"]) == b"over four hops"
    assert inbox[0]["hops"] == 4
    routes = {r["dest"]: r for r in chain.request("A", "routes")}
    assert routes[e_id]["hops"] == 4 and routes[e_id]["valid"]
    assert routes[e_id]["next_hop"] == chain.hosts["B"].node_id
    rtts = chain.request("A", "ping", dest=e_id, count=5, timeout=2.0)["rtt_ms"]
    assert all(r is not None for r in rtts)


@pytest.mark.skipif(shutil.which("nft") is None, reason="nftables (nft) is not installed")
def test_random_loss_is_tolerated(chain: Lab) -> None:
    """20 % of the frames C receives are dropped; the route holds and most pings arrive."""
    for iface in chain.hosts["C"].ifaces:
        chain.drop("C", iface, 20)
    try:
        e_id = chain.hosts["E"].node_id
        rtts = chain.request("A", "ping", dest=e_id, count=20, timeout=0.5)["rtt_ms"]
        arrived = sum(r is not None for r in rtts)
        # Each ping crosses C twice: 0.8 ** 2 = 64 % expected; a bound far below that.
        assert arrived >= 6, rtts
        assert chain.request("C", "status")["stats"].get("rx_hello", 0) > 0
        counters = subprocess.run(
            ["ip", "netns", "exec", chain.hosts["C"].ns, "nft", "list", "ruleset"],
            capture_output=True, text=True, check=True).stdout
        assert "numgen random mod 100 < 20" in counters
    finally:
        for iface in chain.hosts["C"].ifaces:
            chain.undrop("C", iface)


def test_metrics_endpoint_serves_prometheus_text(chain: Lab) -> None:
    text = chain.exec("A", chain.python, "-c",
                      "import urllib.request as u; print(u.urlopen("
                      f"'http://127.0.0.1:{METRICS_PORT}/metrics', timeout=5).read().decode())"
                      ).stdout
    lines = text.splitlines()
    assert "manet_neighbours 1" in lines
    assert any(x.startswith('manet_frames_total{direction="tx",kind="hello"}') for x in lines)
    assert "manet_line_up 0" in lines


def test_sigterm_stops_cleanly_and_restart_resumes(chain: Lab) -> None:
    assert chain.stop_agent("E") == 0
    events = [x.get("event") for x in chain.logs("E")]
    assert events[-1] == "agent_stopped"
    assert "agent_stopping" in events[events.index("agent_started"):]
    # SIGTERM signed the pending mesh events into E's ledger before exit.
    host = chain.hosts["E"]
    with Ledger.open(host.dir / "ledger.sqlite", Identity.load(host.dir / "node.key")) as led:
        kinds = {r.tx.type for r in led.query()}
        assert {"mesh.neighbour_up", "mesh.route_added"} <= kinds
        assert led.pending == 0
    assert all(x.get("node") == chain.hosts["E"].node_id for x in chain.logs("E"))
    chain.start_agent("E", hello_s=0.5)
    chain.wait_ready(["E"])
    status = chain.request("E", "status")
    assert status["restarts"] == 1 and status["node_id"] == chain.hosts["E"].node_id
    rtts = chain.wait_for(
        lambda: [r for r in chain.request("A", "ping", dest=status["node_id"], count=1,
                                          timeout=1.0)["rtt_ms"] if r is not None],
        15, "A reaches the restarted E")
    assert rtts[0] > 0
