"""Every hook is typed, has a docstring, and is documented in docs/plugins.md; the guide's example
plugin really works (datasette-style documentation tests)."""

from __future__ import annotations

import importlib
import inspect
import json
import re
import sys
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from perfsdk import hookspecs
from perfsdk.cli import main
from perfsdk.plugins import (
    ENV_DISABLE_PLUGIN_AUTOLOAD,
    ENV_DISABLED_PLUGINS,
    PluginManager,
    set_plugin_manager,
)

REPO = Path(__file__).resolve().parent.parent
GUIDE = (REPO / "docs" / "plugins.md").read_text(encoding="utf-8")
HOOKS: dict[str, Callable[..., object]] = {
    name: function
    for name, function in vars(hookspecs).items()
    if callable(function) and hasattr(function, "perfsdk_spec")
}
DOCUMENTED = dict(re.findall(r"^### `(perfsdk_\w+)\((.*)\)`$", GUIDE, flags=re.MULTILINE))


def code_block(language: str, containing: str) -> str:
    blocks: list[str] = [
        block
        for block in re.findall(rf"^```{language}\n(.*?)^```$", GUIDE, flags=re.S | re.M)
        if containing in block
    ]
    assert len(blocks) == 1, f"expected one {language} block containing {containing!r}"
    return blocks[0]


def test_hookspecs_holds_only_hooks_and_markers() -> None:
    public = {name for name in vars(hookspecs) if not name.startswith("_")}
    public -= {"annotations", "Mapping", "MutableMapping", "TYPE_CHECKING", "pluggy"}
    assert public == {"hookspec", "hookimpl", *HOOKS}
    assert set(hookspecs.__all__) == public
    assert HOOKS, "no hook specifications found"


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_hook_is_named_and_typed(name: str) -> None:
    assert name.startswith("perfsdk_")
    signature = inspect.signature(HOOKS[name])
    for parameter in signature.parameters.values():
        assert parameter.annotation is not inspect.Parameter.empty, (name, parameter.name)
    assert signature.return_annotation is not inspect.Signature.empty, name


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_hook_has_a_docstring(name: str) -> None:
    docstring = inspect.getdoc(HOOKS[name])
    assert docstring, f"{name} has no docstring"
    summary = docstring.splitlines()[0]
    assert summary.endswith("."), f"{name}: the first line should be a one-line summary"
    for parameter in inspect.signature(HOOKS[name]).parameters:
        assert f":param {parameter}:" in docstring, f"{name} does not document {parameter!r}"
    assert ":returns:" in docstring, f"{name} does not say what it returns"
    assert "Called" in docstring, f"{name} does not say when it is called"


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_hook_is_documented(name: str) -> None:
    assert name in DOCUMENTED, f"docs/plugins.md has no '### `{name}(...)`' section"
    parameters = ", ".join(inspect.signature(HOOKS[name]).parameters)
    assert DOCUMENTED[name] == parameters, f"docs/plugins.md shows {name}({DOCUMENTED[name]})"


def test_documented_hooks_exist() -> None:
    assert set(DOCUMENTED) <= set(HOOKS), set(DOCUMENTED) - set(HOOKS)


def test_environment_variables_are_documented() -> None:
    for variable in (ENV_DISABLE_PLUGIN_AUTOLOAD, ENV_DISABLED_PLUGINS):
        assert f"`{variable}`" in GUIDE


@pytest.fixture
def example_distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Install the guide's example plugin (its module and entry point) on sys.path; yield the
    distribution name."""
    project = tomllib.loads(code_block("toml", "[project.entry-points.perfsdk]"))["project"]
    entry_points = project["entry-points"]["perfsdk"]
    dist_info = tmp_path / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    (dist_info / "entry_points.txt").write_text(
        "[perfsdk]\n" + "".join(f"{name} = {value}\n" for name, value in entry_points.items())
    )
    module_source = code_block("python", "# perfsdk_modules.py")
    (tmp_path / "perfsdk_modules.py").write_text(module_source)

    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "perfsdk_modules", raising=False)
    monkeypatch.delenv(ENV_DISABLED_PLUGINS, raising=False)
    monkeypatch.delenv(ENV_DISABLE_PLUGIN_AUTOLOAD, raising=False)
    importlib.invalidate_caches()
    previous = set_plugin_manager(None)
    yield f"{project['name']}=={project['version']}"
    set_plugin_manager(previous)


def test_example_plugin_is_listed_by_perfsdk_plugins(
    example_distribution: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plugins", "--json"]) == 0
    plugins = {plugin["name"]: plugin for plugin in json.loads(capsys.readouterr().out)["plugins"]}
    assert plugins["modules"]["source"] == f"entrypoint:{example_distribution}"
    assert plugins["modules"]["hooks"] == ["perfsdk_addoption", "perfsdk_collectors"]


def test_example_plugin_registers_in_code_and_its_test_passes(example_distribution: str) -> None:
    manager = PluginManager(builtins=(), load_entrypoints=False, env={})
    set_plugin_manager(manager)
    exec(code_block("python", "get_plugin_manager().register("), {})
    assert manager.get_plugin("modules") is not None
    manager.check_pending()
    options: dict[str, object] = {}
    manager.hooks.addoption(options)
    assert options == {"modules.enabled": True}
    assert manager.hooks.collectors({"modules.enabled": False}) == []

    namespace: dict[str, object] = {}
    exec(code_block("python", "def test_modules_plugin"), namespace)
    test = namespace["test_modules_plugin"]
    assert callable(test)
    test()
