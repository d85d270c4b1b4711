"""The configuration is strict: unknown keys and wrong types stop the agent, naming the key."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from agent.config import (
    LIST_SECTIONS,
    SECTIONS,
    AgentConfig,
    ConfigError,
    load_config,
    parse_config,
)

ROOT = Path(__file__).resolve().parents[2]


def test_empty_file_gives_defaults() -> None:
    assert parse_config({}) == AgentConfig()


def test_example_config_is_valid() -> None:
    config = load_config(ROOT / "deploy" / "raspberrypi" / "agent.toml")
    assert config.udp and config.udp[0].interface
    assert config.metrics.enabled is False


@pytest.mark.parametrize(
    ("data", "key", "words"),
    [
        ({"node": {"key_fle": "x"}}, "node.key_fle", "unknown key"),
        ({"nodes": {}}, "nodes", "unknown section"),
        ({"mesh": {"hello_interval_s": "1"}}, "mesh.hello_interval_s", "expected a number"),
        ({"mesh": {"allowed_hello_loss": 2.5}}, "mesh.allowed_hello_loss", "expected an integer"),
        ({"mesh": {"allowed_hello_loss": True}}, "mesh.allowed_hello_loss", "expected an integer"),
        ({"metrics": {"enabled": 1}}, "metrics.enabled", "true or false"),
        ({"udp": [{"port": 1}]}, "udp[0].interface", "required"),
        ({"udp": [{"interface": "eth0", "port": 70000}]}, "udp[0].port", "0..65535"),
        ({"udp": [{"interface": "eth0", "family": "ipx"}]}, "udp[0].family", "one of"),
        ({"line": {"monitor": "magic"}}, "line.monitor", "one of"),
        ({"wifi_direct": {"role": "boss"}}, "wifi_direct.role", "one of"),
        ({"wifi_direct": {"go_intent": 16}}, "wifi_direct.go_intent", "0..15"),
        ({"line": {"interval_s": 0}}, "line.interval_s", "positive"),
        ({"discovery": {"interfaces": ["a", 3]}}, "discovery.interfaces[1]", "string"),
        ({"node": {"seed": "x"}}, "node.seed", "integer or none"),
        ({"log": "debug"}, "log", "a table"),
    ],
)
def test_bad_values_name_the_key(data: dict[str, object], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert info.value.key == key
    assert words in str(info.value)


def test_two_links_with_one_name_are_refused() -> None:
    with pytest.raises(ConfigError, match="udp:eth0"):
        parse_config({"udp": [{"interface": "eth0"}, {"interface": "eth0", "port": 5000}]})


def test_numbers_and_lists_convert() -> None:
    config = parse_config({"mesh": {"hello_interval_s": 2}, "node": {"seed": 7},
                           "udp": [{"interface": "wlan0", "family": "ipv6"}]})
    assert config.mesh.hello_interval_s == 2.0
    assert isinstance(config.mesh.hello_interval_s, float)
    assert config.node.seed == 7
    assert config.udp[0].iface == "udp:wlan0"


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[node\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_every_key_is_documented_with_its_default() -> None:
    doc = (ROOT / "docs" / "agent.md").read_text()
    for section, cls in {**SECTIONS, **LIST_SECTIONS}.items():
        if section == "mesh":  # MeshConfig belongs to the mesh core and grows with it
            continue
        for f in dataclasses.fields(cls):
            pattern = rf"`{re.escape(section)}\.{re.escape(f.name)}`"
            assert re.search(pattern, doc), f"{section}.{f.name} is not in docs/agent.md"


@pytest.mark.parametrize(("data", "floor"), [
    ({"udp": [{"interface": "eth0"}]}, 0.002),  # IP links: ring waits follow measured hops
    ({"wifi_direct": {"enabled": True}}, 0.002),
    ({"udp": [{"interface": "eth0"}], "mesh": {"min_node_traversal_s": 0.01}}, 0.01),
    ({"udp": [{"interface": "eth0"}], "ble": {"enabled": True}}, 0.040),  # RFC timing
    ({"sim": {"enabled": True}}, 0.040),
])
def test_hop_time_floor_depends_on_the_links(data: dict[str, object], floor: float) -> None:
    from agent.app import Agent
    from mesh.identity import Identity

    config = parse_config(data)
    assert Agent(config, Identity.from_seed(b"\x07" * 32)).mesh_config().min_node_traversal_s \
        == floor
    assert parse_config(data).mesh == config.mesh  # the parsed section itself is untouched
