"""A ring of 6 namespaces: a link cut (`ip link set down`) is repaired the other way round."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agent.lab import Lab, lab_available

SKIP = lab_available()
pytestmark = [pytest.mark.netns, pytest.mark.skipif(SKIP is not None, reason=SKIP or "")]
NAMES = [f"R{i}" for i in range(6)]


@pytest.fixture(scope="module")
def ring() -> Iterator[Lab]:
    lab = Lab()
    try:
        for name in NAMES:
            lab.add_host(name)
        for i, name in enumerate(NAMES):
            lab.link(name, NAMES[(i + 1) % len(NAMES)])
        for name in NAMES:
            lab.start_agent(name, hello_s=0.5)
        lab.wait_ready()
        for name in NAMES:
            lab.wait_neighbours(name, 2)
        yield lab
    finally:
        lab.close()


def test_link_cut_is_repaired_through_the_ring(ring: Lab) -> None:
    ids = {n: h.node_id for n, h in ring.hosts.items()}
    rtts = ring.request("R0", "ping", dest=ids["R2"], count=2, timeout=2.0)["rtt_ms"]
    assert None not in rtts
    route = {r["dest"]: r for r in ring.request("R0", "routes")}[ids["R2"]]
    assert (route["next_hop"], route["hops"]) == (ids["R1"], 2)

    ring.set_link("R0", "R1", up=False)
    ring.wait_for(lambda: [r for r in ring.request("R0", "ping", dest=ids["R2"], count=1,
                                                   timeout=0.5)["rtt_ms"] if r is not None],
                  15, "R0 reaches R2 again")
    route = {r["dest"]: r for r in ring.request("R0", "routes")}[ids["R2"]]
    assert (route["next_hop"], route["hops"]) == (ids["R5"], 4)
    # The repair may come first (R2's own search reaches R0 the other way round with a
    # fresher sequence number); R0 still notices R1 gone once its HELLOs stop.
    ring.wait_for(lambda: "neighbour_down" in [x.get("event") for x in ring.logs("R0")],
                  5, "R0 logs R1 down")
    ring.set_link("R0", "R1", up=True)
