"""Compiled cores: the mesh protocol and the simulator's engine, compiled with mypyc.

The modules listed in `SOURCES` are typed Python that mypyc turns into C extensions; the
simulator then runs about twice as fast on the very same code. They are built out of the
tree, into `build/compiled/` (`python -m mesh.build_compiled`, run by `make`), and used only while
every source matches, byte for byte, what was compiled: after an edit the packages run the
sources until the next build, with a warning saying so. Setting `MANET_PURE_PYTHON=1` runs
the sources regardless. An installed package (no build/ beside it), the agent on a device
among them, always runs the sources.

All of them or none: compiled modules call each other's classes natively, so a process never
mixes compiled and source versions of the group. `mesh/__init__.py` and
`sim_radio/__init__.py` call `use_compiled` before any of their modules is imported.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import json
import os
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "compiled"
MANIFEST = "manifest.json"
GROUP = "manet_compiled"
PURE_ENV = "MANET_PURE_PYTHON"

SOURCES = (
    "mesh/config.py",
    "mesh/events.py",
    "mesh/frames.py",
    "mesh/identity.py",
    "mesh/line.py",
    "mesh/node.py",
    "mesh/reassembly.py",
    "mesh/replay.py",
    "mesh/seal.py",
    "mesh/tables.py",
    "sim-radio/sim_radio/clock.py",
    "sim-radio/sim_radio/coverage.py",
    "sim-radio/sim_radio/engine.py",
    "sim-radio/sim_radio/metrics.py",
    "sim-radio/sim_radio/mobility.py",
    "sim-radio/sim_radio/radio.py",
    "sim-radio/sim_radio/spatial.py",
    "sim-radio/sim_radio/traffic.py",
)
"""The group, as paths from the repository root: the core and what the engine calls per
event. Scenario parsing, plots, ledgers and the agent stay interpreted."""

_state: bool | None = None
"""Whether this process uses the compiled group (decided once, at the first package import)."""


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fingerprint() -> dict[str, object]:
    """What a build must match: this interpreter and every source's contents."""
    return {
        "python": sys.implementation.cache_tag,
        "suffix": importlib.machinery.EXTENSION_SUFFIXES[0],
        "sources": {source: _digest(ROOT / source) for source in SOURCES},
    }


def stale_reason(build: Path = BUILD) -> str | None:
    """Why the build in `build` cannot be used now (None: it can)."""
    try:
        manifest = json.loads((build / MANIFEST).read_text())
    except FileNotFoundError:
        return "not built"
    except (OSError, ValueError) as exc:
        return f"unreadable manifest ({exc})"
    try:
        now = fingerprint()
    except OSError as exc:
        return f"source unreadable ({exc})"
    if manifest.get("python") != now["python"] or manifest.get("suffix") != now["suffix"]:
        return f"built for {manifest.get('python')}, this is {now['python']}"
    built = manifest.get("sources", {})
    assert isinstance(now["sources"], dict)
    changed = [source for source, digest in now["sources"].items()
               if built.get(source) != digest]
    if changed:
        return "changed since the build: " + ", ".join(changed)
    missing = [m for m in manifest.get("modules", []) if not (build / m).is_file()]
    if missing:
        return "missing " + ", ".join(missing)
    return None


def active() -> bool:
    """Whether this process runs the compiled group."""
    return bool(_state)


def use_compiled(package: str, path: list[str]) -> None:
    """Put the compiled modules of `package` ahead of its sources, if the build is usable."""
    global _state
    if _state is None:
        _state = _decide()
    if _state:
        path.insert(0, str(BUILD / package))


def _decide() -> bool:
    if os.environ.get(PURE_ENV, "") not in ("", "0"):
        return False
    reason = stale_reason(BUILD)
    if reason == "not built":
        return False
    if reason is not None:
        warnings.warn(f"compiled cores in {BUILD} not used ({reason}); running the sources "
                      f"(`python -m mesh.build_compiled` rebuilds them)",
                      RuntimeWarning, stacklevel=3)
        return False
    if str(BUILD) not in sys.path:
        sys.path.append(str(BUILD))  # the group's shared library is a top-level module
    return True
