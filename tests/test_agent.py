"""The agent: ticks, isolation and backoff, flush on stop and at exit, fork safety."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterable
from pathlib import Path

import pytest

import perfsdk
from perfsdk import hookimpl
from perfsdk.agent import Agent
from perfsdk.config import load_config
from perfsdk.plugins import PluginManager
from perfsdk.protocols import Sample

ROOT = Path(__file__).resolve().parents[1]


class ListExporter:
    name = "list"

    def __init__(self) -> None:
        self.snapshots: list[perfsdk.Snapshot] = []
        self.closed = False

    def export(self, snapshot: perfsdk.Snapshot) -> None:
        self.snapshots.append(snapshot)

    def close(self) -> None:
        self.closed = True


class BrokenExporter:
    name = "broken"

    def __init__(self) -> None:
        self.calls = 0

    def export(self, snapshot: perfsdk.Snapshot) -> None:
        self.calls += 1
        raise OSError("disk full")

    def close(self) -> None:
        pass


class CountingCollector:
    name = "counting"

    def __init__(self) -> None:
        self.n = 0

    def collect(self) -> Iterable[Sample]:
        self.n += 1
        return [
            Sample("test_collected_total", float(self.n), kind="counter", help="n"),
            Sample("test_level", 7.0, (("where", "here"),)),
        ]


class BrokenCollector:
    name = "broken_collector"

    def collect(self) -> Iterable[Sample]:
        raise RuntimeError("no /proc")


def make_agent(*plugins: object, **options: object) -> tuple[Agent, perfsdk.Registry]:
    manager = PluginManager(builtins=(), load_entrypoints=False)
    for i, p in enumerate(plugins):
        manager.register(p, name=f"test-plugin-{i}")
    cfg = load_config({"interval": 0.05, **options}, env={})
    reg = perfsdk.Registry()
    return Agent(cfg, reg, manager), reg


class Plugin:
    def __init__(self, collectors: list[object], exporters: list[object]) -> None:
        self._c = collectors
        self._e = exporters

    @hookimpl
    def perfsdk_collectors(self, config: object) -> list[object]:
        return self._c

    @hookimpl
    def perfsdk_exporters(self, config: object) -> list[object]:
        return self._e


def test_tick_collects_snapshots_and_exports() -> None:
    exp, col = ListExporter(), CountingCollector()
    agent, reg = make_agent(Plugin([col], [exp]))
    agent._load_components()
    reg.series("work_seconds").record(0.1, reg.now())
    snap = agent.tick()
    assert exp.snapshots == [snap]
    assert snap.get("test_collected_total").kind == "counter"  # type: ignore[union-attr]
    assert snap.get("test_collected_total").value == 1.0  # type: ignore[union-attr]
    assert snap.get("test_level", where="here").value == 7.0  # type: ignore[union-attr]
    work = snap.get("work_seconds")
    assert work is not None and work.total_sketch is not None and work.total.count == 1  # type: ignore[union-attr]


def test_thread_runs_on_schedule_and_stop_flushes() -> None:
    exp = ListExporter()
    agent, reg = make_agent(Plugin([], [exp]))
    agent.start()
    time.sleep(0.5)
    assert agent.running and len(exp.snapshots) >= 3
    reg.series("late_seconds").record(0.2, reg.now())
    agent.stop()
    assert exp.closed
    last = exp.snapshots[-1].get("late_seconds")
    assert last is not None and last.total is not None and last.total.count == 1
    assert not agent.running


def test_failures_isolated_counted_logged_once_and_backed_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    good, bad, bad_col = ListExporter(), BrokenExporter(), BrokenCollector()
    agent, reg = make_agent(Plugin([bad_col, CountingCollector()], [bad, good]))
    agent._load_components()
    for _ in range(20):
        agent.tick()
        time.sleep(0.01)
    assert len(good.snapshots) == 20  # the healthy exporter never missed a tick
    assert 1 <= bad.calls < 20  # backoff: not retried every tick
    snap = reg.snapshot()
    assert snap.get("perfsdk_exporter_errors_total", exporter="broken").value == bad.calls  # type: ignore[union-attr]
    assert snap.get("perfsdk_collector_errors_total", collector="broken_collector").value >= 1  # type: ignore[union-attr]
    warnings = [r for r in caplog.records if "isolated" in r.getMessage()]
    assert len(warnings) == 2  # once per failing component


def test_recovers_after_failure() -> None:
    class Flaky(ListExporter):
        name = "flaky"
        fail = True

        def export(self, snapshot: perfsdk.Snapshot) -> None:
            if self.fail:
                raise ConnectionError("down")
            super().export(snapshot)

    flaky = Flaky()
    agent, _ = make_agent(Plugin([], [flaky]))
    agent._load_components()
    agent.tick()
    flaky.fail = False
    deadline = time.time() + 3
    while not flaky.snapshots and time.time() < deadline:
        agent.tick()
        time.sleep(0.02)
    assert flaky.snapshots


def test_disabled_collectors() -> None:
    exp = ListExporter()
    agent, _ = make_agent(Plugin([CountingCollector()], [exp]), disabled_collectors=["counting"])
    agent._load_components()
    assert agent.collectors == []


def test_agent_cpu_self_metric() -> None:
    agent, _reg = make_agent(Plugin([], []))
    agent._load_components()
    agent.tick()
    snap = agent.tick()
    assert snap.get("perfsdk_agent_cpu_seconds_total") is not None
    ticks = snap.get("perfsdk_agent_tick_seconds")
    assert ticks is not None and ticks.total is not None and ticks.total.count >= 1


SCRIPT = textwrap.dedent(
    """
    import json, os, sys, time
    import perfsdk
    from perfsdk import hookimpl

    out = sys.argv[1]

    class FileExporter:
        name = "file"
        def export(self, snapshot):
            s = snapshot.get("job_seconds")
            tmp = out + ".tmp" + str(os.getpid())
            with open(tmp, "w") as f:
                json.dump({"count": s.total.count if s else 0, "pid": os.getpid()}, f)
            os.replace(tmp, out + "." + str(os.getpid()))
        def close(self):
            pass

    class P:
        @hookimpl
        def perfsdk_exporters(self, config):
            return [FileExporter()]

    from perfsdk.plugins import get_plugin_manager
    get_plugin_manager().register(P(), name="file-exporter")

    @perfsdk.timed("job_seconds")
    def job():
        pass

    for _ in range(5):
        job()
    perfsdk.start(interval=0.05, http_enabled=False, store_enabled=False)
    pid = os.fork()
    if pid == 0:
        for _ in range(3):
            job()
        time.sleep(0.3)
        os._exit(0)   # no atexit: the child's own agent thread must have exported
    os.waitpid(pid, 0)
    job()
    # normal exit: atexit flushes the parent's final count
    print(pid)
    """
)


def test_fork_child_starts_clean_and_reports_on_its_own_and_exit_flushes(tmp_path: Path) -> None:
    script = tmp_path / "app.py"
    script.write_text(SCRIPT)
    out = tmp_path / "state"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PERFSDK_DISABLE_PLUGIN_AUTOLOAD": "1"}
    proc = subprocess.run(
        [sys.executable, str(script), str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    child = int(proc.stdout.strip())
    files = {
        json.loads(p.read_text())["pid"]: json.loads(p.read_text())
        for p in tmp_path.glob("state.[0-9]*")
    }
    assert files[child]["count"] == 3  # the parent's 5 calls were not inherited
    parent = next(pid for pid in files if pid != child)
    assert files[parent]["count"] == 6  # flushed at exit, including the last call
