"""The compiled cores (mesh.compiled): the same results as the sources, and never stale."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sim_radio.engine

import mesh.node
from mesh import compiled

ROOT = Path(__file__).resolve().parents[2]
QUICK_DEMO = ROOT / "sim-radio" / "scenarios" / "quick_demo.toml"


def _run(out: Path, pure: bool) -> dict[str, object]:
    env = {**os.environ, compiled.PURE_ENV: "1" if pure else "0"}
    subprocess.run([sys.executable, "-m", "sim_radio.cli", "run", str(QUICK_DEMO), "--until",
                    "60", "--json", str(out), "--quiet"], check=True, capture_output=True,
                   env=env)
    data: dict[str, object] = json.loads(out.read_text())
    for key in ("wall_seconds", "sim_seconds_per_wall_second"):
        data.pop(key)
    return data


def test_compiled_and_interpreted_cores_give_the_same_run(tmp_path: Path) -> None:
    # The quick demo (contention, mobility, lines cut by a disaster zone, ledgers syncing
    # through gateways) for a simulated minute: every figure equal, down to the last bit.
    if not compiled.active():
        pytest.skip("compiled cores not in use: not built (make builds them where a C compiler "
                    "is), out of date, or MANET_PURE_PYTHON=1 (make test's second pass)")
    fast = _run(tmp_path / "compiled.json", pure=False)
    slow = _run(tmp_path / "pure.json", pure=True)
    assert fast.pop("compiled_cores") is True
    assert slow.pop("compiled_cores") is False
    assert fast["data_delivered"] and fast["ledger"]
    assert json.dumps(fast, sort_keys=True) == json.dumps(slow, sort_keys=True)


def test_this_process_runs_all_of_the_group_or_none() -> None:
    where = {Path(mesh.node.__file__).suffix, Path(sim_radio.engine.__file__).suffix}
    assert where == ({".so"} if compiled.active() else {".py"})


def test_a_build_that_does_not_match_the_sources_is_not_used(tmp_path: Path) -> None:
    build = tmp_path / "compiled"
    build.mkdir()
    assert compiled.stale_reason(build) == "not built"
    (build / compiled.MANIFEST).write_text("{not json")
    assert (compiled.stale_reason(build) or "").startswith("unreadable manifest")
    manifest = {**compiled.fingerprint(), "modules": ["mesh/node.so"]}
    (build / "mesh").mkdir()
    (build / "mesh" / "node.so").write_bytes(b"")
    (build / compiled.MANIFEST).write_text(json.dumps(manifest))
    assert compiled.stale_reason(build) is None
    edited = json.loads(json.dumps(manifest))
    edited["sources"]["mesh/node.py"] = "0" * 64
    (build / compiled.MANIFEST).write_text(json.dumps(edited))
    assert compiled.stale_reason(build) == "changed since the build: mesh/node.py"
    (build / compiled.MANIFEST).write_text(json.dumps({**manifest, "python": "cpython-39"}))
    assert compiled.stale_reason(build) == (
        f"built for cpython-39, this is {sys.implementation.cache_tag}")
    (build / "mesh" / "node.so").unlink()
    (build / compiled.MANIFEST).write_text(json.dumps(manifest))
    assert compiled.stale_reason(build) == "missing mesh/node.so"


def test_a_stale_build_is_refused_with_a_warning(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    build = tmp_path / "compiled"
    build.mkdir()
    manifest = {**compiled.fingerprint(), "modules": []}
    manifest["sources"] = {"mesh/node.py": "0" * 64}
    (build / compiled.MANIFEST).write_text(json.dumps(manifest))
    monkeypatch.setattr(compiled, "BUILD", build)
    monkeypatch.setenv(compiled.PURE_ENV, "0")
    with pytest.warns(RuntimeWarning, match="changed since the build: .*mesh/node.py"):
        assert compiled._decide() is False
    monkeypatch.setenv(compiled.PURE_ENV, "1")
    assert compiled._decide() is False
