"""Footprint and speed of real agent processes in network namespaces; prints JSON.

Measures (needs root, iproute2 and nftables):
- idle agent: resident memory, CPU share minute by minute over `--idle-s` seconds with
  several neighbours sending a HELLO every second (the headline figure leaves out the first
  minute, whose gateway-search back-off ramp is start-up work, reported on its own), start-up
  time (launch -> control socket answers, and the agent's own start-up time from its log);
- a chain of 5 hosts: route discovery time over 4 hops on a cold route (first ping minus a
  steady round trip), round trip over 4 hops (median), throughput of data over 4 hops with
  1200-byte payloads, unpaced and with a flow-control window;
- the same chain with 8000-byte payloads in 9000-byte datagrams, on 1500-byte veths (IP
  fragmentation) and on 9000-byte (jumbo) veths;
- a ring of 6 hosts: time to repair a route after a link silently stops carrying frames
  (an nftables drop on both ends, the interfaces stay up).

Usage: sudo .venv/bin/python benchmarks/agent_footprint.py [--idle-s 300] [--quick]
       sudo .venv/bin/python benchmarks/agent_footprint.py --idle-only --idle-s 600
"""

from __future__ import annotations

import argparse
import compileall
import itertools
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from agent.lab import Lab, lab_available
from agent.memory import SETTLE_AFTER_S

CLK_TCK = os.sysconf("SC_CLK_TCK")
WINDOW = 128
"""Payloads in flight at most in the flow-controlled runs (acknowledged every 16)."""
RFC_HOP_MS = 40.0
"""RFC 3561's NODE_TRAVERSAL_TIME, the cap of the measured hop time."""


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def idle(idle_s: float, neighbours: int) -> dict[str, Any]:
    with Lab() as lab:
        names = ["I0"] + [f"N{i}" for i in range(neighbours)]
        for name in names:
            lab.add_host(name)
        lab.bridge(names)
        starts = []
        for name in names[1:]:
            lab.start_agent(name, discovery=True, line_interval_s=5.0)
        lab.wait_ready(names[1:])
        t0 = time.monotonic()
        host = lab.start_agent("I0", discovery=True, line_interval_s=5.0)
        lab.wait_ready(["I0"], timeout_s=30)
        starts.append(time.monotonic() - t0)
        lab.wait_neighbours("I0", neighbours, timeout_s=15)
        assert host.proc is not None
        pid = host.proc.pid
        # Idle means after start-up: mDNS announcing and the memory settle (agent/memory.py).
        time.sleep(max(0.0, SETTLE_AFTER_S + 3.0 - (time.monotonic() - t0)))
        # Minute by minute: the first minute still has the gateway search's back-off ramp
        # (a line-less node asks after 5, 10, 20, 40 s, then every 60 s and the search).
        rss0 = rss_mb(pid)
        windows, left = [], idle_s
        while left > 0:
            span = min(60.0, left)
            c0, w0 = cpu_s(pid), time.monotonic()
            time.sleep(span)
            c1, w1 = cpu_s(pid), time.monotonic()
            windows.append((c1 - c0, w1 - w0))
            left -= span
        later = windows[1:] or windows
        own = [x for x in lab.logs("I0") if x.get("event") == "agent_started"]
        status = lab.request("I0", "status")
        return {
            "idle_rss_mb": round(rss_mb(pid), 1),
            "idle_rss_mb_at_window_start": round(rss0, 1),
            "idle_cpu_percent_of_core": round(
                100 * sum(c for c, _ in later) / sum(w for _, w in later), 3),
            "idle_cpu_percent_first_minute": round(100 * windows[0][0] / windows[0][1], 3),
            "idle_cpu_percent_per_minute": [round(100 * c / w, 3) for c, w in windows],
            "idle_window_s": round(sum(w for _, w in windows), 1),
            "idle_neighbours": status["neighbours"],
            "hello_interval_s": 1.0,
            "startup_to_control_socket_s": round(starts[0], 3),
            "startup_in_process_ms": float(own[0]["startup_ms"]) if own else None,
        }


def chain(count: int, size: int) -> dict[str, Any]:
    names = [f"C{i}" for i in range(5)]
    with Lab() as lab:
        for name in names:
            lab.add_host(name)
        for a, b in itertools.pairwise(names):
            lab.link(a, b)
        for name in names:
            lab.start_agent(name, line="up")  # gateways: no gateway searches
        lab.wait_ready()
        for name, n in zip(names, [1, 2, 2, 2, 1], strict=True):
            lab.wait_neighbours(name, n, timeout_s=15)
        dest = lab.hosts["C4"].node_id
        settle_s = settled_hop_time(lab, "C0")  # a mesh that has run for a while
        hop_ms = cold_route(lab, "C0", dest, settle_s=0.0)
        first = lab.request("C0", "ping", dest=dest, count=1, timeout=5.0)["rtt_ms"][0]
        rtts = [r for r in lab.request("C0", "ping", dest=dest, count=200,
                                       timeout=1.0)["rtt_ms"] if r is not None]
        rtt = statistics.median(rtts)
        burst = blast(lab, dest, 2000, size, 0.0)
        sustained = blast(lab, dest, count, size, 0.0, WINDOW)
        per_link = [lab.request(n, "status")["links"] for n in names[1:4]]  # the forwarders
        totals = {k: sum(link.get(k, 0) for links in per_link for link in links.values())
                  for k in ("tx", "tx_calls", "rx", "rx_calls")}
        return {
            "forwarders_frames_per_send_call": round(totals["tx"] / max(totals["tx_calls"], 1), 2),
            "forwarders_frames_per_read": round(totals["rx"] / max(totals["rx_calls"], 1), 2),
            "route_discovery_4_hops_ms": round(first - rtt, 2) if first else None,
            "first_ping_4_hops_ms": first,
            "hop_time_estimate_ms_at_discovery": hop_ms,
            "hop_time_estimate_settled_after_s": settle_s,
            "rtt_4_hops_ms_median": round(rtt, 3),
            "rtt_4_hops_ms_p90": round(sorted(rtts)[int(len(rtts) * 0.9)], 3),
            "throughput_burst_4_hops_mb_s": burst["mb_s"],
            "throughput_burst_packets": 2000,
            "throughput_burst_delivered_ratio": burst["delivered_ratio"],
            "throughput_windowed_4_hops_mb_s": sustained["mb_s"],
            "throughput_windowed_packets": count,
            "throughput_windowed_delivered_ratio": sustained["delivered_ratio"],
            "throughput_window_payloads": WINDOW,
            "throughput_payload_bytes": size,
            "throughput_udp_mtu": 1400,
        }


def chain_large(count: int, size: int, udp_mtu: int, veth_mtu: int) -> dict[str, Any]:
    """Throughput over 4 hops with `size`-byte payloads in `udp_mtu`-byte datagrams on
    veths of `veth_mtu` (below the datagram size the kernel fragments each into IP
    fragments, as it would on Ethernet or Wi-Fi at 1500)."""
    names = [f"L{i}" for i in range(5)]
    mesh = {"max_payload_bytes": size, "max_frame_bytes": udp_mtu,
            "max_reassembly_bytes": max(65536, 8 * udp_mtu)}
    with Lab() as lab:
        for name in names:
            lab.add_host(name)
        for a, b in itertools.pairwise(names):
            lab.link(a, b)
            lab.set_mtu(a, b, veth_mtu)
        for name in names:
            lab.start_agent(name, line="up", mesh=mesh, udp_mtu=udp_mtu)
        lab.wait_ready()
        for name, n in zip(names, [1, 2, 2, 2, 1], strict=True):
            lab.wait_neighbours(name, n, timeout_s=15)
        dest = lab.hosts["L4"].node_id
        lab.request("L0", "ping", dest=dest, count=3, timeout=2.0)
        burst = blast(lab, dest, count, size, 0.0, src="L0", dst="L4")
        windowed = blast(lab, dest, count, size, 0.0, WINDOW, src="L0", dst="L4")
        key = f"{size}b_udp_mtu_{udp_mtu}_veth_mtu_{veth_mtu}"
        return {f"throughput_burst_4_hops_mb_s_{key}": burst["mb_s"],
                f"throughput_burst_delivered_ratio_{key}": burst["delivered_ratio"],
                f"throughput_windowed_4_hops_mb_s_{key}": windowed["mb_s"],
                f"throughput_windowed_delivered_ratio_{key}": windowed["delivered_ratio"],
                f"throughput_packets_{key}": count}


def cold_route(lab: Lab, src: str, dest: str, settle_s: float = 8.0) -> float:
    """Wait until `src` has had `settle_s` to measure its links and no host holds a route to
    `dest` other than as a neighbour, so that the search must reach a neighbour of `dest`.

    Line-down nodes search for a gateway with flooded RREQs, which leave reverse routes to
    their originators everywhere: a ping right then would find the route already made. The
    hop-time estimate (from HELLO echoes) the search will wait by is returned.
    """
    time.sleep(settle_s)
    others = [n for n in lab.agents() if lab.hosts[n].node_id != dest]
    lab.wait_for(lambda: not any(r["dest"] == dest and r["valid"] and r["hops"] > 1
                                 for n in others for r in lab.request(n, "routes")),
                 90.0, f"no route to {dest} left", poll_s=0.01)
    return float(lab.request(src, "status")["node_traversal_ms"])


def settled_hop_time(lab: Lab, name: str, limit_s: float = 120.0) -> float:
    """Seconds until `name`'s hop-time estimate stops falling (three readings 5 s apart, so
    several echoes apart, within 10 % and below the RFC value it is capped at), at most
    `limit_s`. The estimator's
    first samples are taken while the neighbours are still starting (busy loops) and an end
    of a chain is echoed every other second, so it needs tens of seconds to come down."""
    t0 = time.monotonic()
    readings: list[float] = []
    while time.monotonic() - t0 < limit_s:
        readings.append(float(lab.request(name, "status")["node_traversal_ms"]))
        last = readings[-3:]
        if len(last) == 3 and max(last) <= 1.1 * min(last) and max(last) < RFC_HOP_MS:
            break
        time.sleep(5.0)
    return round(time.monotonic() - t0, 1)


def blast(lab: Lab, dest: str, count: int, size: int, rate: float, window: int = 0,
          src: str = "C0", dst: str = "C4") -> dict[str, Any]:
    """Send `count` payloads from src to dst at `rate` MB/s (0: unpaced), with a
    flow-control window of `window` payloads (0: none; agent/blast.py); goodput at dst."""
    lab.request(dst, "rx_reset")
    lab.request(src, "blast", dest=dest, count=count, size=size, batch=16, rate_mb_s=rate,
                window=window)
    time.sleep(1.0)
    after = lab.request(dst, "status")["app_rx"]
    got = after["packets"]
    window = after["last"] - after["first"]
    return {"mb_s": round(got * size / window / 1e6, 3) if window > 0 else None,
            "offered_mb_s": rate or None, "delivered_ratio": round(got / count, 3)}


def chain_flood_discovery() -> dict[str, Any]:
    """Route discovery over 4 hops with `ttl_start = net_diameter` (no expanding ring)."""
    names = [f"F{i}" for i in range(5)]
    with Lab() as lab:
        for name in names:
            lab.add_host(name)
        for a, b in itertools.pairwise(names):
            lab.link(a, b)
        for name in names:
            lab.start_agent(name, mesh={"ttl_start": 35})
        lab.wait_ready()
        for name, n in zip(names, [1, 2, 2, 2, 1], strict=True):
            lab.wait_neighbours(name, n, timeout_s=15)
        dest = lab.hosts["F4"].node_id
        cold_route(lab, "F0", dest)
        first = lab.request("F0", "ping", dest=dest, count=1, timeout=5.0)["rtt_ms"][0]
        rtts = [r for r in lab.request("F0", "ping", dest=dest, count=50,
                                       timeout=1.0)["rtt_ms"] if r is not None]
        return {"route_discovery_4_hops_ms_ttl_start_35":
                round(first - statistics.median(rtts), 2) if first else None}


def ring_repair() -> dict[str, Any]:
    names = [f"R{i}" for i in range(6)]
    with Lab() as lab:
        for name in names:
            lab.add_host(name)
        for i, name in enumerate(names):
            lab.link(name, names[(i + 1) % 6])
        for name in names:
            lab.start_agent(name)
        lab.wait_ready()
        for name in names:
            lab.wait_neighbours(name, 2, timeout_s=15)
        dest = lab.hosts["R2"].node_id
        assert None not in lab.request("R0", "ping", dest=dest, count=3, timeout=2.0)["rtt_ms"]
        ia, ib = lab.links[("R0", "R1")]
        lab.drop("R0", ia, 100)
        lab.drop("R1", ib, 100)
        cut = time.monotonic()
        repaired = None
        while time.monotonic() - cut < 30:
            if lab.request("R0", "ping", dest=dest, count=1, timeout=0.05)["rtt_ms"][0]:
                repaired = time.monotonic() - cut
                break
        route = {r["dest"]: r for r in lab.request("R0", "routes")}.get(dest, {})
        return {"repair_after_silent_loss_s": round(repaired, 3) if repaired else None,
                "repaired_route_hops": route.get("hops"),
                "hello_interval_s": 1.0, "allowed_hello_loss": 2}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle-s", type=float, default=300.0,
                        help="idle watch; the CPU share is over the minutes after the first")
    parser.add_argument("--neighbours", type=int, default=4)
    parser.add_argument("--count", type=int, default=20000, help="payloads in the throughput run")
    parser.add_argument("--size", type=int, default=1200, help="payload bytes")
    parser.add_argument("--quick", action="store_true", help="10 s idle, 2000 payloads")
    parser.add_argument("--idle-only", action="store_true",
                        help="only the idle agent (e.g. --idle-s 600 to watch memory)")
    args = parser.parse_args()
    why = lab_available()
    if why is not None:
        print(json.dumps({"error": why}))
        return 1
    if args.quick:
        args.idle_s, args.count = 10.0, 2000
    # Bytecode as an installed package has it (pip compiles on install): without it every
    # agent compiles its sources at start-up, and that figure would not be a device's.
    root = Path(__file__).resolve().parents[1]
    for package in ("agent", "mesh", "ledger"):
        compileall.compile_dir(root / package, quiet=1)
    result: dict[str, Any] = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.python_version()}",
    }
    result.update(idle(args.idle_s, args.neighbours))
    if args.idle_only:
        print(json.dumps(result, indent=2))
        return 0
    result.update(chain(args.count, args.size))
    large = args.count // 4
    result.update(chain_large(large, 8000, 9000, 1500))  # IP fragments on 1500-byte links
    result.update(chain_large(large, 8000, 9000, 9000))  # jumbo frames (wired / veth)
    result.update(chain_flood_discovery())
    result.update(ring_repair())
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
