"""`sim-radio medium` as a real process, joined by agents' MediumClients over loopback UDP."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from sim_radio.medium_client import MediumClient, MediumClientError
from sim_radio.medium_protocol import FrameOut, Join, Leave, Refused, Welcome
from sim_radio.medium_server import Medium
from sim_radio.scenario import load

SCENARIO = """
[run]
duration_s = 3600
[mobility]
model = "static"
positions = [[0, 0], [200, 0], [400, 0], [5000, 0]]
[radio]
range_m = 250
"""

CLIENT = textwrap.dedent("""
    import asyncio, sys
    from sim_radio.medium_client import MediumClient

    async def main() -> None:
        heard = asyncio.Queue()
        client = MediumClient("127.0.0.1", int(sys.argv[1]), node_id=b"\\x02" * 8,
                              node_index=2, on_frame=lambda f, s: heard.put_nowait((f, s)))
        print("joined", await client.connect(timeout=5.0), flush=True)
        frame, src = await asyncio.wait_for(heard.get(), 10.0)
        client.send(b"reply to " + frame, src)
        print("heard", frame.decode(), "from", src, flush=True)
        await asyncio.sleep(0.2)
        client.close()

    asyncio.run(main())
""")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_medium_state_without_sockets(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text(SCENARIO)
    medium = Medium(load(path))
    a, b, c = ("127.0.0.1", 1), ("127.0.0.1", 2), ("127.0.0.1", 3)
    assert medium.join(a, Join(b"\x01" * 8, None, None)) == Welcome(0, 250.0, 1400)
    assert medium.join(b, Join(b"\x02" * 8, 1, None)) == Welcome(1, 250.0, 1400)
    assert isinstance(medium.join(c, Join(b"\x03" * 8, 1, None)), Refused)  # taken
    assert isinstance(medium.join(c, Join(b"\x03" * 8, 9, None)), Refused)  # no such node
    assert medium.join(c, Join(b"\x03" * 8, 3, (100.0, 0.0))) == Welcome(3, 250.0, 1400)
    assert medium.receivers(0, FrameOut(b"x", None), 0.0) == [1, 3]
    assert medium.receivers(0, FrameOut(b"x", 1), 0.0) == [1]
    medium.leave(b)
    assert medium.receivers(0, FrameOut(b"x", None), 0.0) == [3]


@pytest.mark.timeout(60)
async def test_medium_process_with_agent_processes(tmp_path: Path) -> None:
    path = tmp_path / "medium.toml"
    path.write_text(SCENARIO)
    port = _free_port()
    medium = subprocess.Popen(
        [sys.executable, "-m", "sim_radio.cli", "medium", "--scenario", str(path),
         "--listen", f"127.0.0.1:{port}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    other = None
    try:
        assert medium.stdout is not None
        line = await asyncio.to_thread(medium.stdout.readline)
        assert "listening on" in line, line + (medium.stderr.read() if medium.stderr else "")
        heard: dict[int, asyncio.Queue[tuple[bytes, int]]] = {0: asyncio.Queue(),
                                                              1: asyncio.Queue()}
        def sink(k: int) -> Callable[[bytes, int], None]:
            return lambda frame, src: heard[k].put_nowait((frame, src))

        clients = [MediumClient("127.0.0.1", port, node_id=bytes([k]) * 8, node_index=k,
                                on_frame=sink(k)) for k in (0, 1)]
        for k, client in enumerate(clients):
            assert await client.connect(timeout=5.0) == k
        other = subprocess.Popen([sys.executable, "-c", CLIENT, str(port)],
                                 stdout=subprocess.PIPE, text=True)
        assert other.stdout is not None
        assert (await asyncio.to_thread(other.stdout.readline)).strip() == "joined 2"
        # node 0 broadcasts: only node 1 (200 m) hears it, not node 2 (400 m)
        clients[0].send(b"hello from 0", None)
        assert await asyncio.wait_for(heard[1].get(), 5.0) == (b"hello from 0", 0)
        # node 1 broadcasts: the process at node 2 hears it and answers by unicast
        clients[1].send(b"ping", None)
        assert await asyncio.wait_for(heard[1].get(), 5.0) == (b"reply to ping", 2)
        assert (await asyncio.to_thread(other.stdout.readline)).strip() == "heard ping from 1"
        assert await asyncio.wait_for(heard[0].get(), 5.0) == (b"ping", 1)
        assert heard[0].empty()  # node 2's unicast reply went to 1 only
        await asyncio.to_thread(other.wait, 10)
        # a client that never joined is refused
        stranger = MediumClient("127.0.0.1", port, node_id=b"\x09" * 8, node_index=7,
                                on_frame=lambda f, s: None)
        with pytest.raises(MediumClientError, match="no node 7"):
            await stranger.connect(timeout=5.0)
        stranger.close()
        for client in clients:
            client.close()
    finally:
        for proc in (other, medium):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                await asyncio.to_thread(proc.wait, 10)


def test_leave_message_frees_the_node(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text(SCENARIO)
    medium = Medium(load(path))
    addr = ("127.0.0.1", 5)
    medium.join(addr, Join(b"\x01" * 8, 2, None))
    assert Leave() == Leave() and medium.addr_of == {2: addr}
    medium.leave(addr)
    assert medium.addr_of == {} and medium.node_of == {}
