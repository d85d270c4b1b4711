"""The contract model: context in, state writes and events out.

A contract template is a class whose methods are pure functions of
(context, read-only state view, arguments) -> `Result`. They get no clock, no randomness and
no I/O; the only time they see is the block time in the context. Each read of the state and
each loop step costs a step from a budget, so a call cannot run away. Writes are returned, not
applied: the engine applies them only if the whole call succeeds.

State is one flat key -> value map of plain data (str, int, bool, bytes, None, lists, dicts
with str keys). Contract code must never mutate a value it read (copy it first), and it must
never iterate a dict without sorting it: both rules keep replays identical on every node.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

from ledger.contracts.errors import InvalidTransaction, StepBudgetExceeded

OWNER = "owner"
MEMBER = "member"
AUDITOR = "auditor"
OPERATOR = "operator"
ROLES = (OWNER, MEMBER, AUDITOR, OPERATOR)
ANYONE = "*"
"""Pseudo-role: any author may call the method."""


class Meter:
    """Counts steps of one call and stops it at the budget."""

    __slots__ = ("budget", "used")

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.used = 0

    def step(self, n: int = 1) -> None:
        self.used += n
        if self.used > self.budget:
            raise StepBudgetExceeded(f"call used more than {self.budget} steps")


class Context(NamedTuple):
    """What a call knows about its transaction: block time, author, id, and the step meter.

    `author` is the hex node id of the signer (None for a timer the engine fires).
    Immutable; a named tuple because one is built per transaction on the replay hot path.
    """

    time_ms: int
    author: str | None
    tx_id: str
    meter: Meter


class StateView:
    """Read-only, metered access to the committed state."""

    __slots__ = ("_data", "_meter")

    def __init__(self, data: Mapping[str, Any], meter: Meter) -> None:
        self._data = data
        self._meter = meter

    def get(self, key: str, default: Any = None) -> Any:
        meter = self._meter
        meter.used += 1
        if meter.used > meter.budget:
            meter.step(0)
        return self._data.get(key, default)

    def __contains__(self, key: str) -> bool:
        self._meter.step()
        return key in self._data


@dataclass(frozen=True, slots=True)
class Event:
    """Something a call wants the world to see (a child selected, a usage flagged, ...)."""

    kind: str
    contract: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Timer:
    """A call that the engine makes later, at block time `at_ms`, to `method` with `args`."""

    at_ms: int
    contract: str
    method: str
    args: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Result:
    """What a call returns: writes (None deletes a key), appends to list values (created
    empty when missing; cheaper than rewriting a long list), events, and timers."""

    writes: Mapping[str, Any] = field(default_factory=dict)
    appends: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    events: tuple[Event, ...] = ()
    timers: tuple[Timer, ...] = ()


Method = Callable[[Context, StateView, str, Mapping[str, Any]], Result]
"""A bound template method: (context, state, contract id, arguments) -> Result."""


class Template:
    """Base of contract templates. `ROLES_FOR` says, as data, who may call which method.

    Subclasses add methods named like the payload's "method" field; the engine looks them up
    only through `ROLES_FOR`, so nothing else on the class can be called by a transaction.
    `TIMERS` lists methods that only the engine may call (at a scheduled time).
    """

    NAME: ClassVar[str] = ""
    ROLES_FOR: ClassVar[Mapping[str, frozenset[str]]] = {}
    TIMERS: ClassVar[frozenset[str]] = frozenset()

    def validate_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Check and normalise creation parameters; raise InvalidTransaction when bad."""
        return dict(params)

    def on_created(self, state: StateView, record: dict[str, Any]) -> dict[str, Any]:
        """Derive data from the new contract's record (and its parent's) once, at creation;
        parameters never change afterwards, so calls can read the result instead."""
        return record

    def method(self, name: str) -> Method:
        fn: Method = getattr(self, "call_" + name)
        return fn


def need(args: Mapping[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    """Fetch a typed argument or raise InvalidTransaction (bool is not an int here)."""
    if name not in args:
        raise InvalidTransaction(f"missing argument {name!r}")
    value = args[name]
    if isinstance(value, bool) and kind is int:
        raise InvalidTransaction(f"argument {name!r} must be int, got bool")
    if not isinstance(value, kind):
        raise InvalidTransaction(f"argument {name!r} has type {type(value).__name__}")
    return value


HEX_ID = re.compile(r"[0-9a-f]{16}")
"""A node id as contracts write it: 16 lowercase hex digits (8 bytes)."""


def is_hex_id(value: object) -> bool:
    return isinstance(value, str) and HEX_ID.fullmatch(value) is not None


def need_hex_id(args: Mapping[str, Any], name: str) -> str:
    value = need(args, name, str)
    if not is_hex_id(value):
        raise InvalidTransaction(f"argument {name!r} must be a 16-digit lowercase hex node id")
    return str(value)
