"""`manet-agent contracts ...` through the argparse hook the agent wires in."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from ledger import Ledger
from ledger.contracts import payloads as P
from ledger.contracts.cli import register
from mesh.identity import Identity


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="manet-agent")
    register(p.add_subparsers(dest="command", required=True))
    return p


def run(*argv: str) -> int:
    args = parser().parse_args(list(argv))
    result: int = args.func(args)
    return result


@pytest.fixture
def setup(tmp_path: Path) -> dict[str, str]:
    keys = {}
    for name in ("owner", "auditor"):
        ident = Identity.from_seed(name.encode().ljust(32, b"\0"))
        ident.save(tmp_path / f"{name}.key")
        keys[name] = ident.hex_id
    db = tmp_path / "ledger.sqlite"
    Ledger.open(db, Identity.load(tmp_path / "owner.key")).close()
    return {"db": str(db), "owner": str(tmp_path / "owner.key"),
            "auditor": str(tmp_path / "auditor.key"), "auditor_id": keys["auditor"]}


def test_auditor_workflow_and_views(setup: dict[str, str],
                                    capsys: pytest.CaptureFixture[str]) -> None:
    owner = ("--ledger", setup["db"], "--key", setup["owner"])
    auditor = ("--ledger", setup["db"], "--key", setup["auditor"])
    body = P.create("agreement", {"title": "pilot"}, {"auditor": [setup["auditor_id"]]})
    assert run("contracts", "submit", *owner, "--body", json.dumps(body)) == 0
    capsys.readouterr()
    assert run("contracts", "pending", *auditor, "--json") == 0
    pending = json.loads(capsys.readouterr().out)
    assert [p["template"] for p in pending] == ["agreement"]
    cid = pending[0]["id"]
    assert run("contracts", "pending", *owner) == 0
    assert capsys.readouterr().out.strip() == "no pending contracts"
    # the owner is no auditor: refused before anything is written
    assert run("contracts", "approve", cid, "--reason", "mine", *owner) == 1
    assert "not a provisional contract" in capsys.readouterr().err
    assert run("contracts", "approve", cid, "--reason", "tariff checked", *auditor) == 0
    capsys.readouterr()
    assert run("contracts", "show", *owner, "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert [(c["id"], c["status"]) for c in shown["contracts"]] == [(cid, "definitive")]
    assert shown["transactions"] == 2 and shown["failed"] == 0
    assert run("contracts", "history", *owner, "--json", "--contract", cid) == 0
    history = json.loads(capsys.readouterr().out)
    assert [h["method"] for h in history] == ["agreement", "approve"]
    assert run("contracts", "replay", *owner, "--json") == 0
    replayed = json.loads(capsys.readouterr().out)
    assert replayed["state_hash"] == shown["state_hash"] and replayed["transactions"] == 2
    assert run("contracts", "reject", cid, "--reason", "late", *auditor) == 1


def test_bad_input_is_a_clear_error(setup: dict[str, str], tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    owner = ("--ledger", setup["db"], "--key", setup["owner"])
    assert run("contracts", "submit", *owner, "--body", "{not json") == 1
    assert "--body is not JSON" in capsys.readouterr().err
    assert run("contracts", "submit", *owner, "--body", '{"v": 1, "op": "x", "bogus": 1}') == 1
    assert "would refuse it now: invalid: unknown op 'x'" in capsys.readouterr().err
    assert run("contracts", "submit", *owner, "--force",
               "--body", '{"v": 1, "op": "x", "bogus": 1}') == 1
    assert "refused by the ledger" in capsys.readouterr().err
    assert run("contracts", "show", "--ledger", str(tmp_path / "none.sqlite"),
               "--key", setup["owner"]) == 1
    assert "no ledger" in capsys.readouterr().err
    assert run("contracts", "show", "--ledger", setup["db"], "--config",
               str(tmp_path / "missing.toml")) == 1
    # a call the contract would refuse is not appended, unless forced (then it is recorded)
    call = P.call("000000000000000000000000", "approve", reason="x")
    assert run("contracts", "submit", *owner, "--body", json.dumps(call)) == 1
    assert "would refuse it now: unknown_contract" in capsys.readouterr().err
    assert run("contracts", "history", *owner, "--json") == 0
    assert json.loads(capsys.readouterr().out) == []
    assert run("contracts", "submit", *owner, "--body", json.dumps(call), "--force") == 1
    assert "unknown_contract" in capsys.readouterr().out
    assert run("contracts", "submit", *owner, "--body", "[1, 2]") == 1
    assert "JSON object" in capsys.readouterr().err


def test_snapshot_is_written_when_state_becomes_final(setup: dict[str, str],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from ledger.checkpoint import Checkpoint, MerkleTree

    owner = ("--ledger", setup["db"], "--key", setup["owner"])
    body = P.create("agreement", {"title": "pilot"})
    assert run("contracts", "submit", *owner, "--body", json.dumps(body)) == 0
    snap = Path(setup["db"] + ".contracts-final")
    assert run("contracts", "show", *owner) == 0
    assert not snap.exists()                                  # nothing final yet
    backhaul = Identity.from_seed(b"backhaul".ljust(32, b"\0"))
    with Ledger.open(setup["db"], Identity.load(setup["owner"])) as led:
        tree = MerkleTree(led.store.heads())
        cp = Checkpoint.create(backhaul, 1, 2**41, tree)
        led.store.put_checkpoint(cp.backhaul, cp.seq, cp.time_ms, cp.root, cp.raw, tree.heads)
    capsys.readouterr()
    assert run("contracts", "show", *owner, "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["final_hash"] == shown["state_hash"]
    assert [c["final"] for c in shown["contracts"]] == [True]
    assert snap.exists()
    assert run("contracts", "replay", *owner, "--json") == 0
    replayed = json.loads(capsys.readouterr().out)
    assert replayed["snapshot_agrees"] is True
    snap.write_bytes(b"\x00" + snap.read_bytes()[1:])
    assert run("contracts", "show", *owner) == 1
    assert "snapshot" in capsys.readouterr().err
    assert run("contracts", "show", *owner, "--no-snapshot") == 0
