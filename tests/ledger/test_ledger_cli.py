"""`manet-agent ledger show|verify|export` through `ledger.cli.register`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from ledger import Ledger, Transaction
from ledger.cli import register
from mesh import events as ev
from mesh.identity import Identity


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="manet-agent")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["ledger", *argv])
    code = args.func(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.sqlite"
    led = Ledger.open(path, Identity.from_seed(b"\x01" * 32))
    led.record_event(ev.RouteAdded(b"d" * 8, b"n" * 8, 2, 7, 6.0, 1.5), 1_750_000_000.0)
    led.append(Transaction("mesh.manet_left", {"t": 2.0}), 1_750_000_000.0)
    led.flush(1_750_000_001.0)
    led.close()
    return path


def test_export_prints_json_lines(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "export", "--db", str(db))
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["type"] for r in lines] == ["mesh.route_added", "mesh.manet_left"]
    assert lines[0]["body"]["dest"] == (b"d" * 8).hex() and lines[0]["time_ms"] == 1750000001000
    code, out, _ = run(capsys, "export", "--db", str(db), "--type", "mesh.manet_left")
    assert code == 0 and len(out.splitlines()) == 1


def test_show_is_readable(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "show", "--db", str(db))
    assert code == 0
    assert "mesh.route_added" in out and "hops=2" in out and "2025-06-15" in out


def test_verify_reports_and_fails_on_damage(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "verify", "--db", str(db))
    assert code == 0 and json.loads(out)["ok"] is True
    led = Ledger.open(db, Identity.from_seed(b"\x01" * 32))
    raw = bytearray(led.store.block_raw(led.author, 0) or b"")
    raw[-1] ^= 1
    led.store.db.execute("UPDATE blocks SET raw=?", (bytes(raw),))
    led.close()
    code, out, _ = run(capsys, "verify", "--db", str(db))
    report = json.loads(out)
    assert code == 1 and report["ok"] is False and "signature" in report["problems"][0]["error"]


def test_foreign_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "notes.txt"
    other.write_text("shopping list")
    code, _, err = run(capsys, "show", "--db", str(other))
    assert code == 2 and "not an SQLite database" in err
