"""A lab of Linux network namespaces running real agent processes (tests and benchmarks).

Needs root, `ip` (iproute2) and, for loss rules, `nft`. Hosts are namespaces named
`<prefix><host>`; the prefix is unique per lab (pid + random), so parallel runs never clash.
Links are veth pairs created straight inside the two namespaces, each with its own /24, so
interface names only have to be unique inside a host. `close()` kills the agents and deletes
every namespace it made (the veths and bridges go with them); use the lab as a context
manager so that this happens even when a test fails.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.control import ControlError, request
from mesh.identity import Identity


class LabError(Exception):
    """A namespace command failed, or an agent did not come up."""


def lab_available() -> str | None:
    """None when labs can run here, else why not (for pytest skips)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 (ip) is not installed"
    probe = f"malab{secrets.token_hex(3)}"
    done = subprocess.run(["ip", "netns", "add", probe], capture_output=True, check=False)
    if done.returncode != 0:
        return f"cannot create a network namespace: {done.stderr.decode().strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    return None


def run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(cmd), capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise LabError(f"{' '.join(cmd)}: {done.stderr.strip()}")
    return done


@dataclass
class Host:
    name: str
    ns: str
    ifaces: list[str] = field(default_factory=list)
    dir: Path = Path()
    node_id: str = ""
    proc: subprocess.Popen[bytes] | None = None
    socket: str = ""
    line_file: str = ""
    log: Path = Path()


class Lab:
    """Namespaces, links and agents. `with Lab() as lab: ...`."""

    def __init__(self, prefix: str | None = None, python: str = sys.executable) -> None:
        self.prefix = prefix or f"ma{os.getpid() % 10000}{secrets.token_hex(2)}"
        self.python = python
        self.hosts: dict[str, Host] = {}
        self.links: dict[tuple[str, str], tuple[str, str]] = {}
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-"))
        self._subnet = 0

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- topology

    def add_host(self, name: str) -> Host:
        ns = f"{self.prefix}{name}"
        run("ip", "netns", "add", ns)
        host = Host(name=name, ns=ns, dir=self.tmp / name)
        self.hosts[name] = host
        host.dir.mkdir(parents=True)
        self.exec(name, "ip", "link", "set", "lo", "up")
        self.exec(name, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0")
        self.exec(name, "sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0")
        return host

    def exec(self, host: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run("ip", "netns", "exec", self.hosts[host].ns, *cmd, check=check)

    def _next_subnet(self) -> int:
        self._subnet += 1
        if self._subnet > 250:
            raise LabError("a lab has at most 250 links")
        return self._subnet

    def link(self, a: str, b: str) -> tuple[str, str]:
        """A veth pair between hosts a and b; returns the interface names (in a, in b)."""
        ha, hb = self.hosts[a], self.hosts[b]
        ia, ib = f"v{len(ha.ifaces)}{b}"[:15], f"v{len(hb.ifaces)}{a}"[:15]
        net = self._next_subnet()
        run("ip", "link", "add", ia, "netns", ha.ns, "type", "veth", "peer", "name", ib,
            "netns", hb.ns)
        for host, iface, last in ((a, ia, 1), (b, ib, 2)):
            self.exec(host, "ip", "addr", "add", f"10.77.{net}.{last}/24", "dev", iface)
            self.exec(host, "ip", "link", "set", iface, "up")
            self.hosts[host].ifaces.append(iface)
        self.links[(a, b)] = (ia, ib)
        self.links[(b, a)] = (ib, ia)
        return ia, ib

    def bridge(self, names: list[str]) -> str:
        """A shared segment: a bridge in its own namespace with a veth to each host."""
        sw = self.add_host(f"sw{self._subnet + 1}")
        br = "br0"
        self.exec(sw.name, "ip", "link", "add", br, "type", "bridge")
        self.exec(sw.name, "ip", "link", "set", br, "up")
        net = self._next_subnet()
        for i, name in enumerate(names, start=1):
            host = self.hosts[name]
            inner, outer = f"b{len(host.ifaces)}", f"p{name}"[:15]
            run("ip", "link", "add", inner, "netns", host.ns, "type", "veth", "peer", "name",
                outer, "netns", sw.ns)
            self.exec(sw.name, "ip", "link", "set", outer, "master", br)
            self.exec(sw.name, "ip", "link", "set", outer, "up")
            self.exec(name, "ip", "addr", "add", f"10.77.{net}.{i}/24", "dev", inner)
            self.exec(name, "ip", "link", "set", inner, "up")
            # mDNS needs multicast to leave by this interface.
            self.exec(name, "ip", "route", "add", "224.0.0.0/4", "dev", inner, check=False)
            host.ifaces.append(inner)
        return br

    def set_mtu(self, a: str, b: str, mtu: int) -> None:
        """Set the IP MTU of both ends of the a-b veth (veth takes up to 65535)."""
        ia, ib = self.links[(a, b)]
        self.exec(a, "ip", "link", "set", ia, "mtu", str(mtu))
        self.exec(b, "ip", "link", "set", ib, "mtu", str(mtu))

    def set_link(self, a: str, b: str, up: bool) -> None:
        """Cut (or restore) the a-b veth: `ip link set down` on a's side."""
        ia, _ = self.links[(a, b)]
        self.exec(a, "ip", "link", "set", ia, "up" if up else "down")

    def drop(self, host: str, iface: str, percent: int) -> None:
        """Silently drop `percent`% of the mesh frames `host` receives on `iface` (nftables).

        100 makes the link silently stop carrying frames (the interface stays up).
        """
        if shutil.which("nft") is None:
            raise LabError("nft (nftables) is not installed")
        table = f"lab{iface}"
        self.exec(host, "nft", "add", "table", "inet", table)
        self.exec(host, "nft", "add", "chain", "inet", table, "in",
                  "{ type filter hook input priority 0 ; policy accept ; }")
        rule = ["iifname", iface, "udp", "dport", "4269"]
        if percent >= 100:
            rule += ["drop"]
        else:
            rule += ["numgen", "random", "mod", "100", "<", str(percent), "drop"]
        self.exec(host, "nft", "add", "rule", "inet", table, "in", *rule)

    def undrop(self, host: str, iface: str) -> None:
        self.exec(host, "nft", "delete", "table", "inet", f"lab{iface}", check=False)

    # ----------------------------------------------------------------- agents

    def config_text(self, host: Host, *, hello_s: float = 1.0, line: str = "down",
                    discovery: bool = False, metrics_port: int = 0,
                    family: str = "ipv4", mesh: dict[str, Any] | None = None,
                    line_interval_s: float = 0.1, udp_mtu: int | None = None,
                    extra: str = "") -> str:
        host.socket = str(host.dir / "control.sock")
        host.line_file = str(host.dir / "line")
        Path(host.line_file).write_text(line)
        mtu = f"mtu = {udp_mtu}\n" if udp_mtu else ""
        udp = "".join(f'[[udp]]\ninterface = "{i}"\nfamily = "{family}"\n{mtu}\n'
                      for i in host.ifaces)
        mesh_lines = "".join(f"{k} = {json.dumps(v)}\n" for k, v in (mesh or {}).items())
        metrics = (f"[metrics]\nenabled = true\nport = {metrics_port}\n\n"
                   if metrics_port else "")
        return (
            f'[node]\nkey_file = "{host.dir / "node.key"}"\nstate_dir = "{host.dir}"\n'
            f'name = "{host.name}"\n\n'
            f"[mesh]\nhello_interval_s = {hello_s}\n{mesh_lines}\n"
            f"{udp}"
            f'[line]\nmonitor = "file"\nfile = "{host.line_file}"\n'
            f"interval_s = {line_interval_s}\n\n"
            f"[discovery]\nenabled = {'true' if discovery else 'false'}\n\n"
            f'[control]\nsocket = "{host.socket}"\n\n'
            f"{metrics}"
            f'[log]\nlevel = "info"\n\n{extra}'
        )

    def key(self, name: str) -> Identity:
        """The host's node key (created on first use)."""
        path = self.hosts[name].dir / "node.key"
        if not path.exists():
            Identity.generate().save(path)
        return Identity.load(path)

    def start_agent(self, name: str, **options: Any) -> Host:
        host = self.hosts[name]
        host.node_id = self.key(name).node_id.hex()
        config = host.dir / "agent.toml"
        config.write_text(self.config_text(host, **options))
        host.log = host.dir / "agent.log"
        with open(host.log, "ab") as log:
            host.proc = subprocess.Popen(
                ["ip", "netns", "exec", host.ns, self.python, "-m", "agent", "run",
                 "--config", str(config)],
                stdout=log, stderr=subprocess.STDOUT)
        return host

    def wait_ready(self, names: list[str] | None = None, timeout_s: float = 15.0) -> None:
        """Wait until each agent answers on its control socket."""
        for name in names or list(self.agents()):
            self.wait_for(self._answers(name), timeout_s, f"agent {name} did not start")

    def wait_neighbours(self, name: str, count: int, timeout_s: float = 10.0) -> None:
        """Wait until agent `name` lists exactly `count` neighbours."""
        self.wait_for(lambda: self.request(name, "status")["neighbours"] == count, timeout_s,
                      f"{name} sees {count} neighbours")

    def _answers(self, name: str) -> Callable[[], bool]:
        return lambda: self.try_request(name, "status") is not None

    def agents(self) -> dict[str, Host]:
        return {n: h for n, h in self.hosts.items() if h.proc is not None}

    def request(self, name: str, cmd: str, **args: Any) -> Any:
        return request(self.hosts[name].socket, cmd, timeout_s=30.0, **args)

    def try_request(self, name: str, cmd: str, **args: Any) -> Any:
        try:
            return self.request(name, cmd, **args)
        except ControlError:
            proc = self.hosts[name].proc
            if proc is not None and proc.poll() is not None:
                raise LabError(f"agent {name} exited with {proc.returncode}: "
                               f"{self.hosts[name].log.read_text()[-2000:]}") from None
            return None

    def set_line(self, name: str, state: str) -> None:
        Path(self.hosts[name].line_file).write_text(state)

    def stop_agent(self, name: str, timeout_s: float = 10.0) -> int:
        host = self.hosts[name]
        if host.proc is None:
            return 0
        host.proc.send_signal(signal.SIGTERM)
        try:
            code = host.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            host.proc.kill()
            code = host.proc.wait()
        host.proc = None
        return code

    @staticmethod
    def wait_for(check: Callable[[], Any], timeout_s: float, what: str,
                 poll_s: float = 0.05) -> Any:
        deadline = time.monotonic() + timeout_s
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise LabError(f"timed out after {timeout_s} s: {what}")
            time.sleep(poll_s)

    def logs(self, name: str) -> list[dict[str, str]]:
        """The agent's log lines parsed from logfmt (for assertions on events)."""
        out = []
        for line in self.hosts[name].log.read_text().splitlines():
            fields: dict[str, str] = {}
            for part in _split_logfmt(line):
                key, _, value = part.partition("=")
                fields[key] = json.loads(value) if value.startswith('"') else value
            out.append(fields)
        return out

    def close(self) -> None:
        for name in list(self.agents()):
            self.stop_agent(name, timeout_s=5.0)
        for host in self.hosts.values():
            run("ip", "netns", "del", host.ns, check=False)
        self.hosts.clear()
        shutil.rmtree(self.tmp, ignore_errors=True)


def _split_logfmt(line: str) -> list[str]:
    parts, current, quoted, escaped = [], "", False, False
    for char in line:
        if escaped:
            current += char
            escaped = False
        elif char == "\\" and quoted:
            current += char
            escaped = True
        elif char == '"':
            current += char
            quoted = not quoted
        elif char == " " and not quoted:
            if current:
                parts.append(current)
            current = ""
        else:
            current += char
    if current:
        parts.append(current)
    return parts
