"""The simulator's typed errors: they name the file, line or key at fault."""

from __future__ import annotations


class ScenarioError(ValueError):
    """A scenario or a trace file is wrong; nothing runs half-configured."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message


class TraceError(ScenarioError):
    """A line of an ns-2 or SUMO trace could not be read (`where` is "file:line")."""
