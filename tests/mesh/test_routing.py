"""AODV behaviour on hand-built topologies, driven in virtual time through mesh.linkgraph."""

from mesh import events as ev
from mesh import frames as fr
from mesh.config import MeshConfig
from mesh.line import LineStatus
from mesh.linkgraph import LinkGraph

GW = LineStatus(True, "lte", -85, True, 60)
ALL_LINES = {i: GW for i in range(16)}
FAST = MeshConfig(min_node_traversal_s=0.002, broadcast_jitter_s=0.002)
"""Ring searches may follow measured hop times (quiet fast links, IP's 2 ms jitter)."""
"""Every node has a line: no gateway searches, so routing tests see only their own floods."""


def rreqs_from(net: LinkGraph, i: int) -> list[fr.Control]:
    out = []
    for _, src, tx in net.sent:
        if src == i and tx.kind == "rreq":
            f = fr.decode(tx.data)
            assert isinstance(f, fr.Control)
            if f.body.origin_pk == net.nodes[i].identity.public_key:
                out.append(f)
    return out


def delivered(net: LinkGraph, i: int) -> list[bytes]:
    return [e.payload for e in net.of_type(i, ev.DataReceived)]


def test_chain_route_hop_counts_and_expanding_ring() -> None:
    # Every node has a line, so nobody floods gateway searches that would leave routes behind.
    net = LinkGraph.chain(10, seed=1, lines={i: GW for i in range(10)})
    net.run(2.5)
    assert [len(n.neighbours()) for n in net.nodes] == [1] + [2] * 8 + [1]
    start = len(rreqs_from(net, 0))
    net.send(0, net.id(9), b"to the end")
    net.run(6.0)
    assert delivered(net, 9) == [b"to the end"]
    assert net.nodes[0].route_to(net.id(9)).hops == 9
    assert net.nodes[9].route_to(net.id(0)).hops == 9  # reverse route from the RREQ
    assert net.of_type(9, ev.DataReceived)[0].hops == 9
    ttls = [f.ttl for f in rreqs_from(net, 0)[start:] if f.body.dest == net.id(9)]
    assert ttls == [1, 3, 5, 7, 35]  # TTL_START, +TTL_INCREMENT up to THRESHOLD, NET_DIAMETER
    for i in range(1, 9):
        assert net.nodes[i].route_to(net.id(9)).hops == 9 - i


def test_grid_and_ring_shortest_routes() -> None:
    grid = LinkGraph.grid(4, 4, seed=2)
    grid.run(2.5)
    grid.send(0, grid.id(15), b"corner")
    grid.run(5.0)
    assert delivered(grid, 15) == [b"corner"]
    assert grid.nodes[0].route_to(grid.id(15)).hops == 6
    ring = LinkGraph.ring(8, seed=3)
    ring.run(2.5)
    ring.send(0, ring.id(6), b"short way round")
    ring.run(5.0)
    assert ring.nodes[0].route_to(ring.id(6)).hops == 2
    assert ring.nodes[0].route_to(ring.id(6)).next_hop == ring.id(7)


def test_break_repaired_by_rerr_and_rediscovery() -> None:
    net = LinkGraph.ring(6, seed=4, lines=ALL_LINES)  # 0-1-2-3-4-5-0
    net.run(2.5)
    net.send(0, net.id(2), b"first")
    net.run(4.0)
    assert net.nodes[0].route_to(net.id(2)).next_hop == net.id(1)
    net.cut(1, 2)
    # Node 1 notices by HELLO loss, invalidates and sends RERR to its precursor (node 0).
    net.run(7.0)
    assert any(e.dest == net.id(2) for e in net.of_type(0, ev.RouteBroken))
    assert net.nodes[1].stats["tx_rerr"] >= 1 and net.nodes[0].stats["rx_rerr"] >= 1
    net.send(0, net.id(2), b"second")
    net.run(10.0)
    assert delivered(net, 2) == [b"first", b"second"]
    route = net.nodes[0].route_to(net.id(2))
    assert route.hops == 4 and route.next_hop == net.id(5)


def test_intermediate_node_replies_with_fresh_route_and_gratuitous_rrep() -> None:
    net = LinkGraph.chain(5, seed=5, lines=ALL_LINES)
    net.run(2.5)
    net.send(1, net.id(4), b"warm up")  # node 1 learns a fresh route to 4
    net.run(4.0)
    assert net.nodes[1].route_to(net.id(4)) is not None
    net.send(0, net.id(4), b"via cache")
    net.run(4.5)
    assert net.nodes[1].stats["rrep_intermediate"] == 1
    assert delivered(net, 4) == [b"warm up", b"via cache"]
    # Node 4 learned node 0's key and route from the gratuitous RREP, so it can answer.
    assert net.nodes[4].route_to(net.id(0)) is not None
    net.send(4, net.id(0), b"reply")
    net.run(5.0)
    assert delivered(net, 0) == [b"reply"]


def test_one_way_link_is_blacklisted() -> None:
    # 0 hears 1 but 1 does not hear 0; 0 also reaches 1's far side through 2.
    net = LinkGraph(4, seed=6, lines=ALL_LINES)
    net.connect(1, 0, one_way=True)
    net.line([(0, 2), (2, 3), (3, 1)])
    net.run(2.5)
    net.send(1, net.id(0), b"x")  # 1 floods; 0 hears it directly and replies over the dead way
    net.run(6.0)
    assert net.nodes[0].stats["blacklisted"] == 1  # no RREP-ACK from 1 within NEXT_HOP_WAIT
    assert net.nodes[0].stats["drop_blacklisted"] == 1  # 1's retry is ignored on the dead way
    assert delivered(net, 0) == [b"x"]  # still delivered: the reply also went round via 2, 3
    assert net.nodes[1].route_to(net.id(0)).hops == 3


def test_buffer_limits_and_timeouts_are_counted() -> None:
    cfg = MeshConfig(max_buffered_packets=5, max_buffered_per_dest=3)
    net = LinkGraph(2, seed=7, config=cfg)  # no links: discovery must fail
    for i in range(4):
        net.send(0, net.id(1), bytes([i]))
    assert net.nodes[0].stats["drop_buffer_full"] == 1
    net.run(60.0)
    stats = net.nodes[0].stats
    assert stats["drop_buffer_timeout"] + stats["drop_no_route_found"] == 3
    failed = net.of_type(0, ev.RouteDiscoveryFailed)
    assert failed and failed[0].dest == net.id(1)


def test_gateway_discovery_and_switch_over() -> None:
    # 0 - 1 - 2 - 3(gw A)   and   0 - 4 - 5 - 6 - 7(gw B, farther)
    net = LinkGraph(8, seed=8, lines={3: GW, 7: GW})
    net.line([(0, 1), (1, 2), (2, 3), (0, 4), (4, 5), (5, 6), (6, 7)])
    net.run(3.0)
    changes = net.of_type(0, ev.GatewayChanged)
    assert changes and changes[-1].new == net.id(3) and changes[-1].hops == 3
    net.send(0, fr.BACKHAUL, b"up")
    net.run(3.5)
    assert [e.payload for e in net.of_type(3, ev.BackhaulData)] == [b"up"]
    net.set_line(3, LineStatus(False, "lte", -120, False, 0))  # gateway A loses its line
    net.run(8.0)
    last = net.of_type(0, ev.GatewayChanged)[-1]
    assert last.new == net.id(7) and last.hops == 4
    net.send(0, fr.BACKHAUL, b"up again")
    net.run(9.0)
    assert [e.payload for e in net.of_type(7, ev.BackhaulData)] == [b"up again"]
    assert any(isinstance(e, ev.LineStatusChanged) for e in net.events[3])


def test_neighbour_events_and_line_change_announced_at_once() -> None:
    net = LinkGraph.chain(2, seed=9, lines={1: GW})
    net.run(2.5)
    assert [e.node for e in net.of_type(0, ev.NeighbourUp)] == [net.id(1)]
    assert net.of_type(0, ev.ManetJoined)
    hellos_before = net.nodes[1].stats["tx_hello"]
    net.set_line(1, LineStatus())
    assert net.nodes[1].stats["tx_hello"] == hellos_before + 1  # not waiting for the timer
    net.run(net.now + 0.01)
    changed = net.of_type(0, ev.NeighbourLineChanged)
    assert changed and not changed[-1].new.is_gateway
    net.cut(0, 1)
    net.run(net.now + 3.0)
    assert [e.node for e in net.of_type(0, ev.NeighbourDown)] == [net.id(1)]
    assert net.of_type(0, ev.ManetLeft)


def test_data_ttl_and_no_route_drops_counted() -> None:
    net = LinkGraph.chain(4, seed=10, config=MeshConfig(data_ttl=2))
    net.run(2.5)
    net.send(0, net.id(3), b"too far")
    net.run(5.0)
    assert delivered(net, 3) == []
    assert sum(n.stats["drop_data_ttl"] for n in net.nodes) == 1


def test_gateway_route_is_refreshed_before_it_expires() -> None:
    net = LinkGraph(4, seed=11, lines={3: GW})
    net.line([(0, 1), (1, 2), (2, 3)])
    net.run(95.0)  # three gateway-route lifetimes (30 s each) with no traffic
    changes = net.of_type(0, ev.GatewayChanged)
    assert len(changes) == 1 and changes[0].new == net.id(3)  # never lost, never re-found
    assert net.nodes[0].stats["gateway_refreshes"] >= 3
    assert net.nodes[0].gateway is not None and net.nodes[0].gateway.hops == 3


def test_link_quality_tracks_hello_loss() -> None:
    net = LinkGraph(3, seed=12, lines=ALL_LINES)
    net.line([(0, 1), (0, 2)])
    heard = [0]

    def lossy(src: int, dst: int, tx: object) -> bool:
        if (src, dst) != (2, 0):
            return False
        heard[0] += 1
        return heard[0] % 2 == 0  # every other frame from 2 to 0 is lost

    net.loss = lossy
    net.run(30.0)
    quality = {n.node: n.quality for n in net.nodes[0].neighbours()}
    assert quality[net.id(1)] > 0.95
    assert 0.3 < quality[net.id(2)] < 0.8


def test_rreq_rate_limit() -> None:
    net = LinkGraph.chain(2, seed=13, lines=ALL_LINES)
    net.run(2.5)
    for k in range(30):  # thirty unknown destinations at once
        net.send(0, bytes([k]) * 8, b"?")
    net.run(3.499)
    limit = MeshConfig().rreq_ratelimit
    sent = [t for t, src, tx in net.sent if src == 0 and tx.kind == "rreq" and t >= 2.5]
    assert len(sent) == limit  # RREQ_RATELIMIT per second
    assert net.nodes[0].stats["rreq_ratelimited"] >= 20
    net.run(20.0)  # the postponed discoveries go out later, never more than the limit a second
    sent = [t for t, src, tx in net.sent if src == 0 and tx.kind == "rreq"]
    assert len(sent) > 3 * limit
    assert all(sum(1 for u in sent if t - 1.0 < u <= t) <= limit for t in sent)


def test_same_seed_same_frames() -> None:
    def run() -> list[tuple[float, int, bytes]]:
        net = LinkGraph.grid(3, 3, seed=14, lines={8: GW})
        net.run(3.0)
        net.send(0, fr.BACKHAUL, b"det")
        net.run(6.0)
        return [(t, i, tx.data) for t, i, tx in net.sent]

    assert run() == run()


def test_flapping_links_do_not_pile_up_timers() -> None:
    net = LinkGraph.chain(3, seed=15, lines=ALL_LINES)
    net.run(2.5)
    for cycle in range(40):  # the middle link comes and goes, with traffic across it
        net.cut(1, 2)
        net.run(net.now + 3.0)
        net.connect(1, 2)
        net.run(net.now + 1.5)
        net.send(0, net.id(2), b"%d" % cycle)
        net.run(net.now + 1.5)
    # One timer per route and neighbour plus a few: earlier code grew by ~4 per flap.
    assert max(n.pending_timers for n in net.nodes) <= 12
    assert len(delivered(net, 2)) >= 35


def test_gateway_coming_back_far_away_is_found_without_waiting_for_backoff() -> None:
    net = LinkGraph.chain(4, seed=16)  # nobody has a line: searches fail and back off
    net.run(120.0)
    assert not net.of_type(0, ev.GatewayChanged)
    net.set_line(3, GW)  # node 3's line returns, three hops from node 0
    start = net.now
    net.run(start + 5.0)
    found = [e for e in net.of_type(0, ev.GatewayChanged) if e.new == net.id(3)]
    assert found and found[0].time - start < 1.5  # triggered HELLOs, not a 60 s retry


def test_discovery_waits_follow_measured_hop_times() -> None:
    net = LinkGraph.chain(5, seed=17, lines=ALL_LINES, delay_s=0.001,
                          config=FAST)
    assert net.nodes[0].node_traversal_s == MeshConfig().node_traversal_s  # RFC's 40 ms
    net.run(10.0)  # HELLO echoes measure 2 ms round trips
    assert 0.002 <= net.nodes[0].node_traversal_s < 0.005
    net.send(0, net.id(4), b"four hops")
    net.run(11.0)
    stats = net.nodes[0].stats
    assert stats["route_discoveries_ok"] == 1
    assert stats["route_discovery_ms_total"] < 60  # was ~650 ms with RFC timing
    assert delivered(net, 4) == [b"four hops"]


def test_hello_echo_confirms_links_so_rrep_acks_are_spared() -> None:
    net = LinkGraph.chain(4, seed=18, lines=ALL_LINES)
    net.run(10.0)
    net.send(0, net.id(3), b"x")
    net.run(12.0)
    assert delivered(net, 3) == [b"x"]
    assert sum(n.stats["tx_rrep_ack"] for n in net.nodes) == 0


def test_gateway_search_asks_one_neighbour_not_all() -> None:
    # Neighbours 1-5 of node 0 all reach gateway 6 in one hop; then node 0 loses its line.
    net = LinkGraph(7, seed=19, lines={0: GW, 6: GW})
    for i in range(1, 6):
        net.connect(0, i)
        net.connect(i, 6)
    net.run(5.0)
    start = len(net.sent)
    net.set_line(0, LineStatus())
    net.run(8.0)
    gateway = net.nodes[0].gateway
    assert gateway is not None and gateway.node == net.id(6) and gateway.hops == 2
    assert net.nodes[0].stats["rreq_unicast_gateway"] == 1
    answers = []
    for _, _, tx in net.sent[start:]:
        frame = fr.decode(tx.data)
        if (isinstance(frame, fr.Control) and isinstance(frame.body, fr.Rrep)
                and frame.body.requester == net.id(0)):
            answers.append(frame)
    assert len(answers) == 1  # one answer, not one per neighbour with a gateway route


def test_new_neighbours_measure_their_link_at_once() -> None:
    net = LinkGraph.chain(5, seed=20, lines=ALL_LINES, delay_s=0.001,
                          config=FAST)
    net.run(1.2)  # about one HELLO each: neighbours just discovered
    assert all(len(n.neighbours()) >= 1 for n in net.nodes)
    assert all(n.node_traversal_s < 0.005 for n in net.nodes)  # triggered HELLOs echoed
    net.send(0, net.id(4), b"cold start")
    net.run(1.5)
    # One sample each, taken as highly variable: waits of 24 + 40 ms, then the answer.
    assert net.nodes[0].stats["route_discovery_ms_total"] < 100  # RFC timing: ~650 ms
    assert delivered(net, 4) == [b"cold start"]


def test_route_learned_by_forwarding_still_reaches_a_destination_that_never_saw_us() -> None:
    # 0 forwards the RREP that answers 1's search for 3, and so learns a route to 3 without 3
    # ever hearing of 0; 0's sealed data must still open at 3.
    net = LinkGraph(4, seed=21, lines=ALL_LINES)
    net.line([(1, 0), (0, 2), (2, 3)])
    net.run(2.5)
    net.send(1, net.id(3), b"from 1")
    net.run(4.0)
    assert net.nodes[0].route_to(net.id(3)) is not None  # learned as a forwarder
    net.send(0, net.id(3), b"from 0")
    net.run(4.5)
    assert [e.payload for e in net.of_type(3, ev.DataReceived)] == [b"from 1", b"from 0"]
    assert net.nodes[3].stats["drop_unknown_origin_key"] == 0
    assert net.nodes[0].stats["rrep_introductions"] == 1


def test_a_slow_start_up_echo_does_not_hold_hop_times_high() -> None:
    # The first echoes cross busy, just-started neighbours (20 ms a link); later ones 0.5 ms.
    net = LinkGraph.chain(3, seed=21, lines=ALL_LINES, delay_s=0.020, config=FAST)
    net.run(1.5)
    assert all(n.node_traversal_s > 0.015 for n in net.nodes)
    net.delay_s = 0.0005
    net.run(6.0)  # a few more echoes each, within the first FIRST_HOP_SAMPLES
    assert all(n.node_traversal_s < 0.005 for n in net.nodes)  # smoothing alone: ~15 ms


def test_forwarder_without_route_tells_the_previous_hop() -> None:
    # Node 1 gets data from node 0 for a destination it has no route to: the RERR must go
    # back to node 0 (it went to node 1 itself, was dropped as no_link, and node 0 kept
    # sending into the hole for ever).
    net = LinkGraph.chain(3, seed=11, lines=ALL_LINES)
    net.run(2.5)
    unknown = bytes(range(8))
    frame = fr.Data(net.id(0), net.id(0), unknown, 1, 10, 0, 0, b"sealed")
    net.inject(1, fr.encode_data(frame), from_link=0)
    net.run(3.0)
    stats = net.nodes[1].stats
    assert stats["drop_no_route"] == 1 and stats["drop_no_link"] == 0
    assert stats["tx_rerr"] == 1 and net.nodes[0].stats["rx_rerr"] == 1


def test_a_node_is_woken_for_hellos_not_for_refreshed_neighbours() -> None:
    # Node 0 hears ten neighbours' HELLOs every second; each refreshes a neighbour entry and
    # its direct route. get_timer settles those entries, so node 0 wakes about once per
    # HELLO of its own (it used to wake about twenty times a second to find nothing due).
    net = LinkGraph(11, seed=21, lines=ALL_LINES)
    for k in range(1, 11):
        net.connect(0, k)
    hub = net.nodes[0]
    net.run(30.0)
    assert len(hub.neighbours()) == 10
    hellos = hub.stats["tx_hello"]
    assert 28 <= hellos <= 36
    assert net.wakes[0] <= hellos + 5
    # A neighbour that falls silent is still declared down on time.
    cut_at = net.now
    net.cut(5, 0)
    net.run(cut_at + 4.0)
    [down] = net.of_type(0, ev.NeighbourDown)
    assert down.node == net.id(5) and down.reason == "hello timeout"
    assert cut_at + 1.0 <= down.time <= cut_at + 2.0 + 1e-9
    route = hub.route_to(net.id(5))
    assert route is None


def test_one_timer_entry_per_neighbour_and_its_direct_route() -> None:
    # The direct route to a neighbour needs no entry of its own while the neighbour is heard:
    # the neighbour's entry breaks the link first. Ten neighbours, ten entries plus HELLO.
    net = LinkGraph(11, seed=21, lines=ALL_LINES)
    for k in range(1, 11):
        net.connect(0, k)
    net.run(10.0)
    hub = net.nodes[0]
    assert hub.pending_timers <= 12  # it was 21: a second entry per direct route
    # A neighbour falls silent: its idle direct route expires, and nobody is told (no RERR).
    cut_at = net.now
    net.cut(5, 0)
    net.run(cut_at + 4.0)
    [down] = net.of_type(0, ev.NeighbourDown)
    assert down.node == net.id(5) and down.time <= cut_at + 2.0 + 1e-9
    [broken] = [e for e in net.of_type(0, ev.RouteBroken) if e.dest == net.id(5)]
    assert broken.reason == "expired" and hub.stats["tx_rerr"] == 0
    assert hub.route_to(net.id(5)) is None


def test_rreq_rebroadcasts_are_dropped_where_neighbours_covered_them() -> None:
    # 1..6 all hear each other and 0; 7 hears 1..6 but not 0. When 0 searches for 7, each of
    # 1..6 waits its jitter before rebroadcasting; those that heard three copies meanwhile
    # drop theirs: 7 is reached anyway.
    net = LinkGraph(8, seed=23, lines=ALL_LINES, delay_s=0.0005)
    for a in range(7):
        for b in range(a + 1, 7):
            net.connect(a, b)
    for a in range(1, 7):
        net.connect(a, 7)
    net.run(3.0)
    net.send(0, net.id(7), b"two hops")
    net.run(6.0)
    assert delivered(net, 7) == [b"two hops"]
    suppressed = sum(n.stats["rreq_suppressed"] for n in net.nodes)
    forwarded = sum(n.stats["rreq_forwarded"] for n in net.nodes)
    assert suppressed >= 1 and forwarded >= 3
    # On a chain nobody hears a copy before its own turn: every hop rebroadcasts.
    chain = LinkGraph.chain(5, seed=23, lines=ALL_LINES)
    chain.run(3.0)
    chain.send(0, chain.id(4), b"four hops")
    chain.run(8.0)
    assert delivered(chain, 4) == [b"four hops"]
    assert sum(n.stats["rreq_suppressed"] for n in chain.nodes) == 0
    assert sum(n.stats["rreq_forwarded"] for n in chain.nodes) >= 3
