"""The Raspberry Pi install script in a scratch root, and the systemd unit's syntax."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from agent.config import load_config
from mesh.identity import Identity

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "raspberrypi"
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("useradd") is None or shutil.which("openssl") is None,
    reason="needs root, useradd and openssl")


def scratch_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    etc = root / "etc"
    etc.mkdir(parents=True)
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (etc / "group").write_text("root:x:0:\nbluetooth:x:112:\n")
    (etc / "shadow").write_text("root:*:19000:0:99999:7:::\n")
    (etc / "gshadow").write_text("root:*::\nbluetooth:!::\n")
    for name in ("shadow", "gshadow"):
        (etc / name).chmod(0o600)
    return root


def install(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(DEPLOY / "install.sh"), "--root", str(root),
                           "--skip-pip", *args], capture_output=True, text=True, check=False)


def test_install_update_and_rollback_in_a_scratch_root(tmp_path: Path) -> None:
    root = scratch_root(tmp_path)
    done = install(root, "--release", "r1", "--interface", "eth9")
    assert done.returncode == 0, done.stderr
    passwd = {line.split(":")[0]: line.split(":") for line in
              (root / "etc" / "passwd").read_text().splitlines()}
    assert passwd["manet"][6] == "/usr/sbin/nologin"
    uid = int(passwd["manet"][2])
    assert 0 < uid < 1000  # a system user
    assert "manet" in (root / "etc" / "group").read_text().split("bluetooth:x:112:")[1]

    opt = root / "opt" / "manet-agent"
    assert os.readlink(opt / "current") == "releases/r1"
    assert (opt / "releases" / "r1" / "bin" / "python").exists()
    config = root / "etc" / "manet-agent" / "agent.toml"
    assert stat.S_IMODE(config.stat().st_mode) == 0o640
    parsed = load_config(config)
    assert parsed.udp[0].interface == "eth9"
    key = root / "var" / "lib" / "manet-agent" / "node.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and key.stat().st_uid == uid
    node_id = Identity.load(key).node_id
    unit = root / "etc" / "systemd" / "system" / "manet-agent.service"
    assert unit.read_text() == (DEPLOY / "manet-agent.service").read_text()

    # An update keeps the configuration and the key, and switches `current`.
    config.write_text(config.read_text().replace('name = ""', 'name = "van-12"'))
    done = install(root, "--release", "r2")
    assert done.returncode == 0, done.stderr
    assert os.readlink(opt / "current") == "releases/r2"
    assert load_config(config).node.name == "van-12"
    assert Identity.load(key).node_id == node_id
    assert install(root, "--release", "r2").returncode != 0  # releases are immutable

    done = subprocess.run(["bash", str(DEPLOY / "install.sh"), "--root", str(root),
                           "--rollback"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert os.readlink(opt / "current") == "releases/r1"


def test_install_rejects_unknown_options(tmp_path: Path) -> None:
    done = install(scratch_root(tmp_path), "--colour")
    assert done.returncode == 2 and "unknown option --colour" in done.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_unit_verifies(tmp_path: Path) -> None:
    """systemd-analyze verify, with the binaries pointed at ones that exist here."""
    unit = tmp_path / "manet-agent.service"
    text = (DEPLOY / "manet-agent.service").read_text()
    unit.write_text(text.replace("/opt/manet-agent/current/bin/manet-agent", "/bin/true"))
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                          text=True, check=False)
    ours = [line for line in (done.stdout + done.stderr).splitlines() if str(unit) in line]
    assert done.returncode == 0 and ours == [], done.stderr
    for key in ("NoNewPrivileges=yes", "ProtectSystem=strict", "CapabilityBoundingSet=",
                "StandardError=journal"):
        assert key in text
