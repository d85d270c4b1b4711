"""Reliable streams over a lossy mesh, and a device syncing with the backhaul through a gateway."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from ledger import Ledger, Transaction
from ledger.backhaul.mesh import GatewayRelay, MeshSyncClient
from ledger.backhaul.server import BackhaulServer, ServerConfig
from ledger.meshlink import MeshStream, StreamConfig, StreamError, is_ledger_payload
from ledger.peer import LedgerMeshHost
from ledger.store import SqliteStore
from ledger.tx import default_registry
from mesh.identity import Identity

LOSS = 0.1


def shuttle(a: MeshStream, b: MeshStream, rng: random.Random, loss: float, now: float) -> float:
    """Move payloads both ways (dropping some) until both are quiet; fire timers by hand."""
    for _ in range(10_000):
        moved = False
        for src, dst in ((a, b), (b, a)):
            for payload in src.datagrams_to_send(now):
                moved = True
                assert len(payload) <= 1200 and is_ledger_payload(payload)
                if rng.random() >= loss:
                    dst.receive(payload, now)
        if not moved:
            deadlines = [t for t in (a.get_timer(), b.get_timer()) if t is not None]
            if not deadlines:
                return now
            now = min(deadlines)
            a.handle_timer(now)
            b.handle_timer(now)
    raise AssertionError("streams did not settle")


@pytest.mark.parametrize("loss", [0.0, 0.2])
def test_stream_delivers_in_order_over_a_lossy_mesh(loss: float) -> None:
    rng = random.Random(4)
    a, b = MeshStream(b"s" * 8), MeshStream(b"s" * 8)
    data_ab = bytes(rng.randrange(256) for _ in range(30_000))
    data_ba = b"reply" * 3000
    a.write(data_ab)
    b.write(data_ba)
    end = shuttle(a, b, rng, loss, 0.0)
    assert b.read() == data_ab and a.read() == data_ba
    assert a.unsent == b.unsent == 0
    assert (a.retransmissions > 0) == (loss > 0) and end >= 0


def test_stream_gives_up_without_acks_and_resets_tell_the_peer() -> None:
    a = MeshStream(b"t" * 8, config=StreamConfig(rto_s=1.0, max_retries=2))
    a.write(b"x" * 10)
    now = 0.0
    a.datagrams_to_send(now)
    with pytest.raises(StreamError):
        for _ in range(5):
            now = a.get_timer() or now
            a.handle_timer(now)
            a.datagrams_to_send(now)
            a.write(b"")
    b = MeshStream(b"t" * 8)
    [reset] = a.datagrams_to_send(now)
    b.receive(reset, now)
    assert b.failed and "reset by peer" in str(b.error)


def test_device_syncs_with_the_backhaul_through_a_gateway(tmp_path: Path) -> None:
    device = Ledger.open(tmp_path / "device.sqlite", Identity.from_seed(b"\x11" * 32))
    for i in range(60):
        device.append(Transaction("mesh.manet_left", {"t": float(i)}))
        device.flush()
    store = SqliteStore(tmp_path / "backhaul.sqlite")
    store.enrol(device.author, "device", 0)
    hub = Identity.from_seed(b"\x22" * 32)
    rng = random.Random(9)
    gateway_id, device_id = b"G" * 8, device.identity.node_id

    async def scenario() -> None:
        server = BackhaulServer(store, hub, default_registry(),
                                config=ServerConfig(checkpoint_interval_s=0))
        port = await server.start("127.0.0.1", 0)
        loop = asyncio.get_running_loop()
        fast = StreamConfig(rto_s=0.05)

        def lossy(deliver: object, *args: object) -> None:
            if rng.random() >= LOSS:  # the mesh loses some payloads
                loop.call_soon(deliver, *args)  # type: ignore[arg-type]

        client = MeshSyncClient(device, lambda pl: lossy(relay.on_backhaul_data, device_id, pl),
                                config=fast)
        relay = GatewayRelay("127.0.0.1", port,
                             lambda dest, pl: lossy(client.on_payload, pl), config=fast)
        try:
            result = await asyncio.wait_for(client.sync(backhaul_key=hub.public_key,
                                                        timeout=20), 60)
            assert result.state == "complete" and result.stats.blocks_out == 60
            assert result.checkpoint is not None and result.finalized == 1
            assert relay.counters["opened"] == 1
            assert gateway_id not in relay.streams
            # Two syncs asked for at once run one after the other, both to the end.
            again = await asyncio.wait_for(asyncio.gather(
                client.sync(backhaul_key=hub.public_key, timeout=20),
                client.sync(backhaul_key=hub.public_key, timeout=20)), 60)
            assert [r.state for r in again] == ["complete", "complete"]
            assert [r.stats.blocks_out for r in again] == [0, 0]
        finally:
            await asyncio.sleep(0.1)
            await server.close()

    try:
        asyncio.run(scenario())
        head = store.head(device.author)
        assert head is not None and head.height == 59
        assert device.store.checkpointed_height(device.author) == 59
    finally:
        device.close()
        store.close()


def test_two_neighbours_sync_over_a_lossy_mesh(tmp_path: Path) -> None:
    a = Ledger.open(tmp_path / "a.sqlite", Identity.from_seed(b"\x31" * 32))
    b = Ledger.open(tmp_path / "b.sqlite", Identity.from_seed(b"\x32" * 32))
    for led, n in ((a, 30), (b, 45)):
        for i in range(n):
            led.append(Transaction("mesh.manet_left", {"t": float(i)}))
            led.flush()
    rng = random.Random(3)
    id_a, id_b = a.identity.node_id, b.identity.node_id

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        fast = StreamConfig(rto_s=0.05)
        hosts: dict[bytes, LedgerMeshHost] = {}

        def sender(me: bytes) -> Callable[[bytes, bytes], None]:
            def send(dest: bytes, payload: bytes) -> None:
                if rng.random() >= LOSS:
                    loop.call_soon(hosts[dest].on_payload, me, payload)
            return send

        hosts[id_a] = LedgerMeshHost(a, sender(id_a), stream_config=fast, timeout=10)
        hosts[id_b] = LedgerMeshHost(b, sender(id_b), stream_config=fast, timeout=10)
        stats = await asyncio.wait_for(hosts[id_a].sync_peer(id_b), 30)
        assert stats.blocks_out == 30 and stats.blocks_in == 45
        for _ in range(200):  # the responder finishes on its own
            if not hosts[id_b]._served:
                break
            await asyncio.sleep(0.01)
        assert hosts[id_b].counters["served"] == 1 and hosts[id_b].counters["cut"] == 0

    try:
        asyncio.run(scenario())
        assert [(h.author, h.height) for h in a.heads()] == [(h.author, h.height)
                                                            for h in b.heads()]
        assert len(a.heads()) == 2 and a.verify().ok and b.verify().ok
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("how", ["cancel", "close"])
def test_a_cancelled_relay_leaves_no_task_behind(how: str) -> None:
    """Cancelling a relay's pipe (the agent does, when it stops) cancels and collects both
    copying tasks: none is left to fail later unseen ("Task exception was never retrieved")."""
    errors: list[str] = []

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, context: errors.append(context["message"]))
        accepted = asyncio.Event()
        conns: list[asyncio.StreamWriter] = []

        async def backhaul(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            conns.append(writer)
            accepted.set()
            writer.write(b"x" * 100)  # something for the relay to pass down
            await reader.read()

        server = await asyncio.start_server(backhaul, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        relay = GatewayRelay("127.0.0.1", port, lambda dest, pl: None,
                             config=StreamConfig(rto_s=0.05))
        device = MeshStream(b"d" * 8)
        device.open()
        device.write(b"hello")
        for payload in device.datagrams_to_send(0.0):
            relay.on_backhaul_data(b"D" * 8, payload)
        await asyncio.wait_for(accepted.wait(), 5)
        await asyncio.sleep(0.05)
        before = set(asyncio.all_tasks())
        if how == "close":
            await relay.close()
        for task in list(relay.tasks):  # what the agent does when it stops
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert not relay.tasks and not relay.streams
        for _ in range(5):
            await asyncio.sleep(0.05)
        left = [t for t in asyncio.all_tasks() - before if not t.done()]
        assert left == []
        for writer in conns:
            writer.close()
        server.close()
        await server.wait_closed()

    asyncio.run(scenario())
    gc.collect()
    assert errors == []
