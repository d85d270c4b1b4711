"""What keeps the agent small: its key file and sealing work without `cryptography` (which
carries its own OpenSSL), byte for byte compatible with what `cryptography` writes and seals."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Hashable
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from agent.launch import wants_openssl
from mesh.identity import Identity, IdentityError
from mesh.seal import Sealer, SealError


def _pkcs8(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def test_key_file_is_the_pkcs8_that_cryptography_writes_and_reads(tmp_path: Path) -> None:
    seed = bytes(range(32))
    ours = tmp_path / "ours.key"
    Identity.from_seed(seed).save(ours)
    theirs = _pkcs8(Ed25519PrivateKey.from_private_bytes(seed))
    assert ours.read_bytes() == theirs
    loaded = serialization.load_pem_private_key(ours.read_bytes(), password=None)
    assert isinstance(loaded, Ed25519PrivateKey)
    other = Ed25519PrivateKey.generate()
    path = tmp_path / "theirs.key"
    path.write_bytes(_pkcs8(other))
    path.chmod(0o600)
    raw = other.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                              serialization.NoEncryption())
    assert Identity.load(path).seed == raw


@pytest.mark.parametrize("text", [
    b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIAAB\n-----END PRIVATE KEY-----\n",
    # the Ed25519 prefix with one byte too many
    b"-----BEGIN PRIVATE KEY-----\n"
    b"MC4CAQAwBQYDK2VwBCIEIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4fIA==\n"
    b"-----END PRIVATE KEY-----\n",
    # an X25519 key (OID 1.3.101.110): same length, other algorithm
    b"-----BEGIN PRIVATE KEY-----\n"
    b"MC4CAQAwBQYDK2VuBCIEIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f\n"
    b"-----END PRIVATE KEY-----\n",
    b"-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n",
    b"",
])
def test_other_or_damaged_key_files_are_refused(tmp_path: Path, text: bytes) -> None:
    path = tmp_path / "bad.key"
    path.write_bytes(text)
    path.chmod(0o600)
    with pytest.raises(IdentityError):
        Identity.load(path)


def test_sealed_payloads_are_ietf_chacha20_poly1305() -> None:
    a, b = Identity.from_seed(b"a" * 32), Identity.from_seed(b"b" * 32)
    sa, sb = Sealer(a), Sealer(b)
    sealed = sa.seal(b.public_key, 7, b"payload", b"header")
    assert sb.open(a.public_key, 7, sealed, b"header") == b"payload"
    key = sa._pair(b.public_key)[0]
    nonce = (7).to_bytes(8, "big") + bytes(4)
    assert ChaCha20Poly1305(key).encrypt(nonce, b"payload", b"header") == sealed
    for counter, data, header in ((8, sealed, b"header"), (7, sealed, b"headeR"),
                                  (7, sealed[:-1] + bytes([sealed[-1] ^ 1]), b"header")):
        with pytest.raises(SealError):
            sb.open(a.public_key, counter, data, header)


def fresh_python(code: str) -> str:
    """What `code` prints in a new interpreter (imports and memory start from nothing)."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout

def test_the_run_path_does_not_import_cryptography(tmp_path: Path) -> None:
    """Nor zeroconf and numpy before they are used, nor the contracts engine (the registry
    knows `contract.tx` without it)."""
    key = tmp_path / "node.key"
    Identity.generate().save(key)
    code = (
        "import sys, random\n"
        "from agent import cli, app\n"
        "from mesh.identity import Identity\n"
        "from mesh.node import MeshNode\n"
        f"me = Identity.load({str(key)!r})\n"
        "node = MeshNode(identity=me, rng=random.Random(1), now=0.0)\n"
        "node.send_data(Identity.from_seed(bytes(32)).node_id, b'x', 0.0)\n"
        "from ledger.tx import default_registry\n"
        "assert 'contract.tx' in default_registry().names()\n"
        "heavy = ('cryptography', 'zeroconf', 'numpy', 'ledger.contracts.engine')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = fresh_python(code)
    assert out.splitlines()[-1] == "[]"


def test_settle_freezes_start_up_objects_and_trims_the_heap() -> None:
    code = ("import gc; from agent.memory import settle; ok = settle(); "
            "print(ok, gc.get_freeze_count() > 0)")
    out = fresh_python(code)
    assert out.split() == ["True", "True"]  # glibc here: malloc_trim exists


async def test_udp_link_drains_a_burst_in_one_batch() -> None:
    import asyncio
    import contextlib
    import socket
    from collections.abc import Iterator

    from agent.config import UdpSection
    from agent.transports.udp import open_udp_link

    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    got: list[tuple[bytes, Hashable]] = []
    batches: list[int] = []

    @contextlib.contextmanager
    def batch() -> Iterator[None]:
        before = len(got)
        yield
        batches.append(len(got) - before)

    link = await open_udp_link(UdpSection(interface="lo", port=port),
                               lambda data, iface, src: got.append((data, src)), batch)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for i in range(10):  # all queued before the loop runs the reader
            sender.sendto(bytes([i]), ("127.0.0.1", port))
        for _ in range(200):
            if len(got) == 10:
                break
            await asyncio.sleep(0.01)
        assert [d for d, _ in got] == [bytes([i]) for i in range(10)]
        assert batches[0] == 10
        link.send(("127.0.0.1", sender.getsockname()[1]), b"back")
        assert sender.recv(16) == b"back"
    finally:
        sender.close()
        link.close()
    assert link.sock is None


def test_driver_flushes_once_at_the_end_of_a_held_block() -> None:
    import asyncio

    from agent.driver import CoreDriver

    class Core:
        def __init__(self) -> None:
            self.out: list[Any] = []
            self.received = 0

        def receive(self, data: bytes, iface: str, link_src: Hashable, now: float) -> None:
            self.received += 1
            self.out.append(Tx("l", None, data))

        def datagrams_to_send(self) -> list[Any]:
            out, self.out = self.out, []
            return out

        def next_event(self) -> None:
            return None

        def get_timer(self) -> None:
            return None

    class Tx(NamedTuple):
        iface: str
        link_dst: Hashable | None
        data: bytes

    class Link:
        def __init__(self) -> None:
            self.sent: list[tuple[int, bytes]] = []

        def send(self, link_dst: Hashable | None, data: bytes) -> None:
            self.sent.append((core.received, data))

    loop = asyncio.new_event_loop()
    try:
        core, link = Core(), Link()
        driver = CoreDriver(core, loop)  # type: ignore[arg-type]
        driver.add_link("l", link)
        with driver.held():
            for i in range(3):
                driver.datagram_received(bytes([i]), "l", None)
            assert link.sent == []
        assert link.sent == [(3, b"\x00"), (3, b"\x01"), (3, b"\x02")]
        driver.datagram_received(b"x", "l", None)  # outside a block: at once
        assert link.sent[-1] == (4, b"x")
    finally:
        loop.close()


async def test_blast_window_keeps_at_most_window_payloads_unacknowledged() -> None:
    import asyncio

    from agent.blast import Blast

    loop = asyncio.get_running_loop()
    a, b = b"A" * 8, b"B" * 8
    wire: list[tuple[bytes, bytes, bytes]] = []  # (from, to, payload), carried by hand
    unacked: list[int] = []

    def send_data(dest: bytes, payload: bytes) -> None:
        wire.append((a, dest, payload))
        sent.append(payload)
        unacked.append(len(sent) - sender.acked[b])

    sent: list[bytes] = []
    sender = Blast(send_data, loop)
    receiver = Blast(lambda dest, p: wire.append((b, dest, p)), loop)

    async def carry() -> None:
        while True:
            await asyncio.sleep(0)
            while wire:
                src, dst, payload = wire.pop(0)
                if dst == b:
                    assert not receiver.on_payload(src, payload)
                else:
                    assert sender.on_payload(src, payload)  # an ack, not data

    task = loop.create_task(carry())
    try:
        result = await sender.run(b, count=100, size=40, batch=64, rate_mb_s=0.0, window=32)
        for _ in range(10):
            await asyncio.sleep(0)
    finally:
        task.cancel()
    assert result["sent"] == 100 and result["stalls"] == 0
    assert receiver.received_from[a] == 100 and sender.acked[b] == 100  # the last is acked
    assert all(len(p) == 40 for p in sent)
    assert max(unacked) == 32  # the window filled, and never overflowed


def test_run_without_tls_keeps_openssl_and_compression_out(tmp_path: Path) -> None:
    """`manet-agent run` with no `[backhaul] tls_ca` never maps libcrypto, nor (with or without
    TLS) libbz2 and liblzma, and argparse, hashing, the mesh core and the ledger still work
    (hashlib's built-in SHA-256 gives the same digests)."""
    plain, tls, broken = tmp_path / "plain.toml", tmp_path / "tls.toml", tmp_path / "broken.toml"
    plain.write_text('[backhaul]\nhost = "10.0.0.1"\n')
    tls.write_text('[backhaul]\nhost = "10.0.0.1"\ntls_ca = "/etc/ca.pem"\n')
    broken.write_text("[backhaul\n")
    assert not wants_openssl(["run", "--config", str(plain)])
    assert not wants_openssl(["run", f"--config={plain}"])
    assert wants_openssl(["run", "--config", str(tls)])
    assert wants_openssl(["run", "--config", str(broken)])  # the CLI reports it as usual
    assert wants_openssl(["run", "--config", str(tmp_path / "missing.toml")])
    assert wants_openssl(["status", "--config", str(plain)])
    key = tmp_path / "node.key"
    Identity.generate().save(key)
    code = (
        "from agent.launch import COMPRESSION_MODULES, OPENSSL_MODULES, mark_absent\n"
        "mark_absent(COMPRESSION_MODULES + OPENSSL_MODULES)\n"
        "import argparse, asyncio, hashlib, random\n"
        "argparse.ArgumentParser().add_argument('--config')  # imports shutil\n"
        "from agent import app\n"
        "from ledger import Ledger\n"
        "from mesh.identity import Identity\n"
        "from mesh.node import MeshNode\n"
        f"me = Identity.load({str(key)!r})\n"
        "node = MeshNode(identity=me, rng=random.Random(1), now=0.0)\n"
        "node.send_data(Identity.from_seed(bytes(32)).node_id, b'x', 0.0)\n"
        f"led = Ledger.open({str(tmp_path / 'l.sqlite')!r}, me)\n"
        "led.close()\n"
        "maps = open('/proc/self/maps').read()\n"
        "print('libcrypto' in maps, 'libssl' in maps, 'libbz2' in maps, 'liblzma' in maps,\n"
        "      hashlib.sha256(b'abc').hexdigest())\n"
    )
    out = fresh_python(code)
    assert out.split() == ["False"] * 4 + [hashlib.sha256(b"abc").hexdigest()]


def test_the_agent_runs_the_mesh_core_from_its_sources() -> None:
    """As on a device, even where `make` compiled the core for the simulator (the compiled
    group costs the idle agent 1.1 MB); MANET_PURE_PYTHON=0 lets it run compiled."""
    code = (
        "import os\n"
        "os.environ.pop('MANET_PURE_PYTHON', None)\n"
        "from agent import launch\n"
        "try:\n"
        "    launch.main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "import mesh.node\n"
        "print(os.environ['MANET_PURE_PYTHON'], mesh.node.__file__.endswith('.py'))\n"
    )
    assert fresh_python(code).splitlines()[-1] == "1 True"


async def test_udp_link_sends_runs_with_gso_and_splits_gro_reads() -> None:
    """A run of equal frames to one neighbour leaves in one sendmsg (UDP GSO) and arrives,
    coalesced or not, as the same frames in order; mixed sizes and destinations still work."""
    import asyncio
    import socket

    from agent.config import UdpSection
    from agent.transports.udp import UDP_GRO, open_udp_link

    ports = []
    for _ in range(2):
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", 0))
        ports.append(probe.getsockname()[1])
        probe.close()
    got: list[bytes] = []
    a = await open_udp_link(UdpSection(interface="lo", port=ports[0]), lambda *_: None)
    b = await open_udp_link(UdpSection(interface="lo", port=ports[1]),
                            lambda data, iface, src: got.append(data))
    to_b = ("127.0.0.1", ports[1])
    frames = [bytes([i]) * 1200 for i in range(40)] + [b"short", b"x" * 1200]
    try:
        a.send_many([(to_b, f) for f in frames])
        for _ in range(300):
            if len(got) == len(frames):
                break
            await asyncio.sleep(0.01)
        assert got == frames
        # One GSO send for the run of 40, then "short" and the last frame on their own.
        assert a.tx == len(frames) and a.tx_calls == 3
        assert b.sock is not None
        gro = b.sock.getsockopt(socket.IPPROTO_UDP, UDP_GRO)
        assert b.rx == len(frames) and (b.rx_calls < len(frames) if gro else True)
    finally:
        a.close()
        b.close()


def test_udp_link_falls_back_to_one_by_one_when_gso_is_refused() -> None:
    """A segment above the interface MTU (EMSGSIZE) is sent alone, as are later ones that
    large; a kernel without UDP GSO (EIO) turns GSO off. No frame is lost either way."""
    import errno
    from typing import cast

    from agent.config import UdpSection
    from agent.transports.udp import UdpLink

    class Sock:
        def __init__(self, refuse: int) -> None:
            self.refuse, self.sent, self.gso_tries = refuse, [], 0

        def sendmsg(self, *args: Any) -> int:
            self.gso_tries += 1
            raise OSError(self.refuse, "refused")

        def sendto(self, data: bytes, dst: Any) -> int:
            self.sent.append(data)
            return len(data)

    for refuse, expected_max in ((errno.EMSGSIZE, 8000), (errno.EIO, 0)):
        link = UdpLink(UdpSection(interface="lo", port=9), lambda *_: None)
        sock = Sock(refuse)
        link.sock = cast(Any, sock)
        frames = [bytes([i]) * 8000 for i in range(5)]
        link.send_many([(("10.0.0.2", 9), f) for f in frames])
        link.send_many([(("10.0.0.2", 9), f) for f in frames])
        assert sock.sent == frames + frames
        assert sock.gso_tries == 1 and link.gso_max == expected_max
