"""The process, system and runtime collectors, their built-in plugins, the event-loop probe, and the
perfsdk-gpu plugin (on this machine, and against a fake ``pynvml``)."""

from __future__ import annotations

import asyncio
import gc
import importlib
import logging
import math
import os
import re
import sys
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import perfsdk
from perfsdk.errors import ConfigError
from perfsdk.naming import check_metric_name, normalize_labels
from perfsdk.plugins import ENV_DISABLED_PLUGINS, PluginManager
from perfsdk.protocols import Collector, Sample

psutil = pytest.importorskip("psutil")

from perfsdk.collectors import runtime  # noqa: E402
from perfsdk.collectors.process import ProcessCollector  # noqa: E402
from perfsdk.collectors.runtime import (  # noqa: E402
    GC_PAUSE_SERIES,
    LOOP_LAG_SERIES,
    GcPauseRecorder,
    NoEventLoopError,
    RuntimeCollector,
    install_loop_probe,
    maybe_install_loop_probe,
    remove_loop_probe,
)
from perfsdk.collectors.system import SystemCollector, is_loopback  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
BUILTINS = (
    "perfsdk.builtin.runtime_collector",
    "perfsdk.builtin.process_collector",
    "perfsdk.builtin.system_collector",
)
METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
LINUX = sys.platform.startswith("linux")

Key = tuple[str, tuple[tuple[str, str], ...]]


def values(samples: list[Sample]) -> dict[Key, float]:
    return {(s.name, s.labels): s.value for s in samples}


def manager(**kwargs: Any) -> PluginManager:
    kwargs.setdefault("builtins", BUILTINS)
    kwargs.setdefault("load_entrypoints", False)
    kwargs.setdefault("env", {})
    return PluginManager(**kwargs)


def burn_cpu(seconds: float) -> None:
    end = time.process_time() + seconds
    x = 0
    while time.process_time() < end:
        x += sum(range(1000))


@pytest.fixture
def registry() -> perfsdk.Registry:
    return perfsdk.Registry()


# -- process -------------------------------------------------------------------------------------


def test_process_collector_reports_real_values(tmp_path: Path) -> None:
    collector = ProcessCollector()
    before = values(collector.collect())
    burn_cpu(0.3)
    path = tmp_path / "data"
    fd = os.open(path, os.O_CREAT | os.O_WRONLY)
    try:
        for _ in range(20):
            os.write(fd, b"x" * 100)
        sleeper = threading.Thread(target=lambda: [time.sleep(0.001) for _ in range(20)])
        sleeper.start()
        sleeper.join()
        after = values(collector.collect())
    finally:
        os.close(fd)

    user = ("process_cpu_seconds_total", (("mode", "user"),))
    system = ("process_cpu_seconds_total", (("mode", "system"),))
    assert after[user] + after[system] - before[user] - before[system] >= 0.25
    # 0.3 s of CPU over about 0.3 s of wall time: near 100% of one core unless the machine is busy.
    assert after[("process_cpu_percent", ())] > 20
    assert after[("process_resident_memory_bytes", ())] > 1 << 20
    assert (
        after[("process_virtual_memory_bytes", ())] >= after[("process_resident_memory_bytes", ())]
    )
    assert after[("process_unique_memory_bytes", ())] > 0  # read on the first collect
    assert after[("process_threads", ())] >= 1
    assert after[("process_start_time_seconds", ())] <= time.time() + 1
    if os.name == "posix":
        assert after[("process_open_fds", ())] >= 4  # stdin, stdout, stderr, the file
        assert after[("process_max_fds", ())] >= after[("process_open_fds", ())]
    voluntary = ("process_context_switches_total", (("kind", "voluntary"),))
    if LINUX:
        # getrusage counts every thread's switches (psutil's /proc/self/status only the main one).
        assert after[voluntary] - before[voluntary] >= 10
        writes = ("process_io_operations_total", (("direction", "write"),))
        assert after[writes] - before[writes] >= 20
        assert ("process_io_bytes_total", (("direction", "read"),)) in after


def test_process_cpu_percent_comes_from_deltas() -> None:
    now = [100.0]
    collector = ProcessCollector(clock=lambda: now[0])
    now[0] += 1.0
    burn_cpu(0.2)
    percent = values(collector.collect())[("process_cpu_percent", ())]
    assert 15 <= percent <= 40  # 0.2 s of CPU (plus what the test itself used) over 1 s
    # A second collect at the same instant has no interval to divide by: no percent, no crash.
    assert ("process_cpu_percent", ()) not in values(collector.collect())


def test_uss_is_read_every_nth_collect_within_its_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    collector = ProcessCollector(uss_every=3, clock=lambda: now[0])
    reads: list[float] = []
    real = collector._process.memory_full_info

    def timed_read() -> Any:
        reads.append(now[0])
        now[0] += 0.001  # each read "costs" 1 ms
        return real()

    monkeypatch.setattr(collector._process, "memory_full_info", timed_read)
    for _ in range(7):
        collector.collect()
        now[0] += 1.0
    assert reads == pytest.approx([0.0, 3.001, 6.002])
    # A read that costs 1 s may only come back after 1 s / 0.1% = 1000 s.
    collector = ProcessCollector(uss_every=1, clock=lambda: now[0])
    reads.clear()

    def slow_read() -> Any:
        reads.append(now[0])
        now[0] += 1.0
        return real()

    monkeypatch.setattr(collector._process, "memory_full_info", slow_read)
    for _ in range(5):
        collector.collect()
        now[0] += 100.0
    assert len(reads) == 1
    assert ("process_unique_memory_bytes", ()) in values(collector.collect())  # last value kept


def test_uss_every_zero_never_reads_it(monkeypatch: pytest.MonkeyPatch) -> None:
    collector = ProcessCollector(uss_every=0)

    def boom() -> None:
        raise AssertionError("memory_full_info must not be called")

    monkeypatch.setattr(collector._process, "memory_full_info", boom)
    assert ("process_unique_memory_bytes", ()) not in values(collector.collect())


def test_process_reading_that_fails_is_switched_off_and_logged_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    collector = ProcessCollector()
    if not hasattr(collector._process, "io_counters"):
        pytest.skip("no io_counters on this platform")
    calls = []

    def denied() -> None:
        calls.append(1)
        raise psutil.AccessDenied(os.getpid())

    monkeypatch.setattr(collector._process, "io_counters", denied)
    caplog.set_level(logging.INFO, logger="perfsdk.collectors")
    for _ in range(3):
        names = {s.name for s in collector.collect()}
        assert "process_io_bytes_total" not in names
        assert "process_resident_memory_bytes" in names
    assert calls == [1]
    assert collector.disabled == {"io_counters"}
    assert sum("io_counters" in r.getMessage() for r in caplog.records) == 1


def test_process_collector_rejects_bad_parameters() -> None:
    with pytest.raises(ConfigError, match="uss_every=-1"):
        ProcessCollector(uss_every=-1)
    with pytest.raises(ConfigError, match="uss_budget=0"):
        ProcessCollector(uss_budget=0)


# -- system --------------------------------------------------------------------------------------


def test_system_collector_reports_real_values() -> None:
    collector = SystemCollector()
    burn_cpu(0.05)
    time.sleep(0.05)
    got = values(collector.collect())
    total = got[("system_memory_bytes", (("state", "total"),))]
    assert total > 0
    assert 0 < got[("system_memory_bytes", (("state", "available"),))] <= total
    assert 0 < got[("system_memory_bytes", (("state", "used"),))] <= total
    assert got[("system_cpu_count", ())] >= 1
    assert got[("system_cpu_seconds_total", (("mode", "idle"),))] > 0
    percents = {
        labels[0][1]: v for (name, labels), v in got.items() if name == "system_cpu_percent"
    }
    assert "user" in percents and "idle" in percents
    busy = sum(v for mode, v in percents.items() if mode not in ("guest", "guest_nice"))
    assert busy == pytest.approx(100.0)
    root = (("mountpoint", "/"), ("state", "total"))
    assert got[("system_disk_usage_bytes", root)] > 0
    assert ("system_swap_bytes", (("state", "total"),)) in got
    for direction in ("receive", "transmit"):
        assert ("system_network_bytes_total", (("direction", direction),)) in got
        assert ("system_network_errors_total", (("direction", direction),)) in got
    if LINUX and psutil.disk_io_counters() is not None:
        assert got[("system_disk_io_operations_total", (("direction", "read"),))] > 0


def test_system_cpu_percent_per_mode_from_deltas(monkeypatch: pytest.MonkeyPatch) -> None:
    times = psutil.cpu_times()
    fields = times._fields
    base = {field: 100.0 for field in fields}

    def fake(**delta: float) -> Any:
        return type(times)(*(base[f] + delta.get(f, 0.0) for f in fields))

    readings = iter(
        [fake(), fake(user=3.0, system=1.0, idle=4.0), fake(user=3.0, system=1.0, idle=4.0)]
    )
    monkeypatch.setattr(psutil, "cpu_times", lambda: next(readings))
    collector = SystemCollector()
    got = values(collector.collect())
    assert got[("system_cpu_percent", (("mode", "user"),))] == pytest.approx(37.5)
    assert got[("system_cpu_percent", (("mode", "system"),))] == pytest.approx(12.5)
    assert got[("system_cpu_percent", (("mode", "idle"),))] == pytest.approx(50.0)
    assert got[("system_cpu_seconds_total", (("mode", "user"),))] == pytest.approx(103.0)
    # No time passed since: no percentages this round (and the baseline is kept).
    names = {s.name for s in collector.collect()}
    assert "system_cpu_percent" not in names and "system_cpu_seconds_total" in names


def test_network_leaves_loopback_out(monkeypatch: pytest.MonkeyPatch) -> None:
    nic = type(psutil.net_io_counters())
    fields = nic._fields

    def counters(n: int) -> Any:
        return nic(*([n] * len(fields)))

    monkeypatch.setattr(
        psutil,
        "net_io_counters",
        lambda pernic=False: {"lo": counters(1000), "eth0": counters(5), "eth1": counters(7)},
    )
    got = values(SystemCollector().collect())
    assert got[("system_network_bytes_total", (("direction", "receive"),))] == 12
    assert got[("system_network_dropped_total", (("direction", "transmit"),))] == 12
    assert [
        is_loopback(n) for n in ("lo", "lo0", "Loopback Pseudo-Interface 1", "eth0", "long0")
    ] == [
        True,
        True,
        True,
        False,
        False,
    ]


def test_system_reading_that_fails_is_switched_off(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="perfsdk.collectors")
    collector = SystemCollector(disk_paths=["/", "/no/such/path/for/perfsdk"])
    for _ in range(2):
        got = values(collector.collect())
        assert ("system_disk_usage_bytes", (("mountpoint", "/"), ("state", "free"))) in got
        assert not any(
            labels[:1] == (("mountpoint", "/no/such/path/for/perfsdk"),) for _, labels in got
        )
    assert collector.disabled == {"disk_usage(/no/such/path/for/perfsdk)"}
    assert sum("/no/such/path" in r.getMessage() for r in caplog.records) == 1
    with pytest.raises(ConfigError, match="disk_paths"):
        SystemCollector(disk_paths=[""])


# -- runtime: garbage-collection pauses ------------------------------------------------------------


def test_gc_pause_series_counts_collections(registry: perfsdk.Registry) -> None:
    collector = RuntimeCollector(registry)
    collector.collect()  # drain whatever was pending
    before = registry.series(GC_PAUSE_SERIES, {"generation": "2"}).count
    for _ in range(3):
        gc.collect()
    samples = collector.collect()
    snap = registry.snapshot()
    record = snap.get(GC_PAUSE_SERIES, generation="2")
    assert record is not None and record.kind == "timer"
    assert record.total.count - before >= 3
    assert 0 < record.total.max < 5
    for generation in "01":  # every generation's series exists, even before its first pause
        assert snap.get(GC_PAUSE_SERIES, generation=generation) is not None
    got = values(samples)
    assert got[("python_gc_collections_total", (("generation", "2"),))] >= 3
    assert got[("python_threads", ())] >= 1


def test_gc_callback_install_is_idempotent_and_removable(registry: perfsdk.Registry) -> None:
    recorder = GcPauseRecorder()
    try:
        RuntimeCollector(registry, gc_pauses=recorder)
        collector = RuntimeCollector(registry, gc_pauses=recorder)
        recorder.install()
        assert sum(cb == recorder._callback for cb in gc.callbacks) == 1
        gc.collect()
        assert recorder.pending() >= 1
        collector.close()
        assert not recorder.installed
        assert recorder._callback not in gc.callbacks
        collector.collect()
        pending = recorder.pending()
        gc.collect()
        assert recorder.pending() == pending == 0
        collector.close()  # removing twice is fine
    finally:
        recorder.uninstall()


def test_gc_pauses_are_bounded_when_nothing_drains() -> None:
    recorder = GcPauseRecorder(max_pending=2)
    recorder.install()
    try:
        for _ in range(5):
            gc.collect()
    finally:
        recorder.uninstall()
    assert recorder.pending() == 2
    assert recorder.dropped >= 3


def test_gc_callback_never_raises() -> None:
    recorder = GcPauseRecorder()
    recorder._callback("stop", {})  # a stop without its start
    recorder._callback("start", {})
    recorder._callback("stop", {})  # no generation: swallowed, nothing recorded
    assert recorder.pending() == 0


def test_runtime_collector_without_registry_uses_the_default() -> None:
    recorder = GcPauseRecorder()
    try:
        collector = RuntimeCollector(gc_pauses=recorder)
        gc.collect()
        collector.collect()
    finally:
        recorder.uninstall()
    assert perfsdk.get_registry().series(GC_PAUSE_SERIES, {"generation": "2"}).count >= 1


# -- runtime: event-loop lag -----------------------------------------------------------------------


def test_loop_probe_detects_a_blocking_call(registry: perfsdk.Registry) -> None:
    async def main() -> runtime.LoopProbe:
        probe = install_loop_probe(interval=0.01, registry=registry)
        assert install_loop_probe(interval=0.5) is probe  # idempotent per loop
        await asyncio.sleep(0.05)
        time.sleep(0.05)  # the deliberate stall
        await asyncio.sleep(0.05)
        return probe

    probe = asyncio.run(main())
    assert probe.max_lag >= 0.04
    assert probe.observations >= 5
    record = registry.snapshot().get(LOOP_LAG_SERIES)
    assert record is not None and record.kind == "timer"
    assert record.total.count == probe.observations
    assert record.total.max == pytest.approx(probe.max_lag, rel=0.02)
    assert record.total.p50 < 0.02  # the loop was idle otherwise
    assert not probe.running  # asyncio.run cancelled it at shutdown
    assert runtime._loop_probes() == {}


def test_loop_probe_from_another_thread_and_removal(registry: perfsdk.Registry) -> None:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever)
    thread.start()
    try:
        probe = install_loop_probe(loop, 0.01, registry=registry, labels={"loop": "worker"})
        deadline = time.monotonic() + 5
        while probe.observations < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        loop.call_soon_threadsafe(time.sleep, 0.05)
        while probe.max_lag < 0.03 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert probe.max_lag >= 0.03
        assert remove_loop_probe(loop) is True
        assert remove_loop_probe(loop) is False
        deadline = time.monotonic() + 5
        while probe.running and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not probe.running
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
    assert registry.snapshot().get(LOOP_LAG_SERIES, loop="worker") is not None


def test_loop_probe_needs_a_loop_and_a_positive_interval() -> None:
    with pytest.raises(NoEventLoopError, match="install_loop_probe"):
        install_loop_probe()
    assert isinstance(NoEventLoopError("x"), RuntimeError)
    assert maybe_install_loop_probe() is None
    assert remove_loop_probe() is False

    async def bad() -> None:
        for interval in (0, -1, math.inf, math.nan, "0.1"):
            with pytest.raises(ConfigError, match="interval"):
                install_loop_probe(interval=interval)  # type: ignore[arg-type]

    asyncio.run(bad())


# -- the built-in plugins ------------------------------------------------------------------------


def test_builtin_plugins_contribute_the_collectors() -> None:
    m = manager()
    m.check_pending()
    collectors = m.hooks.collectors({})
    assert sorted(c.name for c in collectors) == ["process", "python_runtime", "system"]
    assert all(isinstance(c, Collector) for c in collectors)
    options: dict[str, object] = {}
    m.hooks.addoption(options)
    assert options == {
        "runtime_gc_pauses": True,
        "runtime_loop_probe_interval": 0.1,
        "process_uss_every": 60,
        "system_disk_paths": ["/"],
    }
    assert m.errors == {}


@pytest.mark.parametrize(
    ("disabled", "left"),
    [
        (["system"], ["process", "python_runtime"]),
        (["process", "python_runtime"], ["system"]),
        ("system, process", ["python_runtime"]),
        (["python_runtime", "process", "system"], []),
        (["no-such-collector"], ["process", "python_runtime", "system"]),
    ],
)
def test_disabled_collectors_are_honoured(disabled: object, left: list[str]) -> None:
    collectors = manager().hooks.collectors({"disabled_collectors": disabled})
    assert sorted(c.name for c in collectors) == left


def test_disabled_plugins_by_short_name() -> None:
    m = manager(env={ENV_DISABLED_PLUGINS: "system_collector,process_collector"})
    assert [c.name for c in m.hooks.collectors({})] == ["python_runtime"]


def test_bad_configuration_is_a_plugin_failure_naming_the_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="perfsdk.plugins")
    m = manager()
    config = {"process_uss_every": -5, "system_disk_paths": 3}
    assert [c.name for c in m.hooks.collectors(config)] == ["python_runtime"]
    text = caplog.text
    assert "process_uss_every=-5" in text and "system_disk_paths=3" in text


def test_gc_pause_timing_can_be_switched_off() -> None:
    runtime.uninstall_gc_callback()
    try:
        [collector] = manager(builtins=(BUILTINS[0],)).hooks.collectors(
            {"runtime_gc_pauses": False}
        )
        assert isinstance(collector, RuntimeCollector) and collector.gc_pauses is None
        assert not runtime.GC_PAUSES.installed
        assert "python_gc_collections_total" in {s.name for s in collector.collect()}
    finally:
        runtime.install_gc_callback()


def test_without_psutil_the_psutil_plugins_contribute_nothing(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from perfsdk.builtin import process_collector, system_collector

    monkeypatch.setitem(sys.modules, "psutil", None)  # makes `import psutil` raise ImportError
    monkeypatch.delitem(sys.modules, "perfsdk.collectors.process")
    monkeypatch.delitem(sys.modules, "perfsdk.collectors.system")
    monkeypatch.setattr(process_collector, "_missing_logged", False)
    monkeypatch.setattr(system_collector, "_missing_logged", False)
    caplog.set_level(logging.WARNING, logger="perfsdk.collectors")
    m = manager()
    for _ in range(3):
        assert [c.name for c in m.hooks.collectors({})] == ["python_runtime"]
    assert m.errors == {}
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2 and all("psutil" in message for message in messages)


def test_configure_probes_the_running_loop_and_unconfigure_removes_it() -> None:
    m = manager(builtins=("perfsdk.builtin.runtime_collector",))

    async def main() -> tuple[bool, bool]:
        m.hooks.configure({"runtime_loop_probe_interval": 0.01})
        loop = asyncio.get_running_loop()
        probe = runtime._loop_probes().get(loop)
        installed = probe is not None and probe.running
        m.hooks.unconfigure({})
        await asyncio.sleep(0)
        return installed, probe is not None and probe.running

    installed, still_running = asyncio.run(main())
    assert installed and not still_running
    assert not runtime.GC_PAUSES.installed
    # Outside a loop, or with the interval at 0, configure installs nothing.
    m.hooks.configure({"runtime_loop_probe_interval": 0.01})
    assert runtime._loop_probes() == {}
    m.hooks.collectors({})  # reinstalls the GC callback for the rest of the session
    assert runtime.GC_PAUSES.installed


# -- names ---------------------------------------------------------------------------------------


def all_samples() -> list[tuple[str, Sample]]:
    out = []
    for collector in (ProcessCollector(), SystemCollector(), RuntimeCollector(perfsdk.Registry())):
        time.sleep(0.02)
        out.extend((collector.name, sample) for sample in collector.collect())
    return out


def test_names_follow_prometheus_rules() -> None:
    kinds: dict[str, str] = {}
    seen: set[Key] = set()
    for collector, sample in all_samples():
        assert isinstance(sample, Sample)
        check_metric_name(sample.name)
        assert METRIC_NAME.match(sample.name), sample
        assert not sample.name.startswith("__"), sample
        assert normalize_labels(sample.labels) == sample.labels, sample  # valid, sorted
        assert all(
            LABEL_NAME.match(label) and not label.startswith("__") for label, _ in sample.labels
        )
        assert sample.kind in ("counter", "gauge"), sample
        assert sample.name.endswith("_total") == (sample.kind == "counter"), sample
        assert sample.help, sample
        assert isinstance(sample.value, float) and math.isfinite(sample.value), sample
        prefix = {"process": "process_", "system": "system_", "python_runtime": "python_"}[
            collector
        ]
        assert sample.name.startswith(prefix), sample
        assert kinds.setdefault(sample.name, sample.kind) == sample.kind, sample
        key = (sample.name, sample.labels)
        assert key not in seen, f"{key} reported twice"
        seen.add(key)
    for name in (GC_PAUSE_SERIES, LOOP_LAG_SERIES):
        check_metric_name(name)
        assert name.endswith("_seconds")


def test_samples_fit_one_registry(registry: perfsdk.Registry) -> None:
    """What the agent does with them: every sample in a settable cell, side by side."""
    if not hasattr(registry, "sample_cell"):
        pytest.skip("this registry has no sample_cell (the agent's registry API) yet")
    for _, sample in all_samples():
        registry.sample_cell(sample.name, sample.labels, sample.kind, sample.help).set(sample.value)
    names = registry.names()
    assert "process_cpu_seconds_total" in names and "system_memory_bytes" in names


# -- perfsdk-gpu ---------------------------------------------------------------------------------


@pytest.fixture
def perfsdk_gpu(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    try:
        module = importlib.import_module("perfsdk_gpu")
    except ImportError:  # not installed: import it from the checkout
        monkeypatch.syspath_prepend(str(REPO / "plugins" / "perfsdk-gpu"))
        module = importlib.import_module("perfsdk_gpu")
    monkeypatch.setattr(module, "_unavailable_logged", False)
    monkeypatch.setattr(module, "_open", [])
    yield module


class FakeNVMLError(Exception):
    pass


def fake_pynvml(devices: int = 2, *, init_error: bool = False) -> types.ModuleType:
    nvml = types.ModuleType("pynvml")
    state: dict[str, Any] = {"inits": 0, "shutdowns": 0, "lost": set()}

    def init() -> None:
        if init_error:
            raise FakeNVMLError("Driver Not Loaded")
        state["inits"] += 1

    def handle(index: int) -> int:
        return 100 + index

    def util(h: int) -> Any:
        if h - 100 in state["lost"]:
            raise FakeNVMLError("GPU is lost")
        return types.SimpleNamespace(gpu=10 * (h - 99), memory=5 * (h - 99))

    def memory(h: int) -> Any:
        return types.SimpleNamespace(
            total=16 << 30, used=(h - 99) << 30, free=(16 - (h - 99)) << 30
        )

    nvml.NVMLError = FakeNVMLError  # type: ignore[attr-defined]
    nvml.nvmlInit = init  # type: ignore[attr-defined]
    nvml.nvmlShutdown = lambda: state.__setitem__("shutdowns", state["shutdowns"] + 1)  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetCount = lambda: devices  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetHandleByIndex = handle  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetUtilizationRates = util  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetMemoryInfo = memory  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetName = lambda h: f"Fake GPU {h - 100}"  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetUUID = lambda h: f"GPU-{h:04d}".encode()  # type: ignore[attr-defined]  # old pynvml: bytes
    nvml.state = state  # type: ignore[attr-defined]
    return nvml


def test_gpu_plugin_on_this_machine_reports_nothing_and_raises_nothing(
    perfsdk_gpu: types.ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    try:
        import pynvml

        pynvml.nvmlInit()
    except ImportError:
        pass
    except Exception:  # NVMLError: no driver, the expected case here
        pass
    else:
        pynvml.nvmlShutdown()
        pytest.skip("this machine has an NVIDIA driver")
    caplog.set_level(logging.DEBUG, logger="perfsdk.collectors")
    assert perfsdk_gpu.perfsdk_collectors({}) == []
    assert perfsdk_gpu.perfsdk_collectors({}) == []
    logged = [r for r in caplog.records if "GPU" in r.getMessage()]
    assert len(logged) == 1 and logged[0].levelno == logging.DEBUG
    perfsdk_gpu.perfsdk_unconfigure({})


def test_gpu_plugin_with_a_fake_pynvml(
    perfsdk_gpu: types.ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    nvml = fake_pynvml(devices=2)
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    [collector] = perfsdk_gpu.perfsdk_collectors({})
    assert isinstance(collector, Collector) and collector.name == "gpu"
    got = values(collector.collect())
    for index in (0, 1):
        gpu = (("gpu", str(index)),)
        assert got[("gpu_utilization_percent", gpu)] == 10 * (index + 1)
        assert got[("gpu_memory_utilization_percent", gpu)] == 5 * (index + 1)
        assert got[("gpu_memory_bytes", (*gpu, ("state", "total")))] == 16 << 30
        assert got[("gpu_memory_bytes", (*gpu, ("state", "used")))] == (index + 1) << 30
        assert got[("gpu_memory_bytes", (*gpu, ("state", "free")))] == (15 - index) << 30
        info = (*gpu, ("name", f"Fake GPU {index}"), ("uuid", f"GPU-{100 + index:04d}"))
        assert got[("gpu_info", info)] == 1
    assert len(got) == 2 * 6
    for sample in collector.collect():
        assert METRIC_NAME.match(sample.name) and sample.kind == "gauge" and sample.help
        assert normalize_labels(sample.labels) == sample.labels

    nvml.state["lost"].add(1)  # type: ignore[attr-defined]
    got = values(collector.collect())  # the lost GPU is skipped, nothing raises
    assert {labels[0] for _, labels in got} == {("gpu", "0")}

    assert nvml.state["shutdowns"] == 0  # type: ignore[attr-defined]
    perfsdk_gpu.perfsdk_unconfigure({})
    assert nvml.state["shutdowns"] == 1  # type: ignore[attr-defined]
    assert collector.collect() == []


def test_gpu_plugin_when_nvml_fails_or_finds_nothing(
    perfsdk_gpu: types.ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(init_error=True))
    assert perfsdk_gpu.perfsdk_collectors({}) == []
    empty = fake_pynvml(devices=0)
    monkeypatch.setitem(sys.modules, "pynvml", empty)
    assert perfsdk_gpu.perfsdk_collectors({}) == []
    assert empty.state["shutdowns"] == empty.state["inits"] == 1  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", None)  # not installed
    assert perfsdk_gpu.perfsdk_collectors({}) == []


def test_gpu_collector_can_be_disabled(
    perfsdk_gpu: types.ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    nvml = fake_pynvml()
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    assert perfsdk_gpu.perfsdk_collectors({"disabled_collectors": ["gpu"]}) == []
    assert nvml.state["inits"] == 0  # type: ignore[attr-defined]


def test_gpu_plugin_registers_cleanly(perfsdk_gpu: types.ModuleType) -> None:
    m = manager(builtins=())
    m.register(perfsdk_gpu, name="gpu")
    m.check_pending()


# -- with the agent ------------------------------------------------------------------------------


def test_agent_in_a_coroutine_gets_every_collector_and_the_loop_probe(tmp_path: Path) -> None:
    agent_module = pytest.importorskip("perfsdk.agent")
    config_module = pytest.importorskip("perfsdk.config")
    m = manager()
    options: dict[str, object] = {}
    m.hooks.addoption(options)
    config = config_module.load_config(
        {"http_enabled": False, "store_enabled": False, "runtime_loop_probe_interval": 0.01},
        env={},
        cwd=tmp_path,
        plugin_defaults=options,
    )
    registry = perfsdk.get_registry()  # what perfsdk.start() uses, and RuntimeCollector's default

    async def main() -> tuple[Any, bool]:
        agent = agent_module.Agent(config, registry, m).start()
        try:
            probe = runtime._loop_probes().get(asyncio.get_running_loop())
            await asyncio.sleep(0.1)
            gc.collect()
            snapshot = agent.tick()
        finally:
            agent.stop()
        await asyncio.sleep(0)
        return snapshot, probe is not None and probe.running

    snapshot, probe_left_running = asyncio.run(main())
    assert not probe_left_running  # the agent stopping removed it
    names = {s.name for s in snapshot.series}
    for name in (
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "system_memory_bytes",
        "system_cpu_percent",
        "python_gc_collections_total",
        GC_PAUSE_SERIES,
        LOOP_LAG_SERIES,
    ):
        assert name in names, name
    assert snapshot.get("perfsdk_collector_errors_total", collector="process") is None
    lag = snapshot.get(LOOP_LAG_SERIES)
    assert lag is not None and lag.total.count >= 3
    runtime.install_gc_callback()  # the agent stopping removed it; other tests expect it
