"""The `manet-agent` entry point: keep OpenSSL out of an agent that does not use TLS, and
compression libraries out of every running agent.

asyncio imports `ssl` (and `hashlib` loads OpenSSL's libcrypto) whether or not a program
uses TLS; in the agent that is 4.4 MB of its resident memory (libcrypto's pages, the ssl
module, OpenSSL's own heap). Both modules are written to run without OpenSSL: asyncio takes
`ssl` as optional, and hashlib falls back to CPython's built-in SHA-2 and BLAKE2. So, before
anything imports asyncio, `manet-agent run` marks them absent unless its configuration asks
for TLS (`[backhaul] tls_ca`). Every other command, and a configuration this cannot read
(the CLI then reports the error), runs as usual.

Likewise argparse's help formatter imports `shutil`, which loads `bz2` and `lzma` (with
libbz2 and liblzma) when it can: 0.3 MB that an agent, which compresses nothing, does
without; shutil itself is written to run without them.

And the agent runs the mesh core from its sources, as on a device, even in a checkout where
`make` has compiled it for the simulator (mesh.compiled): the compiled group's shared library
added 1.1 MB to the idle agent (30.4 against 29.3 MB) for no idle CPU gained.
MANET_PURE_PYTHON=0 in the environment lets it run compiled.
"""

from __future__ import annotations

import os
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path

DEFAULT_CONFIG = "/etc/manet-agent/agent.toml"  # agent.cli's; not imported: it loads asyncio
OPENSSL_MODULES = ("ssl", "_ssl", "_hashlib")
COMPRESSION_MODULES = ("bz2", "lzma")


def wants_openssl(argv: Sequence[str]) -> bool:
    """False only for `run` with a readable configuration that sets no TLS."""
    if not argv or argv[0] != "run":
        return True
    path = DEFAULT_CONFIG
    for i, word in enumerate(argv):
        if word == "--config" and i + 1 < len(argv):
            path = argv[i + 1]
        elif word.startswith("--config="):
            path = word.split("=", 1)[1]
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return True
    backhaul = data.get("backhaul")
    return isinstance(backhaul, dict) and bool(backhaul.get("tls_ca"))


def mark_absent(names: Sequence[str]) -> None:
    """Make `import name` fail as on a Python built without it."""
    for name in names:
        if name not in sys.modules:
            sys.modules[name] = None  # type: ignore[assignment]  # the import system's "absent"


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("MANET_PURE_PYTHON", "1")  # before anything imports mesh
    if words[:1] == ["run"]:
        mark_absent(COMPRESSION_MODULES if wants_openssl(words)
                    else COMPRESSION_MODULES + OPENSSL_MODULES)
    from agent.cli import main as cli_main

    return cli_main(words)
