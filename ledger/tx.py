"""Transactions and the registry of transaction types, with schema validation.

A transaction is `Transaction(type, body)`: `type` is a dotted name ("mesh.route_added",
"line.status", "charging.session", ...), `body` a map of plain CBOR values checked against
the type's schema. Transactions live inside blocks; the block's signature by the feed's
author covers them, so one signature vouches for many transactions.

No module-level registry: a `TxRegistry` is an object. `default_registry()` builds one with
the routing/MANET and line-status types defined here, then lets plugin packages add theirs:
a plugin module defines `register_tx_types(registry: TxRegistry) -> None`, which calls
`register_tx_type(registry, TxType(...))` (or `registry.register(...)`).
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from types import MappingProxyType
from typing import Any

from ledger import codec
from ledger.errors import CodecError, LedgerError, TxSchemaError, UnknownTxType
from ledger.template import Runs, canonical_order, first_type, tx_template
from mesh import events as ev
from mesh.line import LineStatus

MAX_TX_BYTES = 16 * 1024
"""Largest encoded transaction accepted."""
TYPE_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
KINDS = ("int", "float", "bytes", "str", "bool", "list", "map", "any")
DEFAULT_PLUGINS = ("ledger.contracts", "agent.modules.records")
"""Modules whose `register_tx_types(registry)` `default_registry()` calls when they exist."""


@dataclass(frozen=True, slots=True)
class Field:
    """Schema of one body value.

    `lo`/`hi` bound an int or float's value, or the length of bytes, str, list or map.
    `items` is the schema of a list's items; `fields` the schema of a nested map.
    `optional` lets the key be absent or None.
    """

    kind: str
    lo: float | None = None
    hi: float | None = None
    optional: bool = False
    items: Field | None = None
    fields: Mapping[str, Field] | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown field kind {self.kind!r}; use one of {KINDS}")


def Int(lo: int | None = None, hi: int | None = None, *, optional: bool = False) -> Field:
    return Field("int", lo, hi, optional)


def Float(lo: float | None = None, hi: float | None = None, *, optional: bool = False) -> Field:
    """A number: ints are accepted too (CBOR writes 2.0 as the shortest float, not an int)."""
    return Field("float", lo, hi, optional)


def Bytes(lo: int = 0, hi: int = 1024, *, optional: bool = False) -> Field:
    return Field("bytes", lo, hi, optional)


def Str(hi: int = 256, *, lo: int = 0, optional: bool = False) -> Field:
    return Field("str", lo, hi, optional)


def Bool(*, optional: bool = False) -> Field:
    return Field("bool", optional=optional)


def List(items: Field, hi: int = 256, *, optional: bool = False) -> Field:
    return Field("list", 0, hi, optional, items=items)


def Map(fields: Mapping[str, Field], *, optional: bool = False) -> Field:
    return Field("map", optional=optional, fields=MappingProxyType(dict(fields)))


def Any_(*, optional: bool = False) -> Field:
    """Any plain CBOR value (for payloads whose schema a plugin's `check` enforces)."""
    return Field("any", optional=optional)


@dataclass(frozen=True, slots=True)
class TxType:
    """A registered transaction type: its name, documentation, and body schema.

    Unknown body keys are rejected (a typo must not pass). `check`, when given, runs after the
    schema and raises `TxSchemaError` for rules across fields.
    """

    name: str
    doc: str
    fields: Mapping[str, Field]
    check: Callable[[Mapping[str, Any]], None] | None = None

    def __post_init__(self) -> None:
        if not TYPE_NAME.match(self.name) or len(self.name) > 64:
            raise ValueError(f"transaction type name {self.name!r} must be dotted lower_case")
        object.__setattr__(self, "fields", MappingProxyType(dict(self.fields)))


@dataclass(frozen=True, slots=True)
class Transaction:
    """One typed record. Its author and time are those of the block that carries it."""

    type: str
    body: Mapping[str, Any]

    def to_wire(self) -> list[Any]:
        return [self.type, dict(self.body)]

    def encode(self) -> bytes:
        return codec.encode(self.to_wire())


def _check_value(path: str, spec: Field, value: Any) -> None:
    if value is None:
        if spec.optional:
            return
        raise TxSchemaError("missing", path)
    kind = spec.kind
    size: float | None = None
    if kind == "int":
        if type(value) is not int:
            raise TxSchemaError("type", f"{path} must be an int")
        size = value
    elif kind == "float":
        if type(value) not in (int, float) or not math.isfinite(value):
            raise TxSchemaError("type", f"{path} must be a finite number")
        size = value
    elif kind == "bytes":
        if type(value) is not bytes:
            raise TxSchemaError("type", f"{path} must be bytes")
        size = len(value)
    elif kind == "str":
        if type(value) is not str:
            raise TxSchemaError("type", f"{path} must be a str")
        size = len(value)
    elif kind == "bool":
        if type(value) is not bool:
            raise TxSchemaError("type", f"{path} must be a bool")
    elif kind == "list":
        if type(value) is not list:
            raise TxSchemaError("type", f"{path} must be a list")
        size = len(value)
        if spec.items is not None:
            for i, item in enumerate(value):
                _check_value(f"{path}[{i}]", spec.items, item)
        else:
            _check_plain(path, value)
    elif kind == "map":
        if type(value) is not dict:
            raise TxSchemaError("type", f"{path} must be a map")
        if spec.fields is not None:
            _check_map(path + ".", spec.fields, value)
        else:
            _check_plain(path, value)
    elif kind == "any":
        _check_plain(path, value)
    if size is not None:
        if spec.lo is not None and size < spec.lo:
            raise TxSchemaError("range", f"{path} below {spec.lo}")
        if spec.hi is not None and size > spec.hi:
            raise TxSchemaError("range", f"{path} above {spec.hi}")


def _check_plain(path: str, value: Any) -> None:
    try:
        codec.check_plain(value)
    except CodecError as exc:
        raise TxSchemaError("type", f"{path}: {exc}") from exc


def _check_map(prefix: str, fields: Mapping[str, Field], body: Mapping[Any, Any]) -> None:
    for key in body:
        if key not in fields:
            raise TxSchemaError("unknown_field", f"{prefix}{key}")
    for key, spec in fields.items():
        _check_value(prefix + key, spec, body.get(key))


Checker = Callable[[Any], None]

_FAST_TEST = {
    "int": "type({v}) is int{range}",
    "float": "((type({v}) is float and {v} - {v} == 0.0) or type({v}) is int){range}",
    "bytes": "type({v}) is bytes{size}",
    "str": "type({v}) is str{size}",
    "bool": "type({v}) is bool",
}
"""Per kind, a Python test that passes only values `_check_value` accepts (`{v}` the value).
`x - x == 0.0` holds for finite floats only (inf - inf and NaN - NaN are NaN), without the
call that `math.isfinite` costs."""


def _compile_map(prefix: str, fields: Mapping[str, Field], *, body: bool = False,
                 extra: Callable[[Mapping[str, Any]], None] | None = None) -> Checker:
    """What `_check_map(prefix, fields, body)` does, as one generated function per schema.

    The fast path takes a map that holds every field in canonical order (what authors write:
    `Block.create` encodes deterministically): one `tuple(body)` comparison checks its keys and
    one `body.values()` unpacks them, instead of a `get` per field. Any other map (a field
    left out, keys in another order, a failing value) takes the general path: each scalar
    field one inline test, and a value failing it (or a rare kind: lists, free maps, any) goes
    to `_check_value`, which raises the precise error or lets an absent optional value pass.
    The schemas come from code (plugins), not from the wire. `body` makes it the whole check
    of a transaction body: the body must be a map with string keys; `extra`, the type's own
    check, runs last.
    """
    names: dict[str, Any] = {"_names": frozenset(fields),
                             "_unknown": partial(_check_map, prefix, fields),
                             "_dict": dict, "_proxy": MappingProxyType, "_extra": extra,
                             "_not_a_body": _not_a_body}
    tests: dict[str, str] = {}
    raising: set[str] = set()
    """Fields whose fast test may raise (a nested map, a rare kind): they go last, in schema
    order, so that the first error raised is the one the general path would raise."""
    general: list[str] = []
    for k, (key, spec) in enumerate(fields.items()):
        names[f"_slow{k}"] = partial(_check_value, prefix + key, spec)
        general.append(f"    v = get({key!r})")
        if spec.kind == "map" and spec.fields is not None:
            names[f"_map{k}"] = _compile_map(f"{prefix}{key}.", spec.fields)
            general.append(f"    if type(v) is dict: _map{k}(v)")
            general.append(f"    else: _slow{k}(v)")
            tests[key] = f"(type(v{k}) is _dict and _map{k}(v{k}) is None)"
            raising.add(key)
        elif spec.kind not in _FAST_TEST:
            general.append(f"    _slow{k}(v)")
            tests[key] = f"_slow{k}(v{k}) is None"  # raises, or lets the value pass
            raising.add(key)
            continue
        else:
            what = "{v}" if spec.kind in ("int", "float") else "len({v})"
            names[f"_lo{k}"], names[f"_hi{k}"] = spec.lo, spec.hi
            if spec.lo is not None and spec.hi is not None:
                bounds = f" and _lo{k} <= {what} <= _hi{k}"  # one len() for both bounds
            elif spec.lo is not None:
                bounds = f" and {what} >= _lo{k}"
            elif spec.hi is not None:
                bounds = f" and {what} <= _hi{k}"
            else:
                bounds = ""
            template = _FAST_TEST[spec.kind].replace("{range}", bounds).replace("{size}", bounds)
            general.append(f"    if not ({template.format(v='v')}): _slow{k}(v)")
            tests[key] = f"({template.format(v=f'v{k}')})"
        if spec.optional:
            tests[key] = f"(v{k} is None or {tests[key]})"
    order = canonical_order(fields)
    names["_order"] = order
    lines = ["def check(body):"]
    if order:
        index = {key: k for k, key in enumerate(fields)}
        fast = ([test for key, test in tests.items() if key not in raising]
                + [test for key, test in tests.items() if key in raising])
        lines += ["    if type(body) is _dict and tuple(body) == _order:",
                  f"        {', '.join(f'v{index[key]}' for key in order)}, = body.values()",
                  f"        if {' and '.join(fast)}:"]
        lines += ["            _extra(body)"] if extra is not None else []
        lines += ["            return"]
    if body:
        lines += ["    if type(body) is not _dict and type(body) is not _proxy:",
                  "        _not_a_body(body)",
                  "    if not _names.issuperset(body):",
                  "        _not_a_body(body)",
                  "        _unknown(body)"]
    else:
        lines += ["    if not _names.issuperset(body):",
                  "        _unknown(body)"]
    lines.append("    get = body.get")
    lines += general
    if extra is not None:
        lines.append("    _extra(body)")
    exec("\n".join(lines), names)  # the source is built above from the schema alone
    check: Checker = names["check"]
    return check


def _not_a_body(body: Any) -> None:
    """Raise for a body that is no map, or a map with a key that is no string."""
    if type(body) is not dict and type(body) is not MappingProxyType:
        raise TxSchemaError("type", "body must be a map")
    for key in body:
        if type(key) is not str:
            raise TxSchemaError("type", "body keys must be strings")


def _compile_type(tx_type: TxType) -> Checker:
    """The whole body check of a type: key types, schema, then the type's own `check`."""
    return _compile_map("", tx_type.fields, body=True, extra=tx_type.check)


class TxRegistry:
    """The transaction types a node accepts. Not shared: each ledger holds its own."""

    def __init__(self) -> None:
        self._types: dict[str, TxType] = {}
        self._checks: dict[str, Checker] = {}
        self._runs: dict[str, Runs] = {}

    def register(self, tx_type: TxType) -> None:
        """Add a type; registering the very same type twice is harmless, a clash is an error."""
        known = self._types.get(tx_type.name)
        if known is not None and known != tx_type:
            raise LedgerError(f"transaction type {tx_type.name} is already registered")
        self._types[tx_type.name] = tx_type
        self._checks[tx_type.name] = _compile_type(tx_type)
        template = tx_template(tx_type)
        if template is None:
            self._runs.pop(tx_type.name, None)
        else:
            self._runs[tx_type.name] = Runs(tx_type.name, template)

    def get(self, name: str) -> TxType:
        try:
            return self._types[name]
        except KeyError:
            raise UnknownTxType("unknown_type", repr(name)[:80]) from None

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def names(self) -> list[str]:
        return sorted(self._types)

    def validate(self, tx: Transaction) -> None:
        """Raise `UnknownTxType` or `TxSchemaError` unless `tx` matches its type's schema."""
        check = self._checks.get(tx.type)
        if check is None:
            raise UnknownTxType("unknown_type", repr(tx.type)[:80])
        check(tx.body)

    def make(self, type_name: str, body: Mapping[str, Any]) -> Transaction:
        """A validated transaction (what an author calls before appending)."""
        tx = Transaction(type_name, dict(body))
        self.validate(tx)
        if len(tx.encode()) > MAX_TX_BYTES:
            raise TxSchemaError("too_big", f"{type_name} over {MAX_TX_BYTES} bytes")
        return tx

    def from_wire(self, value: Any) -> Transaction:
        """A transaction from its decoded wire form `[type, body]`, validated."""
        if type(value) is not list or len(value) != 2 or type(value[0]) is not str:
            raise TxSchemaError("malformed", "a transaction is [type, body]")
        name, body = value
        check = self._checks.get(name)
        if check is None:
            raise UnknownTxType("unknown_type", repr(name)[:80])
        check(body)
        return Transaction(name, body)

    def check_wire(self, values: list[Any]) -> list[str]:
        """Check each item of a block's decoded transaction list as `from_wire` does, and
        return their types (the receiving hot path: it makes no `Transaction`; a block's
        `txs` makes them when first read, see `wire_transactions`)."""
        checks = self._checks
        types: list[str] = []
        for value in values:
            if type(value) is not list or len(value) != 2 or type(value[0]) is not str:
                raise TxSchemaError("malformed", "a transaction is [type, body]")
            name, body = value
            check = checks.get(name)
            if check is None:
                raise UnknownTxType("unknown_type", repr(name)[:80])
            check(body)
            types.append(name)
        return types

    def match_wire(self, raw: bytes, start: int, end: int, count: int) -> list[str] | None:
        """The types, when `raw[start:end]` is the encoding of `count` transactions that their
        types' byte templates spell (so each matches its schema; `ledger.template`); else
        None: decode them and `check_wire` (the fast path may refuse what that accepts).
        A block of one type matches as one run; a mixed one transaction by transaction."""
        name = first_type(raw, start)
        runs = None if name is None else self._runs.get(name)
        if runs is None:
            return None
        if runs.match(raw, start, end, count):
            return [runs.name] * count
        types: list[str] = []
        pos = start
        while pos < end and len(types) < count:
            name = first_type(raw, pos)
            runs = None if name is None else self._runs.get(name)
            if runs is None:
                return None
            pos = runs.match_one(raw, pos, end)
            if pos < 0:
                return None
            types.append(runs.name)
        return types if pos == end and len(types) == count else None

    def decode(self, data: bytes) -> Transaction:
        """A transaction from untrusted bytes; raises a `TxError` or `CodecError`."""
        return self.from_wire(codec.decode(data, MAX_TX_BYTES))


def wire_transactions(values: list[list[Any]]) -> tuple[Transaction, ...]:
    """Transactions of a wire list that `TxRegistry.check_wire` accepted, without checking
    again. They are made through their slots: the frozen dataclass `__init__`
    (`object.__setattr__` per field) cost more than the schema check of a small body."""
    out: list[Transaction] = []
    for name, body in values:
        tx = _new_tx(Transaction)
        _set_tx_type(tx, name)
        _set_tx_body(tx, body)
        out.append(tx)
    return tuple(out)


_new_tx = object.__new__
_set_tx_type = Transaction.__dict__["type"].__set__
_set_tx_body = Transaction.__dict__["body"].__set__


def register_tx_type(registry: TxRegistry, tx_type: TxType) -> None:
    """What plugin packages call from their `register_tx_types(registry)`."""
    registry.register(tx_type)


def load_plugins(registry: TxRegistry, modules: Iterable[str], *, optional: bool = False) -> None:
    """Import each module and call its `register_tx_types(registry)`.

    With `optional`, a module that does not exist (or has no such function yet) is skipped;
    an error raised inside an existing module is never hidden.
    """
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if optional and exc.name is not None and name.startswith(exc.name):
                continue
            raise
        hook = getattr(module, "register_tx_types", None)
        if hook is None:
            if optional:
                continue
            raise LedgerError(f"plugin {name} has no register_tx_types(registry)")
        hook(registry)


# --- routing/MANET and line-status types ---------------------------------------------------

NODE = Bytes(8, 8)
LINE = Map({
    "connected": Bool(),
    "technology": Str(16),
    "signal_dbm": Int(-200, 0),
    "backhaul_reachable": Bool(),
    "rtt_ms": Int(0, 600_000),
})
MESH_TIME = Float(0)
"""`t`: the mesh core's clock (seconds) when the event happened; the block carries wall time."""

BUILTIN_TYPES = (
    TxType("mesh.neighbour_up", "A signed HELLO arrived from a new neighbour.",
           {"node": NODE, "iface": Str(32), "line": LINE, "t": MESH_TIME}),
    TxType("mesh.neighbour_down", "A neighbour fell silent or its link broke.",
           {"node": NODE, "reason": Str(64), "t": MESH_TIME}),
    TxType("mesh.neighbour_line", "A neighbour reported a different mobile-line status.",
           {"node": NODE, "old": LINE, "new": LINE, "t": MESH_TIME}),
    TxType("line.status", "This node's own mobile line changed.",
           {"old": LINE, "new": LINE, "t": MESH_TIME}),
    TxType("mesh.manet_joined", "This node formed or joined a MANET.",
           {"neighbours": List(NODE, 1024), "has_line": Bool(), "t": MESH_TIME}),
    TxType("mesh.manet_left", "This node lost its last neighbour.", {"t": MESH_TIME}),
    TxType("mesh.route_added", "A route was installed or replaced.",
           {"dest": NODE, "next_hop": NODE, "hops": Int(0, 255), "seq": Int(0, 2**32 - 1),
            "lifetime_s": Float(0), "t": MESH_TIME}),
    TxType("mesh.route_broken", "A route became invalid.",
           {"dest": NODE, "next_hop": NODE, "hops": Int(0, 255), "seq": Int(0, 2**32 - 1),
            "reason": Str(64), "t": MESH_TIME}),
    TxType("mesh.route_discovery_failed", "Route discovery for a destination got no reply.",
           {"dest": NODE, "attempts": Int(0, 255), "dropped": Int(0), "t": MESH_TIME}),
    TxType("mesh.gateway_changed", "The gateway to the backhaul was established, changed or lost.",
           {"old": Bytes(8, 8, optional=True), "new": Bytes(8, 8, optional=True),
            "next_hop": Bytes(8, 8, optional=True), "hops": Int(0, 255),
            "seq": Int(0, 2**32 - 1), "line": Map(LINE.fields or {}, optional=True),
            "reason": Str(64), "t": MESH_TIME}),
)


def register_builtin_types(registry: TxRegistry) -> None:
    for tx_type in BUILTIN_TYPES:
        registry.register(tx_type)


def default_registry(plugins: Iterable[str] = DEFAULT_PLUGINS) -> TxRegistry:
    """A registry with the routing and line types, plus whatever the plugin modules add."""
    registry = TxRegistry()
    register_builtin_types(registry)
    load_plugins(registry, plugins, optional=True)
    return registry


def line_to_body(line: LineStatus) -> dict[str, Any]:
    return {"connected": line.connected, "technology": line.technology,
            "signal_dbm": line.signal_dbm, "backhaul_reachable": line.backhaul_reachable,
            "rtt_ms": line.rtt_ms}


def line_from_body(body: Mapping[str, Any]) -> LineStatus:
    return LineStatus(connected=body["connected"], technology=body["technology"],
                      signal_dbm=body["signal_dbm"], backhaul_reachable=body["backhaul_reachable"],
                      rtt_ms=body["rtt_ms"])


def transaction_from_mesh_event(event: ev.Event) -> Transaction | None:
    """The ledger record of a mesh event, or None for events that are not routing history
    (application data received, forwarded or dropped)."""
    t = float(event.time)
    if isinstance(event, ev.NeighbourUp):
        return Transaction("mesh.neighbour_up", {"node": event.node, "iface": event.iface,
                                                 "line": line_to_body(event.line), "t": t})
    if isinstance(event, ev.NeighbourDown):
        return Transaction("mesh.neighbour_down",
                           {"node": event.node, "reason": event.reason, "t": t})
    if isinstance(event, ev.NeighbourLineChanged):
        return Transaction("mesh.neighbour_line", {"node": event.node,
                                                   "old": line_to_body(event.old),
                                                   "new": line_to_body(event.new), "t": t})
    if isinstance(event, ev.LineStatusChanged):
        return Transaction("line.status", {"old": line_to_body(event.old),
                                           "new": line_to_body(event.new), "t": t})
    if isinstance(event, ev.ManetJoined):
        return Transaction("mesh.manet_joined", {"neighbours": list(event.neighbours),
                                                 "has_line": event.has_line, "t": t})
    if isinstance(event, ev.ManetLeft):
        return Transaction("mesh.manet_left", {"t": t})
    if isinstance(event, ev.RouteAdded):
        return Transaction("mesh.route_added", {
            "dest": event.dest, "next_hop": event.next_hop, "hops": event.hops,
            "seq": event.seq, "lifetime_s": float(event.lifetime_s), "t": t})
    if isinstance(event, ev.RouteBroken):
        return Transaction("mesh.route_broken", {
            "dest": event.dest, "next_hop": event.next_hop, "hops": event.hops,
            "seq": event.seq, "reason": event.reason, "t": t})
    if isinstance(event, ev.RouteDiscoveryFailed):
        return Transaction("mesh.route_discovery_failed", {
            "dest": event.dest, "attempts": event.attempts, "dropped": event.dropped, "t": t})
    if isinstance(event, ev.GatewayChanged):
        return Transaction("mesh.gateway_changed", {
            "old": event.old, "new": event.new, "next_hop": event.next_hop, "hops": event.hops,
            "seq": event.seq, "line": None if event.line is None else line_to_body(event.line),
            "reason": event.reason, "t": t})
    return None


__all__ = [
    "BUILTIN_TYPES", "DEFAULT_PLUGINS", "MAX_TX_BYTES", "Any_", "Bool", "Bytes", "CodecError",
    "Field", "Float", "Int", "List", "Map", "Str", "Transaction", "TxRegistry", "TxType",
    "default_registry", "line_from_body", "line_to_body", "load_plugins",
    "register_builtin_types", "register_tx_type", "transaction_from_mesh_event",
]
