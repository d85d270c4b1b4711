"""Structured logs: one line per event, the node id on every line, friendly to journald.

Callers log an event name and fields: `log.event("neighbour_up", peer=..., iface=...)`.
A line looks like `level=info node=1a2b3c4d5e6f7a8b event=neighbour_up peer=... iface=udp:eth0`
(logfmt) or one JSON object per line. No timestamp by default: journald stamps each line,
and a second clock in the text only makes lines longer. Lines go to stderr, which systemd
hands to journald; `SYSLOG_IDENTIFIER` comes from the unit.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}


def _logfmt_value(value: Any) -> str:
    text = value.hex() if isinstance(value, bytes) else str(value)
    if text == "" or any(c in text for c in ' ="\n\\'):
        return json.dumps(text)
    return text


class EventFormatter(logging.Formatter):
    """Formats records carrying `node` and `fields` attributes as logfmt or JSON."""

    def __init__(self, *, fmt: str = "logfmt", timestamps: bool = False) -> None:
        super().__init__()
        self.fmt = fmt
        self.timestamps = timestamps

    def format(self, record: logging.LogRecord) -> str:
        items: dict[str, Any] = {}
        if self.timestamps:
            items["ts"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + (
                f".{int(record.msecs):03d}Z"
            )
        items["level"] = record.levelname.lower()
        items["node"] = getattr(record, "node", "-")
        items["event"] = getattr(record, "event", None) or record.getMessage()
        for key, value in getattr(record, "fields", {}).items():
            items[f"field_{key}" if key in ("ts", "level", "node", "event") else key] = value
        if record.exc_info:
            items["error"] = self.formatException(record.exc_info).replace("\n", " | ")
        if self.fmt == "json":
            return json.dumps(
                {k: (v.hex() if isinstance(v, bytes) else v) for k, v in items.items()},
                default=str,
            )
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in items.items())


class NodeLogger:
    """A logger bound to one node id (several agents in one process keep their lines apart)."""

    def __init__(self, node_id: str, logger: logging.Logger | None = None) -> None:
        self.node_id = node_id
        self.logger = logger or logging.getLogger("manet_agent")

    def event(self, name: str, level: int = logging.INFO, /, **fields: Any) -> None:
        if self.logger.isEnabledFor(level):
            self.logger.log(level, name, extra={"node": self.node_id, "event": name,
                                                "fields": fields})

    def debug(self, name: str, **fields: Any) -> None:
        self.event(name, logging.DEBUG, **fields)

    def warning(self, name: str, **fields: Any) -> None:
        self.event(name, logging.WARNING, **fields)

    def error(self, name: str, **fields: Any) -> None:
        self.event(name, logging.ERROR, **fields)

    def exception(self, name: str, **fields: Any) -> None:
        self.logger.error(name, exc_info=True, extra={"node": self.node_id, "event": name,
                                                      "fields": fields})


def setup_logging(level: str = "info", fmt: str = "logfmt", timestamps: bool = False,
                  stream: TextIO | None = None) -> logging.Logger:
    """Route the agent's logger to one stream handler (stderr by default)."""
    logger = logging.getLogger("manet_agent")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(EventFormatter(fmt=fmt, timestamps=timestamps))
    logger.addHandler(handler)
    logger.setLevel(LEVELS[level])
    logger.propagate = False
    return logger
