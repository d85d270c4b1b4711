"""Unit tests of the agent's pieces that need no namespaces: CLI, logs, driver, line
monitor, metrics, control socket, state file."""

from __future__ import annotations

import asyncio
import io
import json
import os
import random
import stat
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, cast

import pytest

from agent import cli
from agent.config import LineSection
from agent.control import ControlError, ControlServer, request
from agent.driver import CoreDriver
from agent.line_monitor import (
    LineMonitor,
    LineSourceError,
    line_from_modem,
    parse_line_text,
    tcp_probe,
)
from agent.logs import NodeLogger, setup_logging
from agent.metrics import MetricsServer, Snapshot, render
from agent.state import AgentState, StateError
from mesh import events as ev
from mesh.config import WIFI, MeshConfig
from mesh.identity import Identity
from mesh.line import LINE_DOWN, LineStatus
from mesh.node import MeshNode

# ----------------------------------------------------------------------------- CLI


def test_unknown_flag_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["status", "--colour"])
    assert info.value.code == 2
    assert "unrecognized arguments: --colour" in capsys.readouterr().err


def test_keygen_writes_private_key_and_refuses_to_overwrite(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "keys" / "node.key"
    assert cli.main(["keygen", "--out", str(key)]) == 0
    node_id = capsys.readouterr().out.strip()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert Identity.load(key).node_id.hex() == node_id
    assert cli.main(["keygen", "--out", str(key)]) == 1
    assert "exists" in capsys.readouterr().err
    assert cli.main(["keygen", "--out", str(key), "--force"]) == 0
    assert capsys.readouterr().out.strip() != node_id


def test_bad_config_exits_2_naming_the_key(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('[udp]\ninterface = "eth0"\nprot = 1\n')
    assert cli.main(["check-config", "--config", str(config)]) == 2
    assert "udp[0].prot: unknown key" in capsys.readouterr().err


def test_status_without_agent_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["status", "--socket", str(tmp_path / "none.sock")]) == 1
    assert "no agent answers" in capsys.readouterr().err


# ----------------------------------------------------------------------------- logs


def test_log_lines_carry_node_id_and_fields() -> None:
    stream = io.StringIO()
    logger = setup_logging("debug", "logfmt", stream=stream)
    log = NodeLogger("00aa11bb22cc33dd", logger)
    log.event("route_added", dest="ffee", hops=3, note="two words")
    log.debug("probe", node="clash")
    lines = stream.getvalue().splitlines()
    assert lines[0] == ('level=info node=00aa11bb22cc33dd event=route_added dest=ffee hops=3 '
                        'note="two words"')
    assert lines[1] == "level=debug node=00aa11bb22cc33dd event=probe field_node=clash"
    stream = io.StringIO()
    log = NodeLogger("00aa11bb22cc33dd", setup_logging("info", "json", stream=stream))
    log.event("line_observed", line=b"\x01")
    log.debug("hidden")
    assert [json.loads(x) for x in stream.getvalue().splitlines()] == [
        {"level": "info", "node": "00aa11bb22cc33dd", "event": "line_observed", "line": "01"}]


# ----------------------------------------------------------------------------- driver


class HandLoop:
    """The two loop methods the driver uses, with a clock driven by hand."""

    def __init__(self) -> None:
        self.clock = 100.0
        self.calls: list[tuple[float, Callable[[], None], bool]] = []

    def time(self) -> float:
        return self.clock

    def call_at(self, when: float, callback: Callable[[], None]) -> Any:
        loop = self

        class Handle:
            def cancel(self) -> None:
                loop.calls = [c for c in loop.calls if c[1] is not callback or c[0] != when]

        self.calls.append((when, callback, True))
        return Handle()

    def run_until(self, until: float) -> None:
        while self.calls:
            self.calls.sort(key=lambda c: c[0])
            when, callback, _ = self.calls[0]
            if when > until:
                break
            self.calls.pop(0)
            self.clock = max(self.clock, when) + 0.001  # a late wake-up, as on a busy loop
            callback()
        self.clock = max(self.clock, until)


class Wire:
    """A link that hands frames straight to the other driver (no sockets)."""

    def __init__(self) -> None:
        self.peer: CoreDriver | None = None
        self.addr: Hashable = ""
        self.sent: list[tuple[Hashable | None, int]] = []

    def send(self, link_dst: Hashable | None, data: bytes) -> None:
        self.sent.append((link_dst, len(data)))
        assert self.peer is not None
        self.peer.datagram_received(data, "wifi0", self.addr)


def make_pair() -> tuple[HandLoop, CoreDriver, CoreDriver]:
    loop = HandLoop()
    drivers = []
    for i in range(2):
        node = MeshNode(identity=Identity.from_seed(bytes([i + 1]) * 32), rng=random.Random(i),
                        now=loop.time(), interfaces={"wifi0": WIFI}, config=MeshConfig())
        drivers.append(CoreDriver(node, cast(asyncio.AbstractEventLoop, loop)))
    a, b = drivers
    wa, wb = Wire(), Wire()
    wa.peer, wa.addr = b, "a"
    wb.peer, wb.addr = a, "b"
    a.add_link("wifi0", wa)
    b.add_link("wifi0", wb)
    return loop, a, b


def test_driver_keeps_one_timer_and_delivers_data() -> None:
    loop, a, b = make_pair()
    events: list[ev.Event] = []
    b.listeners.append(events.append)
    a.flush()
    b.flush()
    assert len(loop.calls) == 2  # one timer per core
    loop.run_until(103.0)
    assert len(loop.calls) == 2
    assert any(isinstance(e, ev.NeighbourUp) for e in events)
    b_id = cast(MeshNode, b.core).id
    a.send_data(b_id, b"hello")
    loop.run_until(104.0)
    got = [e for e in events if isinstance(e, ev.DataReceived)]
    assert [(e.payload, e.hops) for e in got] == [(b"hello", 1)]


def test_driver_counts_frames_for_unknown_links_and_stops_when_closed() -> None:
    loop, a, _ = make_pair()
    errors: list[str] = []
    a.links.clear()
    a.on_error = lambda iface, exc: errors.append(iface)
    a.flush()
    loop.run_until(102.5)
    assert a.tx_errors >= 2 and set(errors) == {"wifi0"}
    a.close()
    count = a.tx_errors
    loop.run_until(110.0)
    assert a.tx_errors == count


# ----------------------------------------------------------------------------- line monitor


def test_parse_line_text() -> None:
    assert parse_line_text("up\n").is_gateway
    assert parse_line_text("down") == LINE_DOWN
    assert parse_line_text("no-backhaul") == LineStatus(connected=True, technology="lte")
    assert parse_line_text('{"connected": true, "backhaul_reachable": true, "rtt_ms": 40,'
                           ' "technology": "5g"}') == LineStatus(True, "5g", 0, True, 40)
    for bad in ("maybe", "[1]", '{"connected": 1}', '{"colour": true}',
                '{"technology": "carrier pigeon"}'):
        with pytest.raises(LineSourceError):
            parse_line_text(bad)


async def test_file_monitor_reports_changes_and_keeps_state_on_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "line"
    changes: list[LineStatus] = []
    errors: list[str] = []
    monitor = LineMonitor(LineSection(monitor="file", file=str(path)), changes.append,
                          errors.append)
    await monitor.check()  # missing file: down, which is the initial state
    path.write_text("up")
    await monitor.check()
    await monitor.check()
    path.write_text("garbage")
    assert (await monitor.check()).is_gateway
    path.write_text("down")
    await monitor.check()
    assert [c.is_gateway for c in changes] == [True, False]
    assert len(errors) == 1


async def test_command_and_static_monitors() -> None:
    changes: list[LineStatus] = []
    await LineMonitor(LineSection(monitor="command", command="true"), changes.append).check()
    await LineMonitor(LineSection(monitor="command", command="exit 3"), changes.append).check()
    await LineMonitor(LineSection(monitor="static", static_up=True), changes.append).check()
    assert [c.is_gateway for c in changes] == [True, True]


async def test_tcp_probe_and_probe_monitor() -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    rtt = await tcp_probe("127.0.0.1", port, 1.0)
    assert rtt is not None and rtt >= 0
    changes: list[LineStatus] = []
    monitor = LineMonitor(LineSection(probe_host="127.0.0.1", probe_port=port), changes.append)
    assert (await monitor.check()).is_gateway
    server.close()
    await server.wait_closed()
    assert not (await monitor.check()).backhaul_reachable
    assert await tcp_probe("127.0.0.1", port, 1.0) is None
    assert [c.is_gateway for c in changes] == [True, False]


def test_modemmanager_properties_map_to_line() -> None:
    assert line_from_modem({"State": 11, "AccessTechnologies": 1 << 14,
                            "SignalQuality": (50, True)}) == (True, "lte", -82)
    assert line_from_modem({"State": 8, "AccessTechnologies": 0}) == (False, "none", 0)
    assert line_from_modem({"State": 11, "AccessTechnologies": 1 << 15})[1] == "5g"
    assert line_from_modem({"State": 11, "AccessTechnologies": 1 << 5})[1] == "3g"


# ----------------------------------------------------------------------------- metrics


def snapshot() -> Snapshot:
    return Snapshot(stats={"rx_hello": 5, "tx_data": 2, "drop_bad_signature": 1, "rx_bytes": 9,
                           "tx_bytes": 4}, routes=3, valid_routes=2, neighbours=1,
                    line_up=True, gateway=False, has_gateway=True, ledger_height=7,
                    link_tx={"udp:eth0": 3})


def test_render_prometheus_text() -> None:
    text = render(snapshot())
    lines = text.splitlines()
    assert 'manet_frames_total{direction="rx",kind="hello"} 5' in lines
    assert 'manet_frames_total{direction="tx",kind="data"} 2' in lines
    assert 'manet_drops_total{reason="bad_signature"} 1' in lines
    assert 'manet_bytes_total{direction="rx"} 9' in lines
    assert 'manet_routes{state="invalid"} 1' in lines
    assert "manet_ledger_height 7" in lines
    assert 'manet_link_datagrams_total{link="udp:eth0",direction="tx"} 3' in lines
    assert "manet_ledger_sync_lag_seconds" not in text
    assert all(x.startswith(("#", "manet_")) for x in lines)


async def test_metrics_server_answers_get() -> None:
    server = MetricsServer("127.0.0.1", 0, snapshot)
    await server.start()
    try:
        answers = {}
        for path in (b"/metrics", b"/nope"):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET " + path + b" HTTP/1.0\r\n\r\n")
            answers[path] = await reader.read()
            writer.close()
        head, body = answers[b"/metrics"].split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.0 200 OK")
        assert b"text/plain; version=0.0.4" in head
        assert body.decode() == render(snapshot())
        assert answers[b"/nope"].startswith(b"HTTP/1.0 404")
    finally:
        await server.stop()


# ----------------------------------------------------------------------------- control


async def test_control_socket_round_trip(tmp_path: Path) -> None:
    path = str(tmp_path / "c.sock")

    async def echo(req: dict[str, Any]) -> Any:
        return {"echo": req.get("x")}

    server = ControlServer(path, {"echo": echo})
    await server.start()
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
        assert await asyncio.to_thread(request, path, "echo", x=5) == {"echo": 5}
        with pytest.raises(ControlError, match="unknown command 'nope'"):
            await asyncio.to_thread(request, path, "nope")
    finally:
        await server.stop()
    assert not os.path.exists(path)


# ----------------------------------------------------------------------------- state


def test_state_floor_survives_a_clock_set_back(tmp_path: Path) -> None:
    state = AgentState(tmp_path)
    state.load()
    assert state.restarts == 0
    state.counter_start = 10**17  # as if the last run's clock was far ahead
    state.save(frames_sent=500, margin=1)
    again = AgentState(tmp_path)
    again.load()
    assert again.counter_start == 10**17 + 501
    assert again.restarts == 1
    (tmp_path / "agent-state.json").write_text("{]")
    with pytest.raises(StateError):
        AgentState(tmp_path).load()


def test_other_subcommands_are_registered_but_not_loaded_for_run(tmp_path: Path) -> None:
    import subprocess
    import sys

    helptext = subprocess.run([sys.executable, "-m", "agent.cli", "--help"], capture_output=True,
                              text=True, check=True).stdout
    for name in ("ledger", "contracts", "charging", "interchange"):
        assert name in helptext
    code = ("import sys; from agent import cli; cli.main(['check-config', '--config', "
            f"{str(tmp_path / 'a.toml')!r}]); print('numpy' in sys.modules)")
    (tmp_path / "a.toml").write_text("")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.splitlines()[-1] == "False"


async def test_agent_start_fails_cleanly_on_a_missing_interface(tmp_path: Path) -> None:
    from agent.app import Agent
    from agent.config import parse_config
    from agent.transports import TransportError

    config = parse_config({"udp": [{"interface": "lo"}, {"interface": "nonexistent9"}],
                           "node": {"state_dir": str(tmp_path)},
                           "control": {"socket": str(tmp_path / "c.sock")}})
    agent = Agent(config, Identity.from_seed(b"\x06" * 32))
    with pytest.raises(TransportError, match="nonexistent9"):
        await agent.start()
    link = agent.links["udp:lo"]
    await agent.stop()
    assert link.sock is None  # closed, and no longer read by the loop
    assert agent.links == {}
