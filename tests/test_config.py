"""Configuration sources, precedence, and errors that name the culprit."""

from __future__ import annotations

from pathlib import Path

import pytest

from perfsdk import ConfigError
from perfsdk.config import CORE_OPTIONS, load_config


def test_defaults(tmp_path: Path) -> None:
    cfg = load_config(env={}, cwd=tmp_path)
    assert dict(cfg) == CORE_OPTIONS
    assert cfg.source("interval") == "default"


def test_precedence(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.perfsdk]\ninterval = 5\nhttp_port = 1111\ndb_path = "from-pyproject.db"\n'
        'jsonl_path = "p.jsonl"\n'
    )
    (tmp_path / "perfsdk.toml").write_text('interval = 4\nhttp_port = 2222\ndb_path = "own.db"\n')
    env = {"PERFSDK_INTERVAL": "3", "PERFSDK_HTTP_PORT": "3333", "PERFSDK_NO_EXTENSIONS": "1"}
    cfg = load_config({"interval": 2}, env=env, cwd=tmp_path)
    assert cfg["interval"] == 2.0 and cfg.source("interval") == "keyword argument"
    assert cfg["http_port"] == 3333 and "PERFSDK_HTTP_PORT" in cfg.source("http_port")
    assert cfg["db_path"] == "own.db" and cfg.source("db_path").endswith("perfsdk.toml")
    assert cfg["jsonl_path"] == "p.jsonl" and "[tool.perfsdk]" in cfg.source("jsonl_path")


def test_types_are_parsed_from_the_environment(tmp_path: Path) -> None:
    env = {
        "PERFSDK_HTTP_ENABLED": "off",
        "PERFSDK_DISABLED_COLLECTORS": "system, process",
        "PERFSDK_ALPHA": "0.02",
    }
    cfg = load_config(env=env, cwd=tmp_path)
    assert cfg["http_enabled"] is False
    assert cfg["disabled_collectors"] == ["system", "process"]
    assert cfg["alpha"] == 0.02


@pytest.mark.parametrize(
    ("overrides", "env", "needle"),
    [
        ({"intervall": 1}, {}, "unknown option 'intervall' (keyword argument)"),
        ({"interval": -1}, {}, "interval=-1.0 (keyword argument)"),
        ({"interval": "soon"}, {}, "interval='soon' (keyword argument)"),
        ({}, {"PERFSDK_HTTP_PORT": "http"}, "environment variable PERFSDK_HTTP_PORT"),
        ({"http_port": 70000}, {}, "http_port=70000"),
        ({"http_enabled": "perhaps"}, {}, "http_enabled='perhaps'"),
        ({"alpha": 2.0}, {}, "alpha=2.0"),
        ({"disabled_collectors": [1]}, {}, "disabled_collectors=[1]"),
    ],
)
def test_bad_values_name_key_value_and_source(
    tmp_path: Path, overrides: dict[str, object], env: dict[str, str], needle: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(overrides, env=env, cwd=tmp_path)
    assert needle in str(info.value)


def test_unknown_key_in_files(tmp_path: Path) -> None:
    (tmp_path / "perfsdk.toml").write_text("colour = 'blue'\n")
    with pytest.raises(ConfigError, match=r"unknown option 'colour' \(.*perfsdk.toml\)"):
        load_config(env={}, cwd=tmp_path)
    (tmp_path / "perfsdk.toml").write_text("interval = [\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(env={}, cwd=tmp_path)


def test_plugin_defaults_become_known_keys(tmp_path: Path) -> None:
    cfg = load_config(
        {"otlp_endpoint": "http://x"}, env={}, cwd=tmp_path, plugin_defaults={"otlp_endpoint": ""}
    )
    assert cfg["otlp_endpoint"] == "http://x"
