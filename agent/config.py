"""The agent's TOML configuration: one frozen dataclass per section, strictly checked.

Why strict: a field device is configured once and then runs unattended, so a typo such as
`hello_intervall_s` must stop the agent at start-up with the key named, not be ignored.
Every key and its default is documented in docs/agent.md; deploy/raspberrypi/agent.toml is
a complete example. `[mesh]` accepts any field of `mesh.config.MeshConfig`.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mesh.config import MeshConfig


class ConfigError(Exception):
    """The configuration file is unreadable, not TOML, or has an unknown key or a bad value.

    `key` is the dotted path of the offending key (empty when the whole file is at fault).
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeSection:
    """Who this node is and where it keeps its state."""

    key_file: str = "/var/lib/manet-agent/node.key"
    """Ed25519 key (PKCS#8 PEM, mode 0600); created by `manet-agent keygen`."""
    state_dir: str = "/var/lib/manet-agent"
    """Ledger database and resumable state live here."""
    name: str = ""
    """A human label advertised over zeroconf (defaults to the node id)."""
    seed: int | None = None
    """Seed of the core's random.Random; None draws one from the OS at start-up."""


@dataclass(frozen=True, slots=True, kw_only=True)
class UdpSection:
    """One UDP link over an IP interface (Wi-Fi Direct group, ad hoc Wi-Fi, Ethernet)."""

    interface: str
    """Network interface to bind to (SO_BINDTODEVICE), e.g. "wlan0" or "p2p-wlan0-0"."""
    family: str = "ipv4"
    """"ipv4" (broadcast to 255.255.255.255 on the interface) or "ipv6" (link-local multicast)."""
    port: int = 4269
    """UDP port every agent of the mesh listens on."""
    group: str = "ff02::4269"
    """IPv6 only: link-local multicast group for HELLO/RREQ."""
    mtu: int = 1400
    """Largest mesh frame in one datagram; larger frames are fragmented by the core."""
    bitrate_bps: int = 6_000_000
    """Nominal link speed, used to scale the core's timing."""
    name: str = ""
    """The core's name for this link (default "udp:<interface>")."""

    @property
    def iface(self) -> str:
        return self.name or f"udp:{self.interface}"


@dataclass(frozen=True, slots=True, kw_only=True)
class SimSection:
    """Join a `sim-radio medium` server over loopback UDP instead of (or besides) real radios."""

    enabled: bool = False
    """Join the simulated medium as one more link."""
    host: str = "127.0.0.1"
    """Address of the medium server."""
    port: int = 4270
    """Where the medium server listens."""
    node_index: int | None = None
    """Position of this agent in the simulated scenario; None lets the server assign one."""
    mtu: int = 1400
    """Largest mesh frame the simulated link carries in one transmission."""
    name: str = "sim"
    """The core's name for this link."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BleSection:
    """A BLE link through bleak: adverts for discovery, GATT writes/notifications for frames."""

    enabled: bool = False
    """Run the BLE link (BlueZ over D-Bus on Linux)."""
    att_mtu: int = 247
    """ATT MTU asked for; frames are fragmented to att_mtu - 3 (23 = the BLE default)."""
    connect_timeout_s: float = 5.0
    """A connection to a peer that does not answer is given up after this long."""
    retry_s: float = 10.0
    """Wait this long before connecting again to a peer that failed."""
    adapter: str = "hci0"
    """BlueZ adapter."""
    name: str = "ble"
    """The core's name for this link."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WifiDirectSection:
    """Wi-Fi Direct through wpa_supplicant's P2P control interface, UDP on the group."""

    enabled: bool = False
    """Run the Wi-Fi Direct link."""
    ctrl_dir: str = "/run/wpa_supplicant"
    """wpa_supplicant's control socket directory (ctrl_interface)."""
    interface: str = "p2p-dev-wlan0"
    """The P2P device interface whose control socket to use."""
    role: str = "client"
    """"go" starts an autonomous group and accepts push-button joins; "client" joins one;
    "auto" joins one or forms one with the first peer it finds by GO negotiation."""
    go_intent: int = 7
    """GO negotiation intent for "auto" (0..15; the higher one becomes the group owner)."""
    port: int = 4269
    """UDP port on the group interface."""
    mtu: int = 1400
    """Largest mesh frame in one datagram."""
    name: str = "wifi-direct"
    """The core's name for this link."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DiscoverySection:
    """zeroconf (mDNS/DNS-SD) service advertisement and browsing."""

    enabled: bool = True
    """Advertise and browse over mDNS on the IPv4 addresses of the [[udp]] links."""
    service_type: str = "_manet-agent._udp.local."
    """DNS-SD service type; instances are named by node id."""
    interfaces: list[str] = field(default_factory=list)
    """IP addresses or interface names zeroconf uses; empty = those of the [[udp]] links."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LineSection:
    """The mobile-line monitor feeding `node.set_line`."""

    monitor: str = "probe"
    """"probe" (TCP connect to the backhaul), "modemmanager" (D-Bus, plus probe), "file",
    "command", or "static"."""
    interval_s: float = 5.0
    """Time between two checks."""
    probe_host: str = ""
    """Backhaul host for the TCP-connect probe; empty means "no backhaul configured"."""
    probe_port: int = 443
    """TCP port of the probe."""
    probe_timeout_s: float = 3.0
    """A probe (or command) slower than this counts as failed."""
    probe_interface: str = ""
    """Interface the probe leaves by (SO_BINDTODEVICE), e.g. "wwan0"; empty = routing table."""
    technology: str = "lte"
    """Reported technology when the monitor cannot learn it (probe/file/command)."""
    file: str = ""
    """monitor = "file": a file holding "up", "down" or a JSON LineStatus (tests, overrides)."""
    command: str = ""
    """monitor = "command": a shell command whose exit status 0 means the line works."""
    static_up: bool = False
    """monitor = "static": the fixed line state."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ControlSection:
    """The local control socket used by `manet-agent status|routes|neighbours|send|ping`."""

    socket: str = "/run/manet-agent/control.sock"
    """Unix socket path (created 0660; the directory is created if missing)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricsSection:
    """Prometheus text-format metrics over HTTP (off by default)."""

    enabled: bool = False
    """Serve GET /metrics."""
    address: str = "127.0.0.1"
    """Listen address (keep it local unless a firewall guards the port)."""
    port: int = 9469
    """TCP port (0 picks a free one, which the agent logs)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LogSection:
    """Structured logs: one line per event, node id on every line."""

    level: str = "info"
    """"debug", "info", "warning" or "error"."""
    format: str = "logfmt"
    """"logfmt" (key=value) or "json"."""
    timestamps: bool = False
    """Add a timestamp to each line; journald adds its own, so off by default."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LedgerSection:
    """Recording mesh events in the node's signed ledger."""

    enabled: bool = True
    """Record mesh events in the ledger when the ledger package is available."""
    path: str = ""
    """SQLite file; empty = <state_dir>/ledger.sqlite."""
    peer_sync: bool = True
    """Sync ledgers with neighbours when they appear (partitions that meet)."""
    peer_sync_interval_s: float = 30.0
    """Least time between two syncs with the same neighbour."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BackhaulSection:
    """Where the ledger syncs to (the `manet-backhaul serve` server)."""

    host: str = ""
    """Backhaul server host; empty = no backhaul sync (and no gateway relay)."""
    port: int = 7400
    """Backhaul server port."""
    key: str = ""
    """The backhaul's Ed25519 public key in hex, pinned; empty trusts the key it shows."""
    interval_s: float = 60.0
    """Time between two syncs (a sync also runs when a line or a gateway comes back)."""
    timeout_s: float = 30.0
    """A sync that takes longer is abandoned."""
    tls_ca: str = ""
    """PEM file of the CA (or the backhaul's own certificate) that signs the backhaul's TLS
    certificate; set = sync over TLS (directly, and a gateway's relay to the backhaul);
    empty = plain TCP, the backhaul's key still authenticating it inside the sync."""


@dataclass(frozen=True, slots=True, kw_only=True)
class InterchangeSection:
    """The power-interchange module host: plans sent as coordinator, answered as a vehicle."""

    vehicle_id: str = ""
    """The vehicle this agent rides in; empty = it answers no plans."""
    coordinator_keys: list[str] = field(default_factory=list)
    """Ed25519 public keys (hex) of the coordinators whose plans this vehicle answers."""
    accept: bool = True
    """false declines every plan with reason "unavailable"."""
    available_from: int = 0
    """First slot the vehicle can serve; a plan using an earlier slot is declined ("window")."""
    available_until: int = -1
    """Slot after the last one it can serve; -1 = no limit."""
    max_discharge_kwh: float = -1.0
    """Most energy it gives in one plan ("battery" otherwise); negative = no limit."""
    vehicle_keys: list[str] = field(default_factory=list)
    """Coordinator side: "VEHICLE_ID=PUBLIC_KEY_HEX" for each vehicle plans may be sent to."""
    retry_s: float = 10.0
    """Coordinator: a plan part not answered is sent again after this long."""
    retries: int = 2
    """Coordinator: sends after the first before a silent vehicle counts as "timeout"."""
    max_replans: int = 5
    """Coordinator: plan versions after which a plan still declined fails."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentConfig:
    """The whole configuration; every section is optional."""

    node: NodeSection = field(default_factory=NodeSection)
    mesh: MeshConfig = field(default_factory=MeshConfig)
    udp: list[UdpSection] = field(default_factory=list)
    sim: SimSection = field(default_factory=SimSection)
    ble: BleSection = field(default_factory=BleSection)
    wifi_direct: WifiDirectSection = field(default_factory=WifiDirectSection)
    discovery: DiscoverySection = field(default_factory=DiscoverySection)
    line: LineSection = field(default_factory=LineSection)
    control: ControlSection = field(default_factory=ControlSection)
    metrics: MetricsSection = field(default_factory=MetricsSection)
    log: LogSection = field(default_factory=LogSection)
    ledger: LedgerSection = field(default_factory=LedgerSection)
    backhaul: BackhaulSection = field(default_factory=BackhaulSection)
    interchange: InterchangeSection = field(default_factory=InterchangeSection)
    mesh_keys: frozenset[str] = frozenset()
    """The [mesh] keys the file sets, so that defaults that depend on the links (see
    `Agent.mesh_config`) never override a value written down."""


SECTIONS: dict[str, type[Any]] = {
    "node": NodeSection,
    "mesh": MeshConfig,
    "sim": SimSection,
    "ble": BleSection,
    "wifi_direct": WifiDirectSection,
    "discovery": DiscoverySection,
    "line": LineSection,
    "control": ControlSection,
    "metrics": MetricsSection,
    "log": LogSection,
    "ledger": LedgerSection,
    "backhaul": BackhaulSection,
    "interchange": InterchangeSection,
}
LIST_SECTIONS: dict[str, type[Any]] = {"udp": UdpSection}

CHOICES: dict[str, tuple[str, ...]] = {
    "udp.family": ("ipv4", "ipv6"),
    "wifi_direct.role": ("go", "client", "auto"),
    "line.monitor": ("probe", "modemmanager", "file", "command", "static"),
    "line.technology": ("none", "2g", "3g", "lte", "5g", "satellite", "wired", "other"),
    "log.level": ("debug", "info", "warning", "error"),
    "log.format": ("logfmt", "json"),
}


def _check_value(key: str, hint: Any, value: Any) -> Any:
    """Return `value` converted to `hint`, or raise ConfigError naming `key`."""
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_value(key, arg, value)
            except ConfigError:
                continue
        raise ConfigError(key, f"expected {_type_name(hint)}, got {type(value).__name__}")
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(key, f"expected a list, got {type(value).__name__}")
        return [_check_value(f"{key}[{i}]", item, v) for i, v in enumerate(value)]
    if hint is bool:
        if type(value) is not bool:
            raise ConfigError(key, f"expected true or false, got {type(value).__name__}")
        return value
    if hint is int:
        if type(value) is not int:
            raise ConfigError(key, f"expected an integer, got {type(value).__name__}")
        return value
    if hint is float:
        if type(value) not in (int, float):
            raise ConfigError(key, f"expected a number, got {type(value).__name__}")
        return float(value)
    if hint is str:
        if type(value) is not str:
            raise ConfigError(key, f"expected a string, got {type(value).__name__}")
        return value
    raise ConfigError(key, f"unsupported type {hint!r}")  # a programming error, named anyway


def _type_name(hint: Any) -> str:
    args = typing.get_args(hint)
    if args:
        return " or ".join(_type_name(a) for a in args)
    return {type(None): "none", bool: "boolean", int: "integer", float: "number",
            str: "string"}.get(hint, getattr(hint, "__name__", str(hint)))


def _build(section: str, cls: type[Any], table: Any) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(section, f"expected a table, got {type(table).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in table.items():
        dotted = f"{section}.{key}"
        if key not in names:
            raise ConfigError(dotted, f"unknown key (known: {', '.join(sorted(names))})")
        checked = _check_value(dotted, hints[key], value)
        choices = CHOICES.get(f"{section.split('[')[0]}.{key}")
        if choices is not None and checked not in choices:
            raise ConfigError(dotted, f"must be one of {', '.join(choices)}, got {checked!r}")
        _check_range(dotted, key, checked)
        values[key] = checked
    missing = [
        n for n, f in names.items()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        and n not in values
    ]
    if missing:
        raise ConfigError(f"{section}.{missing[0]}", "required key is missing")
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(section, str(exc)) from exc


def _check_range(dotted: str, key: str, value: Any) -> None:
    if key == "port" and isinstance(value, int) and not 0 <= value <= 65535:
        raise ConfigError(dotted, f"a port is 0..65535, got {value}")
    if key == "att_mtu" and isinstance(value, int) and not 23 <= value <= 517:
        raise ConfigError(dotted, f"an ATT MTU is 23..517, got {value}")
    if key == "go_intent" and isinstance(value, int) and not 0 <= value <= 15:
        raise ConfigError(dotted, f"a GO intent is 0..15, got {value}")
    if key == "mtu" and isinstance(value, int) and not 20 <= value <= 65000:
        raise ConfigError(dotted, f"an MTU is 20..65000, got {value}")
    if (key.endswith("_s") and isinstance(value, float) and value <= 0
            and key not in ("broadcast_jitter_s", "hello_jitter_s")):
        raise ConfigError(dotted, f"a duration must be positive, got {value}")


def parse_config(data: dict[str, Any]) -> AgentConfig:
    """Build an AgentConfig from an already-parsed TOML document."""
    values: dict[str, Any] = {}
    for section, table in data.items():
        if section in SECTIONS:
            values[section] = _build(section, SECTIONS[section], table)
        elif section in LIST_SECTIONS:
            if isinstance(table, dict):
                table = [table]
            if not isinstance(table, list):
                raise ConfigError(section, "expected [[udp]] tables")
            values[section] = [
                _build(f"{section}[{i}]", LIST_SECTIONS[section], t) for i, t in enumerate(table)
            ]
        else:
            known = ", ".join(sorted([*SECTIONS, *LIST_SECTIONS]))
            raise ConfigError(section, f"unknown section (known: {known})")
    mesh = data.get("mesh")
    config = AgentConfig(**values, mesh_keys=frozenset(mesh if isinstance(mesh, dict) else ()))
    names = [u.iface for u in config.udp]
    if config.sim.enabled:
        names.append(config.sim.name)
    if config.ble.enabled:
        names.append(config.ble.name)
    if config.wifi_direct.enabled:
        names.append(config.wifi_direct.name)
    for name in names:
        if names.count(name) > 1:
            raise ConfigError("udp", f"two links are named {name!r}; set distinct `name`s")
    return config


def load_config(path: str | Path) -> AgentConfig:
    """Read and check a TOML configuration file."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError("", f"cannot read {path}: {exc.strerror}") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError("", f"{path} is not valid TOML: {exc}") from exc
    return parse_config(data)
