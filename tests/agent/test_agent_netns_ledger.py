"""Ledgers across partitions and the backhaul, with real agent processes in namespaces.

Chain G - B - C. The backhaul server runs inside G's namespace (G's "mobile line" to it).
The B-C link starts down: {G, B} and {C} record apart, with no gateway (G's line is down).
When the link comes up the partitions exchange their ledgers; when G's line comes back, B and
C sync with the backhaul through G, and G directly.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from agent.lab import Lab, lab_available
from ledger.store import SqliteStore

SKIP = lab_available()
pytestmark = [pytest.mark.netns, pytest.mark.skipif(SKIP is not None, reason=SKIP or "")]
BACKHAUL = ('[backhaul]\nhost = "127.0.0.1"\nport = 7400\ninterval_s = 3600.0\n'
            'timeout_s = 20.0\n\n[ledger]\npeer_sync_interval_s = 1.0\n\n')


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    lab = Lab()
    server: subprocess.Popen[bytes] | None = None
    try:
        for name in ("G", "B", "C"):
            lab.add_host(name)
        lab.link("G", "B")
        lab.link("B", "C")
        lab.set_link("B", "C", up=False)
        db = lab.hosts["G"].dir / "backhaul.sqlite"
        for name in ("G", "B", "C"):
            lab.key(name)
            subprocess.run([sys.executable, "-m", "ledger.backhaul.cli", "enrol",
                            str(lab.hosts[name].dir / "node.key"), "--db", f"sqlite:{db}",
                            "--name", name], check=True, capture_output=True)
        log = open(lab.hosts["G"].dir / "backhaul.log", "wb")  # noqa: SIM115
        server = subprocess.Popen(
            ["ip", "netns", "exec", lab.hosts["G"].ns, sys.executable, "-m",
             "ledger.backhaul.cli", "serve", "--listen", "127.0.0.1:7400", "--db",
             f"sqlite:{db}", "--key", str(lab.hosts["G"].dir / "backhaul.key"),
             "--checkpoint-interval", "0.5"], stdout=log, stderr=subprocess.STDOUT)
        for name in ("G", "B", "C"):
            # Gateway searches retry every 1-2 s (default: backing off to 60 s), so that C
            # finds G soon after G's line comes back.
            lab.start_agent(name, hello_s=0.5, extra=BACKHAUL,
                            mesh={"gateway_retry_s": 1.0, "gateway_retry_max_s": 2.0})
        lab.wait_ready()
        lab.wait_neighbours("G", 1)
        lab.wait_neighbours("B", 1)
        yield lab
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
        lab.close()


def feeds(lab: Lab, name: str) -> dict[str, int]:
    result: dict[str, int] = lab.request(name, "ledger")["feeds"]
    return result


def test_partitions_merge_then_sync_with_the_backhaul_once_a_gateway_is_back(lab: Lab) -> None:
    ids = {n: lab.key(n).public_key.hex() for n in ("G", "B", "C")}
    lab.set_line("C", "no-backhaul")  # C records something of its own while alone
    lab.wait_for(lambda: ids["C"] in feeds(lab, "C") and ids["G"] in feeds(lab, "B")
                 and ids["B"] in feeds(lab, "G"), 20, "each partition holds its feeds")
    assert ids["C"] not in feeds(lab, "B") and ids["B"] not in feeds(lab, "C")

    lab.set_link("B", "C", up=True)  # the partitions meet
    lab.wait_for(lambda: {ids["G"], ids["B"]} <= set(feeds(lab, "C"))
                 and ids["C"] in feeds(lab, "B"), 30, "ledgers exchanged after the merge")
    status = lab.request("C", "status")
    assert status["gateway"] is None  # no backhaul yet: G's line is down

    lab.set_line("G", "up")  # the gateway is back
    db = lab.hosts["G"].dir / "backhaul.sqlite"

    def backhaul_feeds() -> set[str]:
        store = SqliteStore(str(db))
        try:
            return {h.author.hex() for h in store.heads()}
        finally:
            store.close()

    lab.wait_for(lambda: set(ids.values()) <= backhaul_feeds(), 40,
                 "the backhaul holds all three feeds")
    # C synced through G over the mesh itself (not only by B or G carrying its feed).
    synced = lab.wait_for(lambda: [x for x in lab.logs("C") if x.get("event") == "ledger_synced"],
                          40, "C syncs through the gateway")
    assert synced[-1]["way"] == "mesh" and synced[-1]["state"] == "complete", lab.logs("C")
