"""The ``perfsdk`` command line: ``perfsdk plugins``, in process and as ``python -m perfsdk``."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from perfsdk.cli import COMMANDS, Command, command, main
from perfsdk.hookspecs import hookimpl
from perfsdk.plugins import (
    ENV_DISABLE_PLUGIN_AUTOLOAD,
    ENV_DISABLED_PLUGINS,
    PluginManager,
    set_plugin_manager,
)

REPO = Path(__file__).resolve().parent.parent
RUNTIME = "perfsdk.builtin.runtime_collector"


def resource_version() -> str:
    try:
        return importlib.metadata.version("perfsdk-resource")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(
            "distribution perfsdk-resource is not installed; "
            "`pip install -e plugins/perfsdk-resource` (make test does this)"
        )


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(ENV_DISABLED_PLUGINS, raising=False)
    monkeypatch.delenv(ENV_DISABLE_PLUGIN_AUTOLOAD, raising=False)
    previous = set_plugin_manager(None)
    yield
    set_plugin_manager(previous)


def run_module(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {
        key: value
        for key, value in os.environ.items()
        if key not in (ENV_DISABLED_PLUGINS, ENV_DISABLE_PLUGIN_AUTOLOAD)
    }
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), environ.get("PYTHONPATH")]))
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-m", "perfsdk", *args],
        cwd=REPO,
        env=environ,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def row(output: str, name: str) -> list[str]:
    for line in output.splitlines():
        cells = line.split()
        if cells and cells[0] == name:
            return cells
    raise AssertionError(f"no row for {name!r} in:\n{output}")


def test_plugins_table(capsys: pytest.CaptureFixture[str]) -> None:
    version = resource_version()
    assert main(["plugins"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.splitlines()[0].split() == ["NAME", "SOURCE", "VERSION", "HOOKS"]
    assert row(out, RUNTIME)[1] == "builtin"
    assert row(out, "resource") == [
        "resource",
        f"entrypoint:perfsdk-resource=={version}",
        version,
        "perfsdk_collectors",
    ]


def test_plugins_json(capsys: pytest.CaptureFixture[str]) -> None:
    version = resource_version()
    assert main(["plugins", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["autoload"] is True
    assert document["disabled"] == []
    assert document["load_errors"] == {}
    plugins = {plugin["name"]: plugin for plugin in document["plugins"]}
    assert plugins["resource"] == {
        "name": "resource",
        "source": f"entrypoint:perfsdk-resource=={version}",
        "module": "perfsdk_resource",
        "version": version,
        "hooks": ["perfsdk_collectors"],
    }
    assert plugins[RUNTIME]["source"] == "builtin"


def test_python_dash_m_perfsdk_plugins() -> None:
    version = resource_version()
    result = run_module("plugins")
    assert result.returncode == 0, result.stderr
    assert row(result.stdout, "resource")[1] == f"entrypoint:perfsdk-resource=={version}"
    assert row(result.stdout, RUNTIME)[1] == "builtin"


def test_python_dash_m_perfsdk_plugins_json_with_switches() -> None:
    result = run_module("plugins", "--json", **{ENV_DISABLED_PLUGINS: "runtime_collector"})
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert RUNTIME not in [plugin["name"] for plugin in document["plugins"]]
    assert document["disabled"] == ["runtime_collector"]

    result = run_module("plugins", **{ENV_DISABLE_PLUGIN_AUTOLOAD: "1"})
    assert result.returncode == 0, result.stderr
    assert "entrypoint:" not in result.stdout
    assert f"entry points not loaded ({ENV_DISABLE_PLUGIN_AUTOLOAD} is set)" in result.stdout


def test_disabled_plugins_are_reported(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Every entry-point plugin installed (make test installs each of plugins/*/).
    from importlib.metadata import entry_points

    names = sorted({ep.name for ep in entry_points(group="perfsdk")})
    monkeypatch.setenv(ENV_DISABLED_PLUGINS, ",".join(names))
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "entrypoint:" not in out
    assert f"disabled by {ENV_DISABLED_PLUGINS}: {', '.join(names)}" in out


def test_invalid_environment_is_an_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(ENV_DISABLE_PLUGIN_AUTOLOAD, "maybe")
    assert main(["plugins"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("perfsdk: error: ")
    assert ENV_DISABLE_PLUGIN_AUTOLOAD in err and "'maybe'" in err


def test_plugin_problems_exit_non_zero(capsys: pytest.CaptureFixture[str]) -> None:
    class Typo:
        @hookimpl
        def perfsdk_nonexistent(self) -> None:
            """A misspelt hook."""

    manager = PluginManager(load_entrypoints=False, env={})
    manager.register(Typo(), name="typo-plugin")
    manager.load_errors["broken"] = "ModuleNotFoundError: No module named 'broken'"
    set_plugin_manager(manager)

    assert main(["plugins"]) == 1
    out, err = capsys.readouterr()
    assert row(out, "typo-plugin")[1:] == ["registered", "-", "perfsdk_nonexistent"]
    assert "perfsdk: error: plugin 'broken' could not be loaded: ModuleNotFoundError" in err
    assert "unknown hook 'perfsdk_nonexistent'" in err


def test_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "a command is required" in capsys.readouterr().err
    assert main(["no-such-command"]) == 2
    assert "invalid choice" in capsys.readouterr().err
    assert main(["--help"]) == 0
    assert "plugins" in capsys.readouterr().out


def test_sub_commands_are_registered_in_a_dict(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def hello(args: argparse.Namespace) -> int:
        print(f"hello {args.who}")
        return 3

    def hello_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("who")

    monkeypatch.setitem(COMMANDS, "hello", Command("Say hello.", hello, hello_arguments))
    assert main(["hello", "world"]) == 3
    assert capsys.readouterr().out == "hello world\n"

    with pytest.raises(ValueError, match="'plugins' is already registered"):
        command("plugins", "again")(hello)
