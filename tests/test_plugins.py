"""The plugin manager: registration, discovery, switches, validation and isolation."""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from perfsdk import hookspecs
from perfsdk.errors import ConfigError, PerfsdkError, PluginError
from perfsdk.hookspecs import hookimpl
from perfsdk.plugins import (
    DEFAULT_PLUGINS,
    ENV_DISABLE_PLUGIN_AUTOLOAD,
    ENV_DISABLED_PLUGINS,
    Hooks,
    PluginInfo,
    PluginManager,
    get_plugin_manager,
    set_plugin_manager,
)
from perfsdk.protocols import Collector, Exporter, Sample
from perfsdk.records import Snapshot

REPO = Path(__file__).resolve().parent.parent
RUNTIME = "perfsdk.builtin.runtime_collector"
METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")


def fresh(**kwargs: Any) -> PluginManager:
    """A manager that ignores the environment and installed distributions, with one built-in
    (the runtime collector) unless told otherwise, so these tests do not change with the list."""
    kwargs.setdefault("builtins", (RUNTIME,))
    kwargs.setdefault("load_entrypoints", False)
    kwargs.setdefault("env", {})
    return PluginManager(**kwargs)


def resource_distribution() -> importlib.metadata.Distribution:
    try:
        return importlib.metadata.distribution("perfsdk-resource")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(
            "distribution perfsdk-resource is not installed; "
            "`pip install -e plugins/perfsdk-resource` (make test does this)"
        )


def assert_valid_samples(samples: list[Sample]) -> None:
    assert samples
    for sample in samples:
        assert isinstance(sample, Sample)
        assert METRIC_NAME.match(sample.name), sample
        assert all(LABEL_NAME.match(label) for label, _ in sample.labels), sample
        assert sample.kind in {"gauge", "counter"}, sample
        assert sample.name.endswith("_total") == (sample.kind == "counter"), sample
        assert sample.help, sample


def by_name(samples: list[Sample]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, s.labels): s.value for s in samples}


@pytest.fixture(autouse=True)
def _no_default_manager(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(ENV_DISABLED_PLUGINS, raising=False)
    monkeypatch.delenv(ENV_DISABLE_PLUGIN_AUTOLOAD, raising=False)
    previous = set_plugin_manager(None)
    yield
    set_plugin_manager(previous)


# -- helper plugins ------------------------------------------------------------------------------


class StaticCollector:
    def __init__(self, name: str) -> None:
        self.name = name

    def collect(self) -> list[Sample]:
        return [Sample(f"{self.name}_value", 1.0, help="test")]


class GoodPlugin:
    @hookimpl
    def perfsdk_collectors(self, config: Mapping[str, object]) -> list[Collector]:
        return [StaticCollector("good")]


class BoomPlugin:
    def __init__(self) -> None:
        self.calls = 0

    @hookimpl
    def perfsdk_collectors(self, config: Mapping[str, object]) -> list[Collector]:
        self.calls += 1
        raise RuntimeError("boom")


class Recorder:
    """Records every lifecycle call it receives."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    @hookimpl
    def perfsdk_addoption(self, options: dict[str, object]) -> None:
        options.setdefault("recorder.enabled", True)

    @hookimpl
    def perfsdk_configure(self, config: Mapping[str, object]) -> None:
        self.calls.append(("configure", config))

    @hookimpl
    def perfsdk_unconfigure(self, config: Mapping[str, object]) -> None:
        self.calls.append(("unconfigure", config))

    @hookimpl
    def perfsdk_agent_started(self, agent: object) -> None:
        self.calls.append(("agent_started", agent))

    @hookimpl
    def perfsdk_agent_stopping(self, agent: object) -> None:
        self.calls.append(("agent_stopping", agent))

    @hookimpl
    def perfsdk_snapshot_taken(self, snapshot: object) -> None:
        self.calls.append(("snapshot_taken", snapshot))

    @hookimpl
    def perfsdk_series_created(self, name: str, labels: tuple[tuple[str, str], ...]) -> None:
        self.calls.append(("series_created", (name, labels)))


class Exploder:
    """Raises in every lifecycle hook."""

    @hookimpl
    def perfsdk_configure(self, config: Mapping[str, object]) -> None:
        raise ValueError("configure failed")

    @hookimpl
    def perfsdk_agent_started(self, agent: object) -> None:
        raise ValueError("start failed")

    @hookimpl
    def perfsdk_snapshot_taken(self, snapshot: object) -> None:
        raise KeyError("snapshot")

    @hookimpl
    def perfsdk_series_created(self, name: str) -> None:
        raise ZeroDivisionError(name)


# -- built-ins -----------------------------------------------------------------------------------


def test_builtins_are_registered_by_module_name() -> None:
    manager = fresh(builtins=DEFAULT_PLUGINS)
    infos = manager.list_plugins()
    assert [info.name for info in infos] == list(DEFAULT_PLUGINS)
    runtime = infos[0]
    assert runtime == PluginInfo(
        name=RUNTIME,
        source="builtin",
        module=RUNTIME,
        version=runtime.version,
        hooks=(
            "perfsdk_addoption",
            "perfsdk_collectors",
            "perfsdk_configure",
            "perfsdk_unconfigure",
        ),
    )
    assert manager.load_errors == {}
    manager.check_pending()


def test_runtime_collector_reports_gc_and_threads() -> None:
    collectors = fresh().hooks.collectors({})
    assert [c.name for c in collectors] == ["python_runtime"]
    samples = list(collectors[0].collect())
    assert_valid_samples(samples)
    values = by_name(samples)
    assert values[("python_threads", ())] >= 1
    for generation in "012":
        labels = (("generation", generation),)
        for name in (
            "python_gc_collections_total",
            "python_gc_objects_collected_total",
            "python_gc_objects_uncollectable_total",
            "python_gc_generation_count",
        ):
            assert (name, labels) in values
    assert values[("python_gc_collections_total", (("generation", "0"),))] > 0


def test_fresh_managers_are_independent() -> None:
    first, second = fresh(), fresh()
    first.register(GoodPlugin(), name="good")
    assert first.get_plugin("good") is not None
    assert second.get_plugin("good") is None
    assert [c.name for c in second.hooks.collectors({})] == ["python_runtime"]


def test_no_builtins() -> None:
    manager = fresh(builtins=())
    assert manager.list_plugins() == []
    assert manager.hooks.collectors({}) == []


# -- switches ------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["runtime_collector", RUNTIME, " other , runtime_collector ,"])
def test_disabled_plugins_blocks_builtins(value: str) -> None:
    manager = fresh(env={ENV_DISABLED_PLUGINS: value})
    assert RUNTIME not in [info.name for info in manager.list_plugins()]
    assert manager.hooks.collectors({}) == []
    assert "runtime_collector" in manager.disabled or RUNTIME in manager.disabled
    assert manager.register(GoodPlugin(), name=RUNTIME) is None


def test_disabled_plugins_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_DISABLED_PLUGINS, "runtime_collector")
    manager = PluginManager(builtins=(RUNTIME,), load_entrypoints=False)
    assert manager.list_plugins() == []


def test_disabled_plugins_blocks_entry_points() -> None:
    resource_distribution()
    manager = PluginManager(env={ENV_DISABLED_PLUGINS: "resource"})
    names = [info.name for info in manager.list_plugins()]
    assert "resource" not in names
    assert RUNTIME in names
    assert "process_resource" not in [c.name for c in manager.hooks.collectors({})]


@pytest.mark.parametrize("value", ["1", "true", "YES", " on "])
def test_disable_plugin_autoload(value: str) -> None:
    manager = PluginManager(env={ENV_DISABLE_PLUGIN_AUTOLOAD: value})
    assert manager.autoload is False
    infos = manager.list_plugins()
    assert [info.name for info in infos] == list(DEFAULT_PLUGINS)
    assert not any(info.source.startswith("entrypoint:") for info in infos)


@pytest.mark.parametrize("value", ["", "0", "false", "off", "No"])
def test_autoload_stays_on_for_false_values(value: str) -> None:
    manager = PluginManager(env={ENV_DISABLE_PLUGIN_AUTOLOAD: value})
    assert manager.autoload is True


def test_disable_plugin_autoload_rejects_other_values() -> None:
    with pytest.raises(ConfigError) as excinfo:
        PluginManager(env={ENV_DISABLE_PLUGIN_AUTOLOAD: "maybe"})
    message = str(excinfo.value)
    assert ENV_DISABLE_PLUGIN_AUTOLOAD in message
    assert "'maybe'" in message
    assert "environment variable" in message
    assert "true" in message and "false" in message
    assert isinstance(excinfo.value, ValueError)
    assert isinstance(excinfo.value, PerfsdkError)


# -- validation ----------------------------------------------------------------------------------


class Typo:
    @hookimpl
    def perfsdk_nonexistent(self) -> None:
        """A misspelt hook."""


def test_check_pending_rejects_unknown_hooks() -> None:
    manager = fresh()
    manager.register(Typo(), name="typo-plugin")
    with pytest.raises(PluginError) as excinfo:
        manager.check_pending()
    error = excinfo.value
    assert error.plugin == "typo-plugin"
    assert error.hook == "perfsdk_nonexistent"
    message = str(error)
    assert "'typo-plugin'" in message
    assert "unknown hook 'perfsdk_nonexistent'" in message
    assert "test_plugins.py" in message  # where it is defined
    assert "perfsdk_collectors" in message  # what would be accepted


def test_check_pending_allows_optional_hooks() -> None:
    class Optional:
        @hookimpl(optionalhook=True)
        def perfsdk_from_the_future(self) -> None:
            """Only called by a newer perfsdk."""

    manager = fresh()
    manager.register(Optional(), name="optional")
    manager.check_pending()


def test_register_rejects_arguments_not_in_the_spec() -> None:
    class WrongArgument:
        @hookimpl
        def perfsdk_collectors(self, settings: object) -> list[Collector]:
            return []

    manager = fresh()
    with pytest.raises(PluginError) as excinfo:
        manager.register(WrongArgument(), name="wrong")
    assert excinfo.value.plugin == "wrong"
    assert "'wrong'" in str(excinfo.value)
    assert "perfsdk_collectors" in str(excinfo.value)
    assert "settings" in str(excinfo.value)
    assert manager.get_plugin("wrong") is None


def test_register_rejects_a_taken_name() -> None:
    manager = fresh()
    manager.register(GoodPlugin(), name="good")
    with pytest.raises(PluginError, match="'good'"):
        manager.register(GoodPlugin(), name="good")


def test_hook_wrappers_are_rejected_and_never_called() -> None:
    class Wrapper:
        @hookimpl(wrapper=True)
        def perfsdk_collectors(self, config: Mapping[str, object]) -> Iterator[None]:
            raise AssertionError("wrappers must not be called")
            yield

    manager = fresh()
    manager.register(Wrapper(), name="wrapper")
    with pytest.raises(PluginError, match="wrapper") as excinfo:
        manager.check_pending()
    assert excinfo.value.hook == "perfsdk_collectors"
    assert [c.name for c in manager.hooks.collectors({})] == ["python_runtime"]
    assert manager.errors == {("wrapper", "perfsdk_collectors"): 1}


# -- isolation -----------------------------------------------------------------------------------


def test_raising_plugin_is_isolated_logged_once_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    manager = fresh()
    boom = BoomPlugin()
    manager.register(boom, name="boom")
    manager.register(GoodPlugin(), name="good")
    caplog.set_level(logging.DEBUG, logger="perfsdk.plugins")

    for _ in range(3):
        names = [c.name for c in manager.hooks.collectors({})]
        assert sorted(names) == ["good", "python_runtime"]

    assert boom.calls == 3
    errors = [
        r for r in caplog.records if r.name == "perfsdk.plugins" and r.levelno >= logging.ERROR
    ]
    assert len(errors) == 1
    message = errors[0].getMessage()
    assert "'boom'" in message and "perfsdk_collectors" in message and "boom" in message
    assert errors[0].exc_info is not None
    assert manager.errors == {("boom", "perfsdk_collectors"): 3}
    assert manager.errors_total == 3


def test_lifecycle_hooks_are_isolated_and_receive_their_arguments() -> None:
    manager = fresh()
    recorder = Recorder()
    manager.register(Exploder(), name="exploder")
    manager.register(recorder, name="recorder")
    agent, config = object(), {"key": "value"}
    snapshot = Snapshot(taken_at=0.0, series=(), implementation="python")

    manager.hooks.configure(config)
    manager.hooks.agent_started(agent)
    manager.hooks.snapshot_taken(snapshot)
    manager.hooks.series_created("http_latency_seconds", (("route", "/"),))
    manager.hooks.agent_stopping(agent)
    manager.hooks.unconfigure(config)

    assert recorder.calls == [
        ("configure", config),
        ("agent_started", agent),
        ("snapshot_taken", snapshot),
        ("series_created", ("http_latency_seconds", (("route", "/"),))),
        ("agent_stopping", agent),
        ("unconfigure", config),
    ]
    assert manager.errors == {
        ("exploder", "perfsdk_configure"): 1,
        ("exploder", "perfsdk_agent_started"): 1,
        ("exploder", "perfsdk_snapshot_taken"): 1,
        ("exploder", "perfsdk_series_created"): 1,
    }
    assert manager.errors_total == 4


def test_malformed_answers_are_dropped_and_counted() -> None:
    class Mixed:
        @hookimpl
        def perfsdk_collectors(self) -> list[object]:
            return [object(), StaticCollector("kept")]

    class NotAList:
        @hookimpl
        def perfsdk_collectors(self) -> object:
            return StaticCollector("single")

    class Nothing:
        @hookimpl
        def perfsdk_exporters(self) -> None:
            return None

    manager = fresh(builtins=())
    manager.register(Mixed(), name="mixed")
    manager.register(NotAList(), name="not-a-list")
    manager.register(Nothing(), name="nothing")
    assert [c.name for c in manager.hooks.collectors({})] == ["kept"]
    assert manager.hooks.exporters({}) == []
    assert manager.errors == {
        ("mixed", "perfsdk_collectors"): 1,
        ("not-a-list", "perfsdk_collectors"): 1,
    }


def test_every_object_hook_returns_checked_objects() -> None:
    class Sink:
        name = "sink"

        def export(self, snapshot: object) -> None:
            pass

        def close(self) -> None:
            pass

    class Page:
        name = "page"

        def notify(self, alert: object) -> None:
            pass

    class Memoize:
        name = "memoize"

        def detect(self, target: object) -> bool:
            return callable(target)

        def apply(self, target: object) -> object:
            return target

    class Everything:
        @hookimpl
        def perfsdk_exporters(self) -> list[object]:
            return [Sink(), Page()]

        @hookimpl
        def perfsdk_alert_actions(self) -> list[object]:
            return [Page()]

        @hookimpl
        def perfsdk_techniques(self) -> list[object]:
            return [Memoize()]

    manager = fresh(builtins=())
    manager.register(Everything(), name="everything")
    exporters = manager.hooks.exporters({})
    assert [e.name for e in exporters] == ["sink"]
    assert isinstance(exporters[0], Exporter)
    assert [a.name for a in manager.hooks.alert_actions({})] == ["page"]
    assert [t.name for t in manager.hooks.techniques({})] == ["memoize"]
    assert manager.errors == {("everything", "perfsdk_exporters"): 1}


def test_call_order_matches_pluggy() -> None:
    class First:
        @hookimpl(tryfirst=True)
        def perfsdk_collectors(self) -> list[Collector]:
            return [StaticCollector("first")]

    class Last:
        @hookimpl(trylast=True)
        def perfsdk_collectors(self) -> list[Collector]:
            return [StaticCollector("last")]

    manager = fresh()
    manager.register(Last(), name="last")
    manager.register(GoodPlugin(), name="good")
    manager.register(First(), name="first")
    facade = [c.name for c in manager.hooks.collectors({})]
    native = [
        c.name
        for answer in manager.pluggy_manager.hook.perfsdk_collectors(config={})
        for c in answer
    ]
    assert facade == native
    assert facade[0] == "first" and facade[-1] == "last"


def test_historic_hooks_are_replayed_to_late_plugins() -> None:
    manager = fresh(builtins=())
    options: dict[str, object] = {}
    config = {"interval": 10}
    manager.hooks.addoption(options)
    manager.hooks.configure(config)

    late = Recorder()
    manager.register(late, name="late")
    assert options == {"recorder.enabled": True}
    assert late.calls == [("configure", config)]

    manager.register(Exploder(), name="late-exploder")  # must not raise
    assert manager.errors == {("late-exploder", "perfsdk_configure"): 1}


def test_list_plugins_describes_registered_objects() -> None:
    manager = fresh()
    manager.register(Recorder(), name="recorder")
    info = manager.list_plugins()[-1]
    assert info.name == "recorder"
    assert info.source == "registered"
    assert info.module == __name__
    assert "perfsdk_configure" in info.hooks and list(info.hooks) == sorted(info.hooks)
    with pytest.raises(AttributeError):
        info.name = "changed"  # type: ignore[misc]


def test_unregister() -> None:
    manager = fresh()
    good = GoodPlugin()
    manager.register(good, name="good")
    assert manager.unregister("good") is good
    assert manager.unregister("good") is None
    assert [c.name for c in manager.hooks.collectors({})] == ["python_runtime"]


def test_every_hookspec_has_a_facade_method() -> None:
    specs = {name for name in vars(hookspecs) if name.startswith("perfsdk_")}
    facade = {name for name in vars(Hooks) if not name.startswith("_")}
    assert {f"perfsdk_{name}" for name in facade} == specs


# -- default manager -----------------------------------------------------------------------------


def test_default_manager_is_lazy_and_replaceable() -> None:
    first = get_plugin_manager()
    assert get_plugin_manager() is first
    custom = fresh()
    assert set_plugin_manager(custom) is first
    assert get_plugin_manager() is custom


def test_import_perfsdk_does_not_load_plugins() -> None:
    code = (
        "import sys, perfsdk; "
        "loaded = [m for m in ('pluggy', 'perfsdk.plugins', 'perfsdk.hookspecs') "
        "if m in sys.modules]; "
        "assert not loaded, loaded"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


# -- entry points --------------------------------------------------------------------------------


def test_entry_point_discovery_finds_perfsdk_resource() -> None:
    distribution = resource_distribution()
    entry_points = [ep for ep in distribution.entry_points if ep.group == "perfsdk"]
    assert [(ep.name, ep.value) for ep in entry_points] == [("resource", "perfsdk_resource")]

    manager = PluginManager(env={})
    infos = {info.name: info for info in manager.list_plugins()}
    assert infos["resource"] == PluginInfo(
        name="resource",
        source=f"entrypoint:perfsdk-resource=={distribution.version}",
        module="perfsdk_resource",
        version=distribution.version,
        hooks=("perfsdk_collectors",),
    )
    manager.check_pending()

    collectors = {c.name: c for c in manager.hooks.collectors({})}
    assert set(collectors) >= {"python_runtime", "process_resource"}
    # Give the counters something to count.
    garbage = [bytearray(4096) for _ in range(2048)]
    sum(i * i for i in range(200_000))
    del garbage
    samples = list(collectors["process_resource"].collect())
    assert_valid_samples(samples)
    values = by_name(samples)
    assert set(values) == {
        ("process_max_rss_bytes", ()),
        ("process_cpu_seconds_total", (("mode", "user"),)),
        ("process_cpu_seconds_total", (("mode", "system"),)),
        ("process_minor_page_faults_total", ()),
        ("process_major_page_faults_total", ()),
        ("process_block_input_operations_total", ()),
        ("process_block_output_operations_total", ()),
        ("process_voluntary_context_switches_total", ()),
        ("process_involuntary_context_switches_total", ()),
    }
    assert values[("process_max_rss_bytes", ())] > 1024 * 1024  # bytes, not KiB
    assert values[("process_cpu_seconds_total", (("mode", "user"),))] > 0
    assert values[("process_minor_page_faults_total", ())] > 0


def make_distribution(
    root: Path, name: str, version: str, entry_points: str, modules: Mapping[str, str]
) -> None:
    """Write an installed-looking distribution (dist-info + modules) under ``root``."""
    dist_info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    )
    (dist_info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    for module, source in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(source))


def test_broken_entry_point_is_recorded_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    make_distribution(
        tmp_path,
        "perfsdk-fake",
        "1.2.3",
        """
        [perfsdk]
        fake = perfsdk_test_fake_plugin
        broken = perfsdk_test_module_that_does_not_exist
        """,
        {
            "perfsdk_test_fake_plugin": """
            from perfsdk.hookspecs import hookimpl

            @hookimpl
            def perfsdk_agent_started(agent):
                pass
            """
        },
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    caplog.set_level(logging.ERROR, logger="perfsdk.plugins")

    manager = PluginManager(env={})
    assert list(manager.load_errors) == ["broken"]
    assert "ModuleNotFoundError" in manager.load_errors["broken"]
    assert any("'broken'" in r.getMessage() for r in caplog.records)
    infos = {info.name: info for info in manager.list_plugins()}
    assert infos["fake"].source == "entrypoint:perfsdk-fake==1.2.3"
    assert infos["fake"].version == "1.2.3"
    assert infos["fake"].hooks == ("perfsdk_agent_started",)
    assert "broken" not in infos


def test_entry_points_loaded_later_receive_historic_calls_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_distribution(
        tmp_path,
        "perfsdk-late",
        "0.1",
        """
        [perfsdk]
        late = perfsdk_test_late_plugin
        """,
        {
            "perfsdk_test_late_plugin": """
            from perfsdk.hookspecs import hookimpl

            CONFIGS = []

            @hookimpl
            def perfsdk_configure(config):
                CONFIGS.append(config)
            """
        },
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "perfsdk_test_late_plugin", raising=False)
    importlib.invalidate_caches()

    manager = fresh()
    config = {"interval": 5}
    manager.hooks.configure(config)
    assert manager.load_entrypoints() >= 1
    plugin = manager.get_plugin("late")
    assert getattr(plugin, "CONFIGS", None) == [config]
    assert manager.load_entrypoints() == 0  # everything is registered already
    assert getattr(plugin, "CONFIGS", None) == [config]
