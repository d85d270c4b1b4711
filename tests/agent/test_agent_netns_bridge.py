"""A shared segment (a bridge) of three agents, plus an IPv6-only pair.

Shows zeroconf discovery across the bridge (with the line status in TXT records, updated
when it changes), a gateway losing its line and backhaul traffic moving to the other one,
and the UDP transport over IPv6 link-local multicast and unicast.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agent.lab import Lab, lab_available

SKIP = lab_available()
pytestmark = [pytest.mark.netns, pytest.mark.skipif(SKIP is not None, reason=SKIP or "")]


@pytest.fixture(scope="module")
def segment() -> Iterator[Lab]:
    lab = Lab()
    try:
        for name in ("U", "G1", "G2", "V1", "V2"):
            lab.add_host(name)
        lab.bridge(["U", "G1", "G2"])
        lab.link("V1", "V2")
        lab.start_agent("U", hello_s=0.5, discovery=True)
        lab.start_agent("G1", hello_s=0.5, discovery=True, line="up")
        lab.start_agent("G2", hello_s=0.5, discovery=True, line="up")
        lab.start_agent("V1", hello_s=0.5, family="ipv6")
        lab.start_agent("V2", hello_s=0.5, family="ipv6")
        lab.wait_ready()
        for name in ("U", "G1", "G2"):
            lab.wait_neighbours(name, 2)
        yield lab
    finally:
        lab.close()


def test_zeroconf_discovers_peers_and_their_line_status(segment: Lab) -> None:
    ids = {n: h.node_id for n, h in segment.hosts.items()}
    peers = segment.wait_for(
        lambda: (p := segment.request("U", "peers")) and len(p) == 2 and p, 20,
        "U discovers G1 and G2 by mDNS")
    by_id = {p["node_id"]: p for p in peers}
    assert set(by_id) == {ids["G1"], ids["G2"]}
    assert all(p["gateway"] and p["line_up"] for p in peers)
    assert by_id[ids["G1"]]["name"] == "G1"
    assert by_id[ids["G1"]]["addresses"][0].startswith("10.77.")
    seen_by_g1 = segment.wait_for(
        lambda: {p["node_id"]: p for p in segment.request("G1", "peers")}.get(ids["U"]), 20,
        "G1 discovers U")
    assert not seen_by_g1["gateway"]


def test_gateway_loses_line_and_traffic_moves(segment: Lab) -> None:
    ids = {n: h.node_id for n, h in segment.hosts.items()}
    status = segment.wait_for(lambda: (s := segment.request("U", "status"))["gateway"] and s,
                              10, "U picks a gateway")
    first = status["gateway"]["node"]
    name = {v: k for k, v in ids.items()}[first]
    other = "G2" if name == "G1" else "G1"
    segment.request("U", "send", dest="backhaul", text="via first")
    got = segment.wait_for(lambda: segment.request(name, "inbox"), 10, "first gateway gets it")
    assert got[-1]["backhaul"] and got[-1]["source"] == ids["U"]

    segment.set_line(name, "down")
    segment.wait_for(lambda: (s := segment.request("U", "status"))["gateway"]
                     and s["gateway"]["node"] == ids[other], 10, "U switches gateway")
    segment.request("U", "send", dest="backhaul", text="via second")
    got = segment.wait_for(lambda: segment.request(other, "inbox"), 10, "other gateway gets it")
    assert bytes.fromhex(got[-1]["payload_hex"]) == b"via second"
    # The TXT record follows the line: U's zeroconf view of the first gateway says so.
    segment.wait_for(
        lambda: not {p["node_id"]: p for p in segment.request("U", "peers")}[first]["gateway"],
        10, "TXT record updated")


def test_udp_over_ipv6_link_local(segment: Lab) -> None:
    segment.wait_for(lambda: segment.request("V1", "status")["neighbours"] == 1, 10,
                     "V1 hears V2 over IPv6")
    neighbour = segment.request("V1", "neighbours")[0]
    assert neighbour["link"].startswith("fe80:")
    rtts = segment.request("V1", "ping", dest=segment.hosts["V2"].node_id, count=3,
                           timeout=2.0)["rtt_ms"]
    assert None not in rtts
