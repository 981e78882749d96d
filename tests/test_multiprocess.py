"""Many processes: state files, the merged view, the archive of exited workers, gunicorn."""

from __future__ import annotations

import contextlib
import importlib.util
import math
import multiprocessing
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import pytest

import perfsdk
from perfsdk import _accel
from perfsdk.multiprocess import (
    ARCHIVE_NAME,
    SUFFIX,
    MultiprocessWriter,
    clear_directory,
    decode_state,
    encode_state,
    merged_snapshot,
    process_alive,
    process_identity,
)
from perfsdk.protocols import Exporter
from tests.conftest import FakeClock

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="process identity is read from /proc"
)

QS = (0.5, 0.9, 0.95, 0.99, 0.999)


def pid_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob(f"*{SUFFIX}") if p.name != ARCHIVE_NAME)


def dead_pid() -> int:
    """A pid no process can have (above the kernel's pid_max)."""
    return int(Path("/proc/sys/kernel/pid_max").read_text()) + 1


def worker_values(seed: int, n: int) -> list[float]:
    rnd = random.Random(seed)
    return [rnd.lognormvariate(-6, 1.5) for _ in range(n)]


def record_and_wait(directory: str, seed: int, n: int, ready: Any, leave: Event) -> None:
    """A worker: record known values, export, report, and stay alive until told to leave."""
    reg = perfsdk.Registry()
    series = reg.series("job_seconds", {"queue": "mail"}, help="Job latency.", threshold=0.005)
    for i, value in enumerate(worker_values(seed, n)):
        if i % 10 == 0:
            series.record_error(value, reg.now())
        else:
            series.record(value, reg.now())
    reg.counter("jobs_total", {"queue": "mail"}).inc(n)
    reg.gauge("queue_depth").set(seed)
    MultiprocessWriter(directory).export(reg.snapshot(include_sketches=True))
    ready.put(os.getpid())
    leave.wait(60)


def snapshot_of(reg: perfsdk.Registry) -> perfsdk.Snapshot:
    return reg.snapshot(include_sketches=True)


def small_registry(values: list[float], *, gauge: float = 1.0) -> perfsdk.Registry:
    reg = perfsdk.Registry(clock=FakeClock(), ticks_per_second=1e9)
    series = reg.series("op_seconds", {"op": "read"})
    for v in values:
        series.record(v, reg.now())
    reg.counter("ops_total").inc(len(values))
    reg.gauge("in_flight").set(gauge)
    return reg


def write_state(directory: Path, reg: perfsdk.Registry, pid: int, identity: str) -> Path:
    path = directory / f"{pid}{SUFFIX}"
    path.write_bytes(encode_state(snapshot_of(reg), pid=pid, identity=identity))
    return path


def total_count(snap: perfsdk.Snapshot, name: str, **labels: str) -> int:
    rec = snap.get(name, **labels)
    assert rec is not None and rec.total is not None, (name, labels)
    return rec.total.count


def value_of(snap: perfsdk.Snapshot, name: str, **labels: str) -> float | None:
    rec = snap.get(name, **labels)
    assert rec is not None, (name, labels)
    return rec.value


def one_sketch(values: list[float]) -> _accel.Sketch:
    sk = _accel.Sketch(0.01)
    sk.add_many(values)
    return sk


# --- the file format ------------------------------------------------------------------------------


def test_state_round_trips() -> None:
    reg = small_registry([0.001, 0.002, 0.004], gauge=7.0)
    snap = snapshot_of(reg)
    state = decode_state(encode_state(snap, pid=42, identity="boot:1"))
    assert (state.pid, state.identity, state.taken_at) == (42, "boot:1", snap.taken_at)
    rows = {row[0]: row for row in state.series}
    timer = snap.get("op_seconds", op="read")
    assert timer is not None and timer.total is not None
    _, offset, length = rows["op_seconds"][7][2:]
    assert state.blob[offset : offset + length] == timer.total_sketch
    assert state.sketch(offset, length).count == 3
    assert rows["ops_total"][6] == 3.0
    assert rows["in_flight"][6] == 7.0


def test_bad_files_are_rejected() -> None:
    with pytest.raises(ValueError, match="not a perfsdk state file"):
        decode_state(b"hello world, not a state file")
    data = bytearray(encode_state(snapshot_of(small_registry([1.0])), pid=1, identity=""))
    data[4] = 99
    with pytest.raises(ValueError, match="version 99"):
        decode_state(bytes(data))


def test_timer_without_sketches_is_refused(tmp_path: Path) -> None:
    reg = small_registry([0.1])
    with pytest.raises(ValueError, match="include_sketches=True"):
        MultiprocessWriter(tmp_path).export(reg.snapshot())


def test_unreadable_file_is_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / f"123{SUFFIX}").write_bytes(b"garbage")
    writer = MultiprocessWriter(tmp_path)
    writer.export(snapshot_of(small_registry([0.5])))
    rec = merged_snapshot(tmp_path).get("op_seconds", op="read")
    assert rec is not None and rec.total is not None and rec.total.count == 1
    assert "unreadable state file" in caplog.text


# --- the writer and the plugin ----------------------------------------------------------------


def test_writer_is_an_exporter_writing_its_pid_file(tmp_path: Path) -> None:
    writer = MultiprocessWriter(tmp_path / "mp")
    assert isinstance(writer, Exporter)
    writer.export(snapshot_of(small_registry([0.25])))
    assert pid_files(tmp_path / "mp") == [f"{os.getpid()}{SUFFIX}"]
    assert writer.path == str(tmp_path / "mp" / f"{os.getpid()}{SUFFIX}")
    assert not [p for p in (tmp_path / "mp").iterdir() if p.name.endswith(".tmp")]
    writer.close()
    assert pid_files(tmp_path / "mp")  # kept: folded into the archive once the process exits


def test_writer_warns_when_its_file_is_taken_away(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    writer = MultiprocessWriter(tmp_path)
    writer.export(snapshot_of(small_registry([0.1])))
    Path(writer.path).unlink()  # as a reader in another pid namespace would, taking it for exited
    writer.export(snapshot_of(small_registry([0.1])))
    assert "its own multiprocess_dir" in caplog.text
    assert Path(writer.path).exists()


def test_builtin_plugin_returns_the_writer_only_when_configured(tmp_path: Path) -> None:
    from perfsdk.plugins import PluginManager

    manager = PluginManager(
        builtins=("perfsdk.builtin.multiprocess_exporter",), load_entrypoints=False, env={}
    )
    assert manager.hooks.exporters({"multiprocess_dir": ""}) == []
    (writer,) = manager.hooks.exporters({"multiprocess_dir": str(tmp_path)})
    assert isinstance(writer, MultiprocessWriter)
    assert writer.directory == str(tmp_path)


def test_merged_view_of_a_missing_directory_is_empty(tmp_path: Path) -> None:
    assert merged_snapshot(tmp_path / "nothing").series == ()


def agent_worker(directory: str, cwd: str, n: int) -> None:
    from perfsdk.agent import Agent
    from perfsdk.config import load_config
    from perfsdk.plugins import PluginManager

    manager = PluginManager(
        builtins=("perfsdk.builtin.multiprocess_exporter",), load_entrypoints=False, env={}
    )
    options = {"multiprocess_dir": directory, "http_enabled": False, "store_enabled": False}
    reg = perfsdk.Registry()
    agent = Agent(load_config(options, env={}, cwd=cwd), reg, manager)
    agent.start()
    for i in range(n):
        with perfsdk.timer("handled_seconds", registry=reg):
            pass
        reg.counter("handled_total").inc()
        if i == n // 2:
            agent.tick()
    agent.stop()  # the last tick exports everything


def test_agents_in_workers_export_through_the_builtin_plugin(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    mp_dir = tmp_path / "mp"
    procs = [
        ctx.Process(target=agent_worker, args=(str(mp_dir), str(tmp_path), 100 * (i + 1)))
        for i in range(3)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    snap = merged_snapshot(mp_dir)
    assert total_count(snap, "handled_seconds") == 600
    assert value_of(snap, "handled_total") == 600
    ticks = snap.get("perfsdk_agent_tick_seconds")
    assert ticks is not None and ticks.total is not None and ticks.total.count >= 3
    assert pid_files(mp_dir) == []


# --- merge semantics --------------------------------------------------------------------------


@pytest.fixture(params=["fork", "spawn"])
def mp_context(request: pytest.FixtureRequest) -> Any:
    return multiprocessing.get_context(request.param)


def test_workers_merge_exactly_and_exited_ones_are_archived(
    tmp_path: Path, mp_context: Any
) -> None:
    n, seeds = 3000, [1, 2, 3, 4]
    ready = mp_context.Queue()
    leave = {seed: mp_context.Event() for seed in seeds}
    procs = {
        seed: mp_context.Process(
            target=record_and_wait, args=(str(tmp_path), seed, n, ready, leave[seed])
        )
        for seed in seeds
    }
    for p in procs.values():
        p.start()
    try:
        pids = {ready.get(timeout=60) for _ in seeds}
        assert pids == {p.pid for p in procs.values()}
        everything = [v for seed in seeds for v in worker_values(seed, n)]
        expected = one_sketch(everything).quantiles(QS)

        # All alive: totals and windows are the merge of every worker.
        snap = merged_snapshot(tmp_path)
        rec = snap.get("job_seconds", queue="mail")
        assert rec is not None and rec.total is not None and rec.window is not None
        for stats in (rec.total, rec.window):
            assert stats.count == n * len(seeds)
            assert stats.errors == n // 10 * len(seeds)
            assert [stats.p50, stats.p90, stats.p95, stats.p99, stats.p999] == expected
            assert stats.min == min(everything) and stats.max == max(everything)
            assert stats.above == sum(v > 0.005 for v in everything)
            assert math.isclose(stats.sum, math.fsum(everything), rel_tol=1e-9)
        assert rec.total_sketch is not None
        assert _accel.Sketch.from_bytes(rec.total_sketch).quantiles(QS) == expected
        assert rec.help == "Job latency." and rec.threshold == 0.005
        counter = snap.get("jobs_total", queue="mail")
        assert counter is not None and counter.value == n * len(seeds)
        gauges = {dict(s.labels)["pid"]: s.value for s in snap.by_name("queue_depth")}
        assert gauges == {str(procs[seed].pid): float(seed) for seed in seeds}
        assert not (tmp_path / ARCHIVE_NAME).exists()

        # Two workers exit: their totals move to the archive, their files go.
        for seed in (1, 2):
            leave[seed].set()
            procs[seed].join(30)
        snap = merged_snapshot(tmp_path)
        assert pid_files(tmp_path) == sorted(f"{procs[s].pid}{SUFFIX}" for s in (3, 4))
        assert (tmp_path / ARCHIVE_NAME).exists()
        rec = snap.get("job_seconds", queue="mail")
        assert rec is not None and rec.total is not None and rec.window is not None
        assert rec.total.count == n * len(seeds)
        assert [rec.total.p50, rec.total.p99, rec.total.p999] == [expected[0], *expected[3:]]
        live = [v for seed in (3, 4) for v in worker_values(seed, n)]
        assert rec.window.count == len(live)
        assert rec.window.p99 == one_sketch(live).quantile(0.99)
        assert value_of(snap, "jobs_total", queue="mail") == n * len(seeds)
        assert {dict(s.labels)["pid"] for s in snap.by_name("queue_depth")} == {
            str(procs[s].pid) for s in (3, 4)
        }

        # Everyone exits: the archive alone holds the totals; the next scrape reads only it.
        for seed in (3, 4):
            leave[seed].set()
            procs[seed].join(30)
        for _ in range(2):
            snap = merged_snapshot(tmp_path)
            assert pid_files(tmp_path) == []
            rec = snap.get("job_seconds", queue="mail")
            assert rec is not None and rec.total is not None and rec.window is not None
            assert rec.total.count == n * len(seeds)
            assert rec.total.errors == n // 10 * len(seeds)
            assert [rec.total.p50, rec.total.p90, rec.total.p95, rec.total.p99] == expected[:4]
            assert rec.window.count == 0 and math.isnan(rec.window.p99)
            assert snap.by_name("queue_depth") == ()
            assert value_of(snap, "jobs_total", queue="mail") == n * len(seeds)
    finally:
        for seed, p in procs.items():
            leave[seed].set()
            p.join(10)
            if p.is_alive():
                p.kill()


def test_gauge_modes(tmp_path: Path) -> None:
    me, parent = os.getpid(), os.getppid()
    write_state(tmp_path, small_registry([0.1], gauge=3.0), me, process_identity(me) or "")
    time.sleep(0.01)
    write_state(tmp_path, small_registry([0.2], gauge=5.0), parent, process_identity(parent) or "")
    by_mode = {
        mode: [
            (s.labels, s.value) for s in merged_snapshot(tmp_path, gauges=mode).by_name("in_flight")
        ]
        for mode in ("pid", "sum", "min", "max", "mostrecent")
    }
    assert by_mode["pid"] == sorted([((("pid", str(me)),), 3.0), ((("pid", str(parent)),), 5.0)])
    assert by_mode["sum"] == [((), 8.0)]
    assert by_mode["min"] == [((), 3.0)]
    assert by_mode["max"] == [((), 5.0)]
    assert by_mode["mostrecent"] == [((), 5.0)]
    with pytest.raises(perfsdk.ConfigError, match="gauges='avg'"):
        merged_snapshot(tmp_path, gauges="avg")


def test_total_span_and_rate_cover_the_earliest_process(tmp_path: Path) -> None:
    me, parent = os.getpid(), os.getppid()
    old = small_registry([0.1] * 10)
    old_clock = old.clock
    assert isinstance(old_clock, FakeClock)
    old_clock.advance(100.0)  # this series was created 100 s before its snapshot
    write_state(tmp_path, old, me, process_identity(me) or "")
    write_state(tmp_path, small_registry([0.1] * 30), parent, process_identity(parent) or "")
    rec = merged_snapshot(tmp_path).get("op_seconds", op="read")
    assert rec is not None and rec.total is not None
    assert 100.0 <= rec.total.seconds < 105.0
    assert math.isclose(rec.total.rate, 40 / rec.total.seconds)


# --- exited or not ----------------------------------------------------------------------------


def test_process_identity_and_liveness() -> None:
    me = os.getpid()
    ident = process_identity(me)
    assert ident and ident == process_identity(me)
    assert process_alive(me, ident)
    assert not process_alive(me, ident + "0")  # same pid, another process: pid reuse
    assert process_identity(dead_pid()) == ""
    assert not process_alive(dead_pid(), "")
    assert not process_alive(0, "")


def test_pid_reuse_guard_folds_a_stale_file(tmp_path: Path) -> None:
    parent = os.getppid()
    stale = write_state(tmp_path, small_registry([0.1, 0.2]), parent, "another-boot:12345")
    live = write_state(
        tmp_path, small_registry([0.3]), os.getpid(), process_identity(os.getpid()) or ""
    )
    rec = merged_snapshot(tmp_path).get("op_seconds", op="read")
    assert rec is not None and rec.total is not None and rec.window is not None
    assert rec.total.count == 3  # the stale file's totals are archived, not lost
    assert rec.window.count == 1  # ... but its window is not "live"
    assert not stale.exists() and live.exists()


def test_zombie_counts_as_exited(tmp_path: Path) -> None:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            MultiprocessWriter(tmp_path).export(snapshot_of(small_registry([0.1] * 5)))
        finally:
            os._exit(0)
    try:
        deadline = time.monotonic() + 10
        while process_identity(pid) != "" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert Path(f"/proc/{pid}").exists()  # not reaped yet: a zombie
        assert not process_alive(pid, "")
        rec = merged_snapshot(tmp_path).get("op_seconds", op="read")
        assert rec is not None and rec.total is not None and rec.total.count == 5
        assert pid_files(tmp_path) == []
    finally:
        os.waitpid(pid, 0)


def test_writer_folds_a_stale_file_under_its_own_pid(tmp_path: Path) -> None:
    me = os.getpid()
    write_state(tmp_path, small_registry([0.1] * 4), me, "an-earlier-process:1")
    MultiprocessWriter(tmp_path).export(snapshot_of(small_registry([0.2] * 2)))
    assert decode_state((tmp_path / f"{me}{SUFFIX}").read_bytes()).identity == process_identity(me)
    rec = merged_snapshot(tmp_path).get("op_seconds", op="read")
    assert rec is not None and rec.total is not None and rec.window is not None
    assert (rec.total.count, rec.window.count) == (6, 2)


def test_an_interrupted_fold_does_not_count_twice(tmp_path: Path) -> None:
    path = write_state(tmp_path, small_registry([0.1] * 7), dead_pid(), "")
    saved = path.read_bytes()
    assert value_of(merged_snapshot(tmp_path), "ops_total") == 7
    # As if the fold had written the archive and died before deleting the file.
    path.write_bytes(saved)
    assert value_of(merged_snapshot(tmp_path), "ops_total") == 7
    assert not path.exists()
    # A later fold of another process still counts that one.
    write_state(tmp_path, small_registry([0.1] * 2), dead_pid() + 1, "")
    snap = merged_snapshot(tmp_path)
    assert value_of(snap, "ops_total") == 9
    assert total_count(snap, "op_seconds", op="read") == 9


def test_orphan_temporaries_of_dead_writers_are_removed(tmp_path: Path) -> None:
    orphan = tmp_path / f".{dead_pid()}{SUFFIX}.{dead_pid()}.1.tmp"
    orphan.write_bytes(b"half written")
    write_state(tmp_path, small_registry([0.1]), dead_pid(), "")
    merged_snapshot(tmp_path)
    assert not orphan.exists()


def test_clear_directory(tmp_path: Path) -> None:
    write_state(tmp_path, small_registry([0.1]), dead_pid(), "")
    merged_snapshot(tmp_path)
    MultiprocessWriter(tmp_path).export(snapshot_of(small_registry([0.1])))
    clear_directory(tmp_path)
    assert pid_files(tmp_path) == [] and not (tmp_path / ARCHIVE_NAME).exists()
    assert merged_snapshot(tmp_path).series == ()


# --- concurrency ------------------------------------------------------------------------------


def test_concurrent_scrapes_fold_each_exited_process_once(tmp_path: Path) -> None:
    base = dead_pid()
    for i in range(12):
        write_state(tmp_path, small_registry([0.01 * (i + 1)] * (i + 1)), base + i, "")
    expected = sum(range(1, 13))
    counts: list[int] = []
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def scrape() -> None:
        try:
            start.wait()
            for _ in range(5):
                rec = merged_snapshot(tmp_path).get("op_seconds", op="read")
                assert rec is not None and rec.total is not None
                counts.append(rec.total.count)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=scrape) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert counts == [expected] * 30
    assert pid_files(tmp_path) == []


def export_in_a_loop(directory: str, rounds: int) -> None:
    reg = perfsdk.Registry()
    writer = MultiprocessWriter(directory)
    series = reg.series("loop_seconds")
    for _ in range(rounds):
        series.record(0.001, reg.now())
        reg.counter("loop_total").inc()
        writer.export(reg.snapshot(include_sketches=True))


def test_scrapes_while_workers_rewrite_and_exit(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=export_in_a_loop, args=(str(tmp_path), 150)) for _ in range(3)]
    for p in procs:
        p.start()
    seen: list[float] = []
    while any(p.is_alive() for p in procs) or not seen:
        rec = merged_snapshot(tmp_path).get("loop_total")
        seen.append(rec.value if rec is not None and rec.value is not None else 0.0)
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert seen == sorted(seen), "a counter of the merged view went down"
    final = merged_snapshot(tmp_path)
    assert value_of(final, "loop_total") == 450
    assert total_count(final, "loop_seconds") == 450
    assert pid_files(tmp_path) == []


# --- gunicorn -------------------------------------------------------------------------------------

GUNICORN_APP = """
import os

import perfsdk
from perfsdk.multiprocess import MultiprocessWriter, merged_snapshot

DIR = os.environ["PERFSDK_TEST_MP_DIR"]
REGISTRY = perfsdk.Registry()
WRITER = MultiprocessWriter(DIR)


def app(environ, start_response):
    if environ["PATH_INFO"] == "/merged":  # the merged view, from whichever worker answers
        rec = merged_snapshot(DIR).get("request_seconds", path="/work")
        body = str(rec.total.count if rec is not None else 0).encode()
    else:
        with perfsdk.timer("request_seconds", {"path": "/work"}, registry=REGISTRY):
            body = str(os.getpid()).encode()
        WRITER.export(REGISTRY.snapshot(include_sketches=True))
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


@contextlib.contextmanager
def gunicorn(tmp_path: Path, mp_dir: Path, preload: bool) -> Iterator[tuple[str, Any]]:
    (tmp_path / "mp_app.py").write_text(GUNICORN_APP)
    port = free_port()
    cmd = [sys.executable, "-m", "gunicorn", "--workers", "3", "--bind", f"127.0.0.1:{port}"]
    cmd += ["--chdir", str(tmp_path), "--graceful-timeout", "5"]
    if preload:
        cmd.append("--preload")
    cmd.append("mp_app:app")
    env = {**os.environ, "PERFSDK_TEST_MP_DIR": str(mp_dir)}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).resolve().parent.parent), str(tmp_path)]
    )
    log = (tmp_path / "gunicorn.log").open("wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                get(base + "/merged")
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        "gunicorn did not start:\n" + (tmp_path / "gunicorn.log").read_text()
                    ) from None
                time.sleep(0.1)
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def wait_gone(pid: int) -> None:
    deadline = time.monotonic() + 20
    while process_identity(pid) != "" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process_identity(pid) == ""


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("gunicorn") is None, reason="needs gunicorn")
@pytest.mark.parametrize("preload", [False, True], ids=["fork-per-worker", "preload"])
def test_gunicorn_workers_merge_to_the_exact_request_count(tmp_path: Path, preload: bool) -> None:
    mp_dir = tmp_path / "mp"
    mp_dir.mkdir()
    clear_directory(mp_dir)  # what a gunicorn on_starting hook would do
    n = 60
    with gunicorn(tmp_path, mp_dir, preload) as (base, proc):
        served = [int(get(base + "/work")) for _ in range(n)]
        assert proc.pid not in served
        assert pid_files(mp_dir) == sorted(f"{pid}{SUFFIX}" for pid in set(served))
        assert total_count(merged_snapshot(mp_dir), "request_seconds", path="/work") == n
        # Any worker serves the merged view of all of them.
        assert {int(get(base + "/merged")) for _ in range(6)} == {n}

        # A worker is killed; the arbiter replaces it; its requests stay counted.
        victim = served[-1]
        os.kill(victim, signal.SIGKILL)
        wait_gone(victim)
        snap = merged_snapshot(mp_dir)
        assert total_count(snap, "request_seconds", path="/work") == n
        assert f"{victim}{SUFFIX}" not in pid_files(mp_dir)
        assert (mp_dir / ARCHIVE_NAME).exists()
        more = [int(get(base + "/work")) for _ in range(n)]
        assert victim not in more
        assert int(get(base + "/merged")) == 2 * n
    # gunicorn stopped: every worker exited; the archive holds every request.
    rec = merged_snapshot(mp_dir).get("request_seconds", path="/work")
    assert rec is not None and rec.total is not None and rec.window is not None
    assert rec.total.count == 2 * n and rec.window.count == 0
    assert pid_files(mp_dir) == []
