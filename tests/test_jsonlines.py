"""The JSON-lines exporter: one strict-JSON object per snapshot, errors raised, file reopened."""

from __future__ import annotations

import errno
import json
import math
import threading
from pathlib import Path
from typing import Any

import pytest

import perfsdk
from perfsdk.exporters.jsonlines import JsonLinesExporter, snapshot_line
from perfsdk.plugins import PluginManager
from perfsdk.protocols import Exporter
from tests.conftest import FakeClock


def strict_loads(line: str) -> Any:
    def reject(token: str) -> Any:
        raise AssertionError(f"non-standard JSON token {token!r}")

    return json.loads(line, parse_constant=reject)


def expected(snapshot: perfsdk.Snapshot) -> Any:
    """to_dict() with every non-finite float as None."""

    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    return clean(snapshot.to_dict())


@pytest.fixture
def snapshots(registry: perfsdk.Registry, clock: FakeClock) -> list[perfsdk.Snapshot]:
    s = registry.series("api_seconds", {"route": "/a"}, threshold=0.01)
    s.record(0.002, registry.now())
    registry.counter("jobs_total").inc(3)
    registry.gauge("nan_gauge").set(math.nan)
    registry.gauge("inf_gauge").set(math.inf)
    first = registry.snapshot(include_sketches=True)
    clock.advance(registry.window_seconds * 2)  # an empty window: NaN percentiles
    registry.series("idle_seconds", {"q": 'x"\n\\ ✓'})
    return [first, registry.snapshot(include_sketches=True)]


def test_one_strict_json_object_per_snapshot(
    tmp_path: Path, snapshots: list[perfsdk.Snapshot]
) -> None:
    path = tmp_path / "sub" / "dir" / "perf.jsonl"  # folders are created
    exp = JsonLinesExporter(path)
    assert isinstance(exp, Exporter) and exp.name == "jsonl"
    for snap in snapshots:
        exp.export(snap)
        # on disk as soon as export returns (no buffering to flush)
        assert path.read_bytes().endswith(snapshot_line(snap))
    exp.close()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2 == exp.lines
    records = [strict_loads(line) for line in lines]
    assert records == [expected(s) for s in snapshots]
    gauges = {s["name"]: s["value"] for s in records[0]["series"] if s["kind"] == "gauge"}
    assert gauges == {"nan_gauge": None, "inf_gauge": None}
    api = next(s for s in records[1]["series"] if s["name"] == "api_seconds")
    assert api["window"]["p99"] is None and api["total"]["count"] == 1
    assert api["threshold"] == 0.01
    assert "window_sketch" not in api
    assert records[1]["series"][1]["labels"] == {"q": 'x"\n\\ ✓'}


def test_appends_to_an_existing_file(tmp_path: Path, snapshots: list[perfsdk.Snapshot]) -> None:
    path = tmp_path / "perf.jsonl"
    path.write_text('{"earlier": true}\n')
    exp = JsonLinesExporter(str(path))
    exp.export(snapshots[0])
    exp.close()
    exp.close()  # idempotent
    exp.export(snapshots[1])  # reopened after close
    exp.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and strict_loads(lines[0]) == {"earlier": True}


def test_write_errors_raise_and_the_file_is_reopened(
    tmp_path: Path, snapshots: list[perfsdk.Snapshot]
) -> None:
    path = tmp_path / "perf.jsonl"
    exp = JsonLinesExporter(path)
    exp.export(snapshots[0])

    class FullDisk:
        closed = False

        def write(self, data: Any) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self) -> None:
            self.closed = True

        def fileno(self) -> int:
            raise AssertionError("not reached")

    broken = FullDisk()
    exp._file.close()
    exp._file = broken
    with pytest.raises(OSError) as info:
        exp.export(snapshots[1])
    assert info.value.errno == errno.ENOSPC
    assert broken.closed and exp._file is None
    exp.export(snapshots[1])  # a fresh handle
    exp.close()
    assert [strict_loads(x) for x in path.read_text().splitlines()] == [
        expected(s) for s in snapshots
    ]
    assert exp.lines == 2


def test_unopenable_path_raises_every_time_until_fixed(
    tmp_path: Path, snapshots: list[perfsdk.Snapshot]
) -> None:
    path = tmp_path / "perf.jsonl"
    path.mkdir()  # a folder where the file should be
    exp = JsonLinesExporter(path)
    for _ in range(2):
        with pytest.raises(IsADirectoryError):
            exp.export(snapshots[0])
    path.rmdir()
    exp.export(snapshots[0])
    exp.close()
    assert len(path.read_text().splitlines()) == 1


def test_a_rotated_file_is_reopened(tmp_path: Path, snapshots: list[perfsdk.Snapshot]) -> None:
    path = tmp_path / "perf.jsonl"
    exp = JsonLinesExporter(path)
    exp.export(snapshots[0])
    path.rename(tmp_path / "perf.jsonl.1")  # logrotate
    exp.export(snapshots[1])
    exp.close()
    assert len((tmp_path / "perf.jsonl.1").read_text().splitlines()) == 1
    assert [strict_loads(x) for x in path.read_text().splitlines()] == [expected(snapshots[1])]


def test_threads_never_interleave_lines(tmp_path: Path, registry: perfsdk.Registry) -> None:
    for i in range(200):  # lines of ~100 KB, far over any pipe or buffer size
        registry.series("t_seconds", {"i": str(i)}).record(0.001, registry.now())
    snap = registry.snapshot()
    path = tmp_path / "perf.jsonl"
    writers = [JsonLinesExporter(path) for _ in range(4)]  # separate handles, one file

    def run(exp: JsonLinesExporter) -> None:
        for _ in range(10):
            exp.export(snap)

    threads = [threading.Thread(target=run, args=(w,)) for w in writers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for w in writers:
        w.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 40
    assert all(strict_loads(line) == expected(snap) for line in lines)


def test_plugin_contributes_the_exporter_only_with_a_path(tmp_path: Path) -> None:
    manager = PluginManager(
        builtins=("perfsdk.builtin.jsonl_exporter",), load_entrypoints=False, env={}
    )
    assert manager.hooks.exporters({"jsonl_path": ""}) == []
    assert manager.hooks.exporters({}) == []
    path = tmp_path / "perf.jsonl"
    exporters = manager.hooks.exporters({"jsonl_path": str(path)})
    assert [type(e) for e in exporters] == [JsonLinesExporter]
    assert isinstance(exporters[0], JsonLinesExporter) and exporters[0].path == path
    assert manager.errors == {}
