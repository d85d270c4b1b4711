"""A readable walk through the mesh core: a line, a grid, a break and its repair, a gateway.

    python -m mesh.demo

Everything runs in virtual time through mesh.linkgraph (no sockets, no radio model): the same
core objects the agent and the simulator drive.
"""

from __future__ import annotations

from mesh import events as ev
from mesh.frames import BACKHAUL
from mesh.line import LineStatus
from mesh.linkgraph import LinkGraph

LTE = LineStatus(True, "lte", -90, True, 80)


def names(net: LinkGraph) -> dict[bytes, str]:
    return {node.id: f"n{i}" for i, node in enumerate(net.nodes)}


def show(net: LinkGraph, title: str, since: list[int], kinds: tuple[type, ...]) -> None:
    label = names(net)

    def nm(value: bytes | None) -> str:
        return "-" if value is None else label.get(value, value.hex())

    print(f"\n== {title}")
    lines: list[tuple[float, int, str]] = []
    for i, evs in enumerate(net.events):
        for e in evs[since[i]:]:
            if not isinstance(e, kinds):
                continue
            if isinstance(e, ev.RouteAdded):
                text = f"route to {nm(e.dest)} via {nm(e.next_hop)}, {e.hops} hops, seq {e.seq}"
            elif isinstance(e, ev.RouteBroken):
                text = f"route to {nm(e.dest)} via {nm(e.next_hop)} broken ({e.reason})"
            elif isinstance(e, ev.DataReceived):
                text = f"got {e.payload!r} from {nm(e.source)} over {e.hops} hops"
            elif isinstance(e, ev.BackhaulData):
                text = f"gateway: {e.payload!r} from {nm(e.source)} goes up the line"
            elif isinstance(e, ev.GatewayChanged):
                text = (f"gateway {nm(e.old)} -> {nm(e.new)} via {nm(e.next_hop)}, {e.hops} hops"
                        f" ({e.reason})")
            elif isinstance(e, ev.NeighbourDown):
                text = f"neighbour {nm(e.node)} down ({e.reason})"
            elif isinstance(e, ev.LineStatusChanged):
                text = f"own line {'up' if e.new.is_gateway else 'DOWN'}, announced at once"
            else:
                text = repr(e)
            lines.append((e.time, i, text))
        since[i] = len(evs)
    for when, i, text in sorted(lines):
        print(f"  t={when:7.3f}s  n{i:<2} {text}")


def mark(net: LinkGraph) -> list[int]:
    return [len(e) for e in net.events]


def main() -> None:
    print("Mesh core demo: signed AODV in virtual time (python -m mesh.demo)")
    lines = {i: LTE for i in range(10)}  # everyone has a line: pure routing first
    net = LinkGraph.chain(10, seed=1, lines=lines)
    net.run(2.5)
    since = mark(net)
    net.send(0, net.id(9), b"hello n9")
    net.run(6.0)
    show(net, "10 nodes on a line: n0 finds n9 (expanding ring search)", since,
         (ev.DataReceived,))
    r = net.nodes[0].route_to(net.id(9))
    assert r is not None
    print(f"  n0's route to n9: {r.hops} hops; route discoveries by n0: "
          f"{net.nodes[0].stats['route_discoveries']}, RREQs sent: {net.nodes[0].stats['tx_rreq']}")

    grid = LinkGraph.grid(5, 2, seed=2, lines=lines)
    grid.run(2.5)
    since = mark(grid)
    grid.send(0, grid.id(9), b"corner to corner")
    grid.run(6.0)
    show(grid, "a 5x2 grid: n0 to n9", since, (ev.DataReceived,))
    rg = grid.nodes[0].route_to(grid.id(9))
    assert rg is not None
    print(f"  route n0 -> n9: {rg.hops} hops via {names(grid)[rg.next_hop]}")
    grid.cut(1, 2)
    grid.cut(6, 7)
    since = mark(grid)
    grid.run(10.0)
    show(grid, "links n1-n2 and n6-n7 cut: HELLO loss, RERR to precursors", since,
         (ev.RouteBroken, ev.NeighbourDown))
    since = mark(grid)
    grid.connect(6, 7)
    grid.run(12.0)
    grid.send(0, grid.id(9), b"after the repair")
    grid.run(16.0)
    show(grid, "n6-n7 back: n0 rediscovers and delivers", since, (ev.DataReceived,))

    print("\n== gateways: n3 and n7 have mobile lines, the others lost theirs")
    gws = LinkGraph(8, seed=3, lines={3: LTE, 7: LTE})
    gws.line([(0, 1), (1, 2), (2, 3), (0, 4), (4, 5), (5, 6), (6, 7)])
    since = [0] * 8
    gws.run(3.0)
    gws.send(0, BACKHAUL, b"status report")
    gws.run(3.5)
    show(gws, "n0 finds the nearest gateway and sends to the backhaul", since,
         (ev.GatewayChanged, ev.BackhaulData))
    gws.set_line(3, LineStatus(False, "lte", -125, False, 0))
    gws.run(8.0)
    gws.send(0, BACKHAUL, b"status report 2")
    gws.run(9.0)
    show(gws, "n3 loses its line: RERR(gateway lost), n0 switches to n7", since,
         (ev.GatewayChanged, ev.BackhaulData, ev.LineStatusChanged))
    total = sum(sum(v for k, v in n.stats.items() if k.startswith("drop_")) for n in gws.nodes)
    print(f"\nframes sent in the gateway scenario: {len(gws.sent)}; drops (all reasons): {total}")


if __name__ == "__main__":
    main()
