"""Build the compiled cores (see mesh.compiled) into build/compiled/, unless up to date.

    python -m mesh.build_compiled [--force] [--optional] [--check]

The group is compiled into a fresh directory beside the old build, which is swapped out
only once every module is there: a failed build leaves the old one (or none) in place.
"""

from __future__ import annotations

import importlib.machinery
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from mesh.compiled import BUILD, GROUP, MANIFEST, ROOT, SOURCES, fingerprint, stale_reason


def _module(source: str) -> str:
    """'sim-radio/sim_radio/engine.py' -> 'sim_radio.engine'."""
    parts = Path(source).with_suffix("").parts
    return ".".join(parts[1:] if parts[0] == "sim-radio" else parts)


LOG = BUILD.with_name("compiled.log")


def build() -> Path:
    """Compile the group into a fresh directory, then swap it in place of the old build.

    The compiler's chatter goes to build/compiled.log (named in the error if it fails).
    """
    expected = fingerprint()
    BUILD.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="compiled-", dir=BUILD.parent))
    out = work / "out"
    cwd = os.getcwd()
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    try:
        with LOG.open("w") as log:
            os.dup2(log.fileno(), 1)  # gcc and mypy write to the descriptors themselves
            os.dup2(log.fileno(), 2)
            os.chdir(ROOT)  # mypyc names modules by their paths from here
            _compile(out, work)
    except (Exception, SystemExit) as exc:
        shutil.rmtree(work, ignore_errors=True)
        raise RuntimeError(f"mypyc build failed ({exc!r}); see {LOG}") from None
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
        os.chdir(cwd)
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    modules = [_module(s).replace(".", "/") + suffix for s in SOURCES]
    modules.append(f"{GROUP}__mypyc{suffix}")
    missing = [m for m in modules if not (out / m).is_file()]
    if missing:
        raise RuntimeError(f"mypyc built no {', '.join(missing)}")
    (out / MANIFEST).write_text(json.dumps({**expected, "modules": modules}, indent=1))
    old = BUILD.with_name("compiled.old")
    shutil.rmtree(old, ignore_errors=True)
    if BUILD.exists():
        BUILD.rename(old)
    out.rename(BUILD)
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    return BUILD


def _compile(out: Path, work: Path) -> None:
    from mypyc.build import mypycify  # the build tools only when building
    from setuptools import Distribution

    extensions = mypycify(list(SOURCES), opt_level="3", group_name=GROUP,
                          target_dir=str(work / "c"))
    dist = Distribution({"name": GROUP, "ext_modules": extensions})
    command = dist.get_command_obj("build_ext")
    command.build_lib = str(out)
    command.build_temp = str(work / "obj")
    dist.run_command("build_ext")


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m mesh.build_compiled",
        description="Build the compiled cores (mypyc) into build/compiled/ unless they are "
                    "up to date.")
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    parser.add_argument("--optional", action="store_true",
                        help="on a failed build (no C compiler, say) warn and exit 0: "
                             "everything runs on the sources, only slower")
    parser.add_argument("--check", action="store_true",
                        help="only say whether the build is usable (exit 1 if not)")
    args = parser.parse_args(argv)
    reason = stale_reason()
    if args.check:
        print("up to date" if reason is None else reason)
        return 0 if reason is None else 1
    if reason is None and not args.force:
        print(f"compiled cores up to date in {BUILD}")
        return 0
    print(f"compiling {len(SOURCES)} modules with mypyc into {BUILD} ({reason or 'forced'})",
          flush=True)
    try:
        build()
    except RuntimeError as exc:  # a compiler missing or failing: say so plainly
        print(f"{'warning' if args.optional else 'error'}: compiled cores not built: {exc}; "
              f"everything runs on the sources (the simulator about half as fast)",
              file=sys.stderr)
        return 0 if args.optional else 1
    print(f"compiled cores built in {BUILD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
