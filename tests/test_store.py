"""The SQLite history store: round trips, deltas, retention, migrations, errors, CLI, crashes."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import re
import shlex
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

import perfsdk
import perfsdk.history_cli  # registers `perfsdk history`
from perfsdk import _accel, store, store_schema
from perfsdk.builtin import sqlite_store
from perfsdk.builtin.sqlite_store import StoreExporter
from perfsdk.cli import main
from perfsdk.errors import ConfigError
from perfsdk.plugins import PluginManager
from perfsdk.store import HOURLY, RAW, HistoryPoint, Store, StoreError, history
from tests.conftest import FakeClock

REPO = Path(__file__).resolve().parent.parent
ALPHA = 0.01
T0 = 472_222 * 3600.0  # 2023-11-14 22:00 UTC, on an hour boundary
QS = {"p50": 0.5, "p90": 0.9, "p99": 0.99, "p99.9": 0.999}


def export_at(exporter: StoreExporter, registry: perfsdk.Registry, taken_at: float) -> None:
    snapshot = registry.snapshot(include_sketches=True)
    exporter.export(dataclasses.replace(snapshot, taken_at=taken_at))


def make_exporter(db: Path, **config: object) -> StoreExporter:
    """An exporter that writes every snapshot (unless told otherwise)."""
    return StoreExporter({"db_path": str(db), "store_interval_seconds": 0, **config})


def rows(db: Path, where: str = "1", args: Sequence[object] = ()) -> list[sqlite3.Row]:
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    try:
        return con.execute(
            "SELECT r.*, s.name, s.labels, s.kind FROM rollups r JOIN series s "
            f"ON s.id = r.series_id WHERE {where} ORDER BY r.ts_end, s.labels",
            tuple(args),
        ).fetchall()
    finally:
        con.close()


def close_to(got: float, want: float, alpha: float = ALPHA) -> bool:
    return abs(got - want) <= alpha * abs(want) + 1e-300


@pytest.fixture(autouse=True)
def _fresh_runs() -> Iterator[None]:
    """Each test starts its runs afresh (runs are remembered per database file and process)."""
    sqlite_store._RUNS.clear()
    yield
    sqlite_store._RUNS.clear()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "perfsdk.db"


# ---------------------------------------------------------------------------------------------
# Round trip
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Recorded:
    """What a test recorded, per interval i (ending at T0 + 10 * i, i = 1..n)."""

    values: dict[str, list[np.ndarray]]
    errors: dict[str, list[int]]

    def between(self, route: str | None, a: int, b: int) -> np.ndarray:
        routes = [route] if route else sorted(self.values)
        parts = [self.values[r][i - 1] for r in routes for i in range(a + 1, b + 1)]
        return np.concatenate(parts) if parts else np.array([])


@pytest.fixture
def recorded(
    db: Path, registry: perfsdk.Registry, clock: FakeClock
) -> tuple[Recorded, StoreExporter]:
    """24 intervals of 10 s of ``rt_seconds`` in two label sets; some empty, some errors."""
    rng = np.random.default_rng(7)
    exporter = make_exporter(db)
    series = {r: registry.series("rt_seconds", {"route": r}) for r in ("/a", "/b")}
    rec = Recorded({r: [] for r in series}, {r: [] for r in series})
    for i in range(1, 25):
        for route, s in series.items():
            n = 0 if (route == "/a" and i % 7 == 0) else int(rng.integers(20, 300))
            sigma, mu = (1.5, -6.0) if route == "/a" else (0.5, -3.0)
            values = rng.lognormal(mu, sigma, n)
            n_errors = int(rng.integers(0, 4)) if n else 0
            for k, v in enumerate(values):
                if k < n_errors:
                    s.record_error(float(v), clock())
                else:
                    s.record(float(v), clock())
            rec.values[route].append(values)
            rec.errors[route].append(n_errors)
        clock.advance(10)
        export_at(exporter, registry, T0 + 10 * i)
    return rec, exporter


@pytest.mark.parametrize(("a", "b"), [(0, 24), (0, 1), (3, 11), (6, 7), (13, 24)])
@pytest.mark.parametrize("route", ["/a", "/b", None])
def test_range_counts_are_exact_and_percentiles_within_alpha(
    recorded: tuple[Recorded, StoreExporter], db: Path, a: int, b: int, route: str | None
) -> None:
    rec, _ = recorded
    labels = {"route": route} if route else None
    truth = rec.between(route, a, b)
    since, until = T0 + 10 * a, T0 + 10 * b
    step = 3600  # one bucket (T0, T0 + 3600], clipped to the range

    def point(stat: str) -> HistoryPoint:
        (p,) = history("rt_seconds", labels, since, until, stat, step, db_path=db)
        return p

    if len(truth) == 0:  # /a recorded nothing in interval 7: no row, no point
        assert history("rt_seconds", labels, since, until, "count", step, db_path=db) == []
        return

    assert point("count").value == len(truth) and point("count").count == len(truth)
    routes = [route] if route else ["/a", "/b"]
    assert point("errors").value == sum(
        rec.errors[r][i - 1] for r in routes for i in range(a + 1, b + 1)
    )
    assert point("sum").value == pytest.approx(truth.sum(), rel=1e-9)
    assert point("mean").value == pytest.approx(truth.mean(), rel=1e-9)
    assert point("rate").value == pytest.approx(len(truth) / (until - since))
    assert close_to(point("min").value, truth.min())
    assert close_to(point("max").value, truth.max())
    for stat, q in QS.items():
        want = float(np.quantile(truth, q, method="lower"))
        assert close_to(point(stat).value, want), (stat, point(stat).value, want)

    # The merged sketch is, bucket for bucket, the sketch of exactly the recorded values.
    reference = _accel.Sketch(ALPHA)
    reference.add_many(truth.tolist())
    with Store(db) as st:
        merged = st.merged_sketch("rt_seconds", labels, since, until)
    assert merged is not None
    assert merged.count == reference.count and merged.bins() == reference.bins()


def test_one_point_per_interval_and_step_buckets(
    recorded: tuple[Recorded, StoreExporter], db: Path
) -> None:
    rec, _ = recorded
    points = history("rt_seconds", {"route": "/b"}, stat="count", db_path=db)
    assert [(p.start, p.end) for p in points] == [
        (T0 + 10 * i, T0 + 10 * (i + 1)) for i in range(24)
    ]
    assert [p.count for p in points] == [len(v) for v in rec.values["/b"]]

    # Buckets (30k, 30k + 30] by row end; the first and last are clipped to the range.
    since, until = T0 + 25, T0 + 200
    points = history("rt_seconds", None, since, until, "p99", 30, db_path=db)
    ends = [T0 + 10 * i for i in range(3, 21)]
    want: dict[float, list[float]] = {}
    for end in ends:
        bucket = math.ceil(end / 30) * 30.0
        i = round((end - T0) / 10)
        want.setdefault(bucket, []).extend(rec.between(None, i - 1, i).tolist())
    assert [p.end for p in points] == [min(b, until) for b in want]
    assert points[0].start == since
    for p, values in zip(points, want.values(), strict=True):
        assert p.count == len(values)
        assert close_to(p.value, float(np.quantile(values, 0.99, method="lower")))


def test_step_all_is_one_point_for_the_whole_range(
    recorded: tuple[Recorded, StoreExporter], db: Path
) -> None:
    rec, _ = recorded
    (bounded,) = history("rt_seconds", None, T0 + 35, T0 + 125, "count", "all", db_path=db)
    assert (bounded.start, bounded.end, bounded.count) == (
        T0 + 35,
        T0 + 125,
        len(rec.between(None, 3, 12)),  # rows ending at T0 + 40 ... T0 + 120
    )
    (everything,) = history("rt_seconds", stat="rate", step=math.inf, db_path=db)
    assert (everything.start, everything.end) == (T0, T0 + 240)  # the data's own span
    assert everything.value == everything.count / 240


def test_relative_times(recorded: tuple[Recorded, StoreExporter], db: Path) -> None:
    rec, _ = recorded
    now = T0 + 240
    got = history(
        "rt_seconds", since="-1m", until="now", stat="count", step=3600, db_path=db, now=now
    )
    assert [p.count for p in got] == [len(rec.between(None, 18, 24))]
    assert history("rt_seconds", since="now-60s", stat="count", db_path=db, now=now) == history(
        "rt_seconds", since=now - 60, stat="count", db_path=db
    )


def test_mixed_signs_and_zero_keep_min_and_max_within_alpha(
    db: Path, registry: perfsdk.Registry, clock: FakeClock
) -> None:
    exporter = make_exporter(db)
    s = registry.series("mixed")
    intervals = [[-0.5, 0.0, 0.3], [-2.0, 0.0], [0.0], [1.5, -0.01, -0.02], [0.2, 0.25]]
    for i, values in enumerate(intervals, 1):
        for v in values:
            s.record(v, clock())
        clock.advance(1)
        export_at(exporter, registry, T0 + i)
    got = rows(db)
    assert [r["count"] for r in got] == [len(v) for v in intervals]
    for r, values in zip(got, intervals, strict=True):
        assert close_to(r["min"], min(values)) and close_to(r["max"], max(values))
        assert _accel.Sketch.from_bytes(r["sketch"]).count == len(values)
    assert got[1]["min"] == -2.0 and got[3]["max"] == 1.5  # new extremes are exact
    everything = [v for values in intervals for v in values]
    for stat, q in QS.items():
        (p,) = history("mixed", stat=stat, step=100, db_path=db)
        assert close_to(p.value, float(np.quantile(everything, q, method="lower")))


def test_folded_buckets_subtract_cleanly(
    db: Path, registry: perfsdk.Registry, clock: FakeClock
) -> None:
    """A series caps each store at 4096 buckets and folds the lowest: deltas stay exact."""
    exporter = make_exporter(db)
    s = registry.series("wide_seconds")
    batches = [[1e-35, 1e-34, 1.0], [1e5, 2.0], [3.0]]  # 1e5 makes the range exceed 4096 buckets
    for i, values in enumerate(batches, 1):
        for v in values:
            s.record(v, clock())
        clock.advance(1)
        export_at(exporter, registry, T0 + i)
    assert [r["count"] for r in rows(db)] == [3, 2, 1]
    (p,) = history("wide_seconds", stat="count", step=10, db_path=db)
    assert p.value == 6


def test_counters_store_increases_and_gauges_readings(
    db: Path, registry: perfsdk.Registry, clock: FakeClock
) -> None:
    exporter = make_exporter(db)
    jobs = registry.counter("jobs_total")
    depth = registry.gauge("queue_depth")
    for i, (inc, level) in enumerate([(5, 3.0), (0, 4.0), (2, 1.0), (0, 1.0)], 1):
        if inc:
            jobs.inc(inc)
        depth.set(level)
        export_at(exporter, registry, T0 + 10 * i)
    assert [
        (r["ts_start"], r["ts_end"], r["sum"], r["max"]) for r in rows(db, "kind='counter'")
    ] == [
        (T0 + 10, T0 + 10, 5.0, 5.0),
        (T0 + 20, T0 + 30, 2.0, 7.0),  # no row while nothing was counted
    ]
    assert [r["sum"] for r in rows(db, "kind='gauge'")] == [3.0, 4.0, 1.0, 1.0]
    assert history("jobs_total", stat="sum", step=3600, db_path=db)[0].value == 7
    assert history("jobs_total", stat="rate", since=T0 + 10, db_path=db)[0].value == 0.2
    (mean,) = history("queue_depth", stat="mean", step=3600, db_path=db)
    assert (mean.value, mean.count) == (2.25, 4)
    assert history("queue_depth", stat="max", step=3600, db_path=db)[0].value == 4.0


def test_rows_are_written_every_store_interval_and_on_close(
    db: Path, registry: perfsdk.Registry, clock: FakeClock
) -> None:
    exporter = make_exporter(db, store_interval_seconds=10)
    timer = registry.series("tick_seconds")
    level = registry.gauge("level")
    jobs = registry.counter("ticks_total")
    for i in range(1, 26):  # the agent exports every second
        timer.record(0.001 * i, clock())
        level.set(i)
        jobs.inc()
        clock.advance(1)
        export_at(exporter, registry, T0 + i)
    assert [r["ts_end"] for r in rows(db, "kind = 'timer'")] == [T0 + 1, T0 + 11, T0 + 21]
    exporter.close()  # the agent's stop: the pending interval is written
    timers = rows(db, "kind = 'timer'")
    assert [(r["ts_start"], r["ts_end"], r["count"]) for r in timers] == [
        (T0, T0 + 1, 1),
        (T0 + 1, T0 + 11, 10),
        (T0 + 11, T0 + 21, 10),
        (T0 + 21, T0 + 25, 4),
    ]
    gauges = [(r["count"], r["sum"], r["min"], r["max"]) for r in rows(db, "kind = 'gauge'")]
    assert gauges == [
        (1, 1.0, 1.0, 1.0),
        (10, 65.0, 2.0, 11.0),
        (10, 165.0, 12.0, 21.0),
        (4, 94.0, 22.0, 25.0),
    ]
    assert [r["sum"] for r in rows(db, "kind = 'counter'")] == [1.0, 10.0, 10.0, 4.0]
    (mean,) = history("level", stat="mean", step=3600, db_path=db)
    assert mean.value == 13.0 and mean.count == 25


def test_idle_timers_write_no_rows_and_the_next_row_starts_at_the_last_export(
    db: Path, registry: perfsdk.Registry, clock: FakeClock
) -> None:
    exporter = make_exporter(db)
    s = registry.series("idle_seconds")
    s.record(0.1, clock())
    clock.advance(5)
    for i in (1, 2, 3):
        export_at(exporter, registry, T0 + 10 * i)
    s.record(0.2, clock())
    export_at(exporter, registry, T0 + 40)
    got = [(r["ts_start"], r["ts_end"], r["count"]) for r in rows(db)]
    assert got == [(T0 + 5, T0 + 10, 1), (T0 + 30, T0 + 40, 1)]


def test_a_restarted_exporter_continues_its_run(
    db: Path, registry: perfsdk.Registry, clock: FakeClock
) -> None:
    s = registry.series("again_seconds")
    first = make_exporter(db)
    s.record(0.1, clock())
    export_at(first, registry, T0 + 10)
    first.close()
    second = make_exporter(db)
    s.record(0.2, clock())
    export_at(second, registry, T0 + 20)
    assert [r["count"] for r in rows(db)] == [1, 1]
    assert len({r["run_id"] for r in rows(db)}) == 1


def test_counts_that_go_down_restart_the_series(
    db: Path, registry: perfsdk.Registry, clock: FakeClock
) -> None:
    exporter = make_exporter(db)
    for v in (0.1, 0.2, 0.3):
        registry.series("reset_seconds").record(v, clock())
    export_at(exporter, registry, T0 + 10)
    other = perfsdk.Registry(clock=clock, ticks_per_second=1e9)  # e.g. a replaced registry
    other.series("reset_seconds").record(5.0, clock())
    export_at(exporter, other, T0 + 20)
    other.series("reset_seconds").record(6.0, clock())
    export_at(exporter, other, T0 + 30)
    assert [r["count"] for r in rows(db)] == [3, 1, 1]
    (p,) = history("reset_seconds", stat="max", step=3600, db_path=db)
    assert p.value == 6.0


def test_snapshot_without_sketches_stores_counts(
    db: Path, registry: perfsdk.Registry, clock: FakeClock
) -> None:
    exporter = make_exporter(db)
    registry.series("plain_seconds").record(0.5, clock())
    exporter.export(dataclasses.replace(registry.snapshot(), taken_at=T0 + 1))
    registry.series("plain_seconds").record(0.5, clock())
    exporter.export(dataclasses.replace(registry.snapshot(), taken_at=T0 + 2))
    assert [(r["count"], r["sketch"]) for r in rows(db)] == [(1, None), (1, None)]
    assert math.isnan(history("plain_seconds", stat="p99", step=60, db_path=db)[0].value)


# ---------------------------------------------------------------------------------------------
# Retention and downsampling
# ---------------------------------------------------------------------------------------------


def test_raw_rows_become_hourly_rows_and_old_rows_expire(
    db: Path, registry: perfsdk.Registry, clock: FakeClock
) -> None:
    day = 86400.0
    exporter = StoreExporter(
        {
            "db_path": str(db),
            "retention_raw_seconds": day,
            "retention_hourly_seconds": 2 * day,
            "store_maintenance_seconds": 3600,
        }
    )
    rng = np.random.default_rng(3)
    timer = registry.series("ret_seconds")
    jobs = registry.counter("ret_jobs_total")
    values: dict[float, np.ndarray] = {}
    step = 600.0
    n = int(3 * day / step)
    for i in range(1, n + 1):
        batch = rng.lognormal(-5, 1, int(rng.integers(1, 30)))
        for v in batch:
            timer.record(float(v), clock())
        jobs.inc(len(batch))
        clock.advance(step)
        end = T0 + step * i
        values[end] = batch
        export_at(exporter, registry, end)
    now = T0 + step * n
    assert exporter.maintenance_runs == n // 6  # at most once per 3600 s of snapshot time
    exporter.maintain(now)

    timer_rows = rows(db, "s.name = 'ret_seconds'")
    raw = [r for r in timer_rows if r["resolution"] == RAW]
    hourly = [r for r in timer_rows if r["resolution"] == HOURLY]
    assert min(r["ts_end"] for r in timer_rows) > now - 2 * day  # expired
    assert min(r["ts_end"] for r in raw) > now - day - 3600  # raw: about a day
    assert max(r["ts_end"] for r in hourly) <= now - day  # hourly: before that
    assert {math.ceil(r["ts_end"] / 3600) for r in hourly} == {
        math.ceil(e / 3600) for e in values if now - 2 * day < e <= now - day
    }
    for r in hourly:  # one row per hour, covering its six intervals
        assert r["count"] == sum(len(values[e]) for e in values if r["ts_start"] < e <= r["ts_end"])
        assert _accel.Sketch.from_bytes(r["sketch"]).count == r["count"]

    kept = np.concatenate([v for e, v in values.items() if e > now - 2 * day])
    (total,) = history("ret_seconds", stat="count", step=1e9, db_path=db)
    (jobs_sum,) = history("ret_jobs_total", stat="sum", step=1e9, db_path=db)
    assert total.value == len(kept) and jobs_sum.value == len(kept)

    # Percentiles over a range of hourly rows are still those of exactly its values.
    since, until = now - 2 * day + 3600, now - day - 7200
    in_range = np.concatenate([v for e, v in values.items() if since < e <= until])
    for stat, q in QS.items():
        (p,) = history("ret_seconds", None, since, until, stat, 1e9, db_path=db)
        assert p.count == len(in_range)
        assert close_to(p.value, float(np.quantile(in_range, q, method="lower")))


def test_retention_with_no_budget_still_progresses_one_step_per_export(
    db: Path, registry: perfsdk.Registry, clock: FakeClock
) -> None:
    exporter = StoreExporter(
        {"db_path": str(db), "retention_raw_seconds": 3600, "store_maintenance_seconds": 0}
    )
    exporter.maintenance_budget = 0.0
    names = [f"budget_{k}_seconds" for k in range(3)]
    for i in range(1, 25):
        for name in names:
            registry.series(name).record(0.01 * i, clock())
        export_at(exporter, registry, T0 + 600 * i)
    # Each export merged one series-hour; the backlog is worked off, not dropped.
    hourly = rows(db, "resolution = ?", [HOURLY])
    assert hourly and sum(r["count"] for r in rows(db)) == 3 * 24
    for _ in range(30):
        export_at(exporter, registry, T0 + 600 * 24)
    left = rows(db, "resolution = ? AND ts_end <= ?", [RAW, T0 + 600 * 24 - 3600 - 3600])
    assert left == []


def test_downsampling_an_hour_again_merges_into_its_hourly_row(db: Path) -> None:
    with Store(db) as st:
        run = st.start_run()
        sid = st.series_id("again_seconds", (), "timer")
        sketch = _accel.Sketch(ALPHA)
        sketch.add(0.5)
        row = (sid, run, RAW, T0 + 10, T0 + 20, 1, 0, 0.5, 0.5, 0.5, sketch.to_bytes())
        with st.transaction():
            st.insert_rollups([row])
        assert st.maintain(T0 + 3 * 86400, raw_seconds=3600, hourly_seconds=10 * 86400)
        late = (sid, run, RAW, T0 + 20, T0 + 30, 1, 1, 0.5, 0.5, 0.5, sketch.to_bytes())
        with st.transaction():
            st.insert_rollups([late])
        st.maintain(T0 + 3 * 86400, raw_seconds=3600, hourly_seconds=10 * 86400)
    (merged,) = rows(db)
    assert (merged["resolution"], merged["count"], merged["errors"]) == (HOURLY, 2, 1)
    assert (merged["ts_start"], merged["ts_end"]) == (T0 + 10, T0 + 30)
    assert _accel.Sketch.from_bytes(merged["sketch"]).count == 2


# ---------------------------------------------------------------------------------------------
# Schema and migrations
# ---------------------------------------------------------------------------------------------


def test_a_new_database_is_at_the_newest_version_in_wal_mode(db: Path) -> None:
    with Store(db) as st:
        con = st.connection
        assert st.schema_version == len(store_schema.MIGRATIONS)
        assert con.execute("PRAGMA user_version").fetchone()[0] == len(store_schema.MIGRATIONS)
        assert con.execute("PRAGMA application_id").fetchone()[0] == store.APPLICATION_ID
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert con.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"runs", "series", "rollups"} <= tables


def test_an_old_database_is_upgraded_and_keeps_its_data(
    db: Path, registry: perfsdk.Registry, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry.series("old_seconds").record(0.25, clock())
    export_at(make_exporter(db), registry, T0 + 10)
    sqlite_store._RUNS.clear()

    def v2_profiles(con: sqlite3.Connection) -> None:
        """Profiles."""
        con.execute("CREATE TABLE profiles (id INTEGER PRIMARY KEY, series_id INTEGER, data BLOB)")

    monkeypatch.setattr(store_schema, "MIGRATIONS", [*store_schema.MIGRATIONS, v2_profiles])
    with Store(db) as st:
        assert st.schema_version == 2
        st.connection.execute("INSERT INTO profiles (series_id, data) VALUES (1, x'00')")
        assert st.history("old_seconds", stat="max", step=60)[0].value == 0.25
    with Store(db) as st:  # already upgraded: nothing to do
        assert st.connection.execute("PRAGMA user_version").fetchone()[0] == 2


def test_a_failing_migration_changes_nothing(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Store(db).close()

    def v2_broken(con: sqlite3.Connection) -> None:
        con.execute("CREATE TABLE half_done (x)")
        raise RuntimeError("migration bug")

    monkeypatch.setattr(store_schema, "MIGRATIONS", [*store_schema.MIGRATIONS, v2_broken])
    with pytest.raises(RuntimeError, match="migration bug"):
        Store(db)
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA user_version").fetchone()[0] == 1
    assert (
        con.execute("SELECT count(*) FROM sqlite_master WHERE name='half_done'").fetchone()[0] == 0
    )
    con.close()


def test_a_database_from_a_newer_perfsdk_is_refused(db: Path) -> None:
    Store(db).close()
    con = sqlite3.connect(db)
    con.execute("PRAGMA user_version = 99")
    con.close()
    with pytest.raises(StoreError, match=r"schema version 99.*up to 1"):
        Store(db)


def test_another_applications_database_is_refused(db: Path, tmp_path: Path) -> None:
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE customers (id)")
    con.close()
    with pytest.raises(StoreError, match="another application"):
        Store(db)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match=r"junk\.db"):
        Store(junk)


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def small_db(db: Path, registry: perfsdk.Registry, clock: FakeClock) -> Path:
    exporter = make_exporter(db)
    registry.series("api_seconds", {"route": "/a"}).record(0.1, clock())
    registry.series("api_seconds", {"route": "/b"}).record(0.2, clock())
    registry.gauge("depth").set(3)
    export_at(exporter, registry, T0 + 10)
    return db


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"stat": "p99x"}, ConfigError, "unknown stat 'p99x'"),
        ({"stat": "p101"}, ConfigError, "unknown stat 'p101'"),
        ({"stat": "median"}, ConfigError, "unknown stat 'median'.*p99.9"),
        ({"labels": {"bad-name": "x"}}, ConfigError, "label name 'bad-name' is invalid"),
        ({"labels": {"route": "/c"}}, StoreError, r'api_seconds\{route="/c"\}.*route="/a"'),
        ({"since": "yesterday"}, ConfigError, "since='yesterday' is not a time"),
        ({"until": "-1x"}, ConfigError, "until='-1x' is not a time"),
        ({"since": T0 + 10, "until": T0}, ConfigError, "is not before until"),
        ({"step": 0}, ConfigError, "step=0 is not a positive duration"),
        ({"step": "5 parsecs"}, ConfigError, "step='5 parsecs'"),
    ],
)
def test_bad_queries_name_the_value(
    small_db: Path, kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        history("api_seconds", db_path=small_db, **kwargs)  # type: ignore[arg-type]


def test_unknown_series_stat_kind_and_database(small_db: Path, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"no series named 'nope'.*api_seconds, depth"):
        history("nope", db_path=small_db)
    with pytest.raises(ConfigError, match="stat='p99' does not apply to 'depth', a gauge"):
        history("depth", stat="p99", db_path=small_db)
    with pytest.raises(ConfigError, match="series name 'bad name' is invalid"):
        history("bad name", db_path=small_db)
    with pytest.raises(StoreError, match="no perfsdk database at"):
        history("api_seconds", db_path=tmp_path / "missing.db")
    assert not (tmp_path / "missing.db").exists()


def test_sketches_of_different_accuracy_are_not_merged(db: Path) -> None:
    with Store(db) as st:
        run = st.start_run()
        sid = st.series_id("alpha_seconds", (), "timer")
        fine, coarse = _accel.Sketch(0.01), _accel.Sketch(0.05)
        fine.add(0.1)
        coarse.add(0.2)
        with st.transaction():
            st.insert_rollups(
                [
                    (sid, run, RAW, T0, T0 + 10, 1, 0, 0.1, 0.1, 0.1, fine.to_bytes()),
                    (sid, run, RAW, T0 + 10, T0 + 20, 1, 0, 0.2, 0.2, 0.2, coarse.to_bytes()),
                ]
            )
        assert [p.value for p in st.history("alpha_seconds", stat="p50")] == [0.1, 0.2]
        with pytest.raises(StoreError, match=r"alpha=0\.05 and alpha=0\.01 cannot be merged"):
            st.history("alpha_seconds", stat="p50", step="all")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("-1h", -3600),
        ("1h", -3600),
        ("now-30m", -1800),
        ("+2d", 172800),
        ("-90s", -90),
        ("-1.5w", -907200),
        ("now", 0),
        ("-250ms", -0.25),
    ],
)
def test_relative_time_forms(text: str, seconds: float) -> None:
    assert store.parse_time(text, now=T0) == T0 + seconds


def test_absolute_time_forms() -> None:
    assert store.parse_time("1700000000", now=0) == 1700000000.0
    assert store.parse_time(12.5, now=0) == 12.5
    assert store.parse_time("2024-05-01T12:00:00+00:00", now=0) == 1714564800.0


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"retention_raw_seconds": -1}, "retention_raw_seconds=-1 must be a positive"),
        ({"retention_raw_seconds": "soon"}, "retention_raw_seconds='soon'"),
        ({"store_maintenance_seconds": -5}, "store_maintenance_seconds=-5 must be zero or"),
        ({"retention_hourly_seconds": 60}, "retention_hourly_seconds=60.0 is shorter than"),
        ({"db_path": ""}, "db_path='' must be a file path"),
    ],
)
def test_bad_exporter_configuration_names_the_key(config: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        StoreExporter(config)


# ---------------------------------------------------------------------------------------------
# Plugin and CLI
# ---------------------------------------------------------------------------------------------


def test_the_builtin_plugin_contributes_the_exporter(db: Path) -> None:
    manager = PluginManager(
        builtins=("perfsdk.builtin.sqlite_store",), load_entrypoints=False, env={}
    )
    manager.check_pending()
    options: dict[str, object] = {}
    manager.hooks.addoption(options)
    assert options == sqlite_store.OPTIONS
    (exporter,) = manager.hooks.exporters({**options, "db_path": str(db)})
    assert isinstance(exporter, StoreExporter) and exporter.db_path == str(db)
    assert manager.hooks.exporters({**options, "store_enabled": False}) == []
    assert manager.hooks.exporters({**options, "store_enabled": "off"}) == []


def test_cli_prints_a_table_and_json(
    recorded: tuple[Recorded, StoreExporter], db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rec, _ = recorded
    args = ["history", "rt_seconds", "--db", str(db), "--since", str(T0), "--until", str(T0 + 60)]
    assert main([*args, "--label", "route=/b", "--stat", "count"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["START", "END", "COUNT", "COUNT"]
    assert [int(line.split()[-1]) for line in lines[1:]] == [len(v) for v in rec.values["/b"][:6]]

    assert main([*args, "--stat", "p99", "--step", "1m", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    (point,) = document["points"]
    truth = rec.between(None, 0, 6)
    assert point["count"] == len(truth) and (point["start"], point["end"]) == (T0, T0 + 60)
    assert close_to(point["value"], float(np.quantile(truth, 0.99, method="lower")))

    assert main([*args, "--stat", "p99x"]) == 1
    assert "unknown stat 'p99x'" in capsys.readouterr().err
    assert main([*args, "--label", "route"]) == 2
    assert "NAME=VALUE" in capsys.readouterr().err
    assert main(["history", "rt_seconds", "--db", str(db), "--since", str(T0 + 9999)]) == 0
    assert capsys.readouterr().out.startswith("no data for rt_seconds")


# ---------------------------------------------------------------------------------------------
# Crash safety
# ---------------------------------------------------------------------------------------------

PER = 50  # observations per series per interval
SHARDS = 12
WRITER = textwrap.dedent(
    f"""
    import dataclasses, sys
    import perfsdk
    from perfsdk.builtin.sqlite_store import StoreExporter

    db, base = sys.argv[1], float(sys.argv[2])
    registry = perfsdk.Registry()
    exporter = StoreExporter({{
        "db_path": db,
        "retention_raw_seconds": 3600,        # downsampling runs all the time
        "retention_hourly_seconds": 1e9,
        "store_maintenance_seconds": 0,
    }})
    shards = [registry.series("crash_seconds", {{"shard": str(k)}}) for k in range({SHARDS})]
    jobs = registry.counter("crash_jobs_total")
    i = 0
    while True:
        for s in shards:
            for j in range({PER}):
                s.record(0.001 * (j + 1), registry.now())
        jobs.inc({PER})
        snapshot = registry.snapshot(include_sketches=True)
        exporter.export(dataclasses.replace(snapshot, taken_at=base + 600.0 * (i + 1)))
        print(i, flush=True)
        i += 1
    """
)


def test_killed_writers_leave_a_consistent_database(tmp_path: Path) -> None:
    db = tmp_path / "crash.db"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    rng = random.Random(12345)
    printed: dict[int, int] = {}
    for k in range(5):
        with subprocess.Popen(
            [sys.executable, str(script), str(db), str(T0 + k * 1e7)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        ) as proc:
            assert proc.stdout is not None and proc.stderr is not None
            target = rng.randint(3, 40)
            for _ in range(target):
                assert proc.stdout.readline(), proc.stderr.read()
            time.sleep(rng.uniform(0.0, 0.01))  # anywhere in the next interval or two
            os.kill(proc.pid, signal.SIGKILL)
            out = proc.stdout.read()  # not communicate(): it would skip what readline buffered
            assert proc.wait(timeout=30) == -signal.SIGKILL
        printed[proc.pid] = target + len(out.splitlines())

    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    con.close()
    with Store(db) as st:
        runs = dict(st.connection.execute("SELECT pid, run_id FROM runs").fetchall())
    assert set(runs) == set(printed)
    intervals_stored = 0
    for pid, n in printed.items():
        committed = set()
        for group in _by_series(rows(db, "r.run_id = ?", [runs[pid]])).values():
            intervals = 0
            for prev, row in zip([None, *group], group, strict=False):
                if prev is not None:
                    assert row["ts_start"] == prev["ts_end"], "rows must be contiguous"
                if row["kind"] == "timer":
                    assert row["count"] % PER == 0
                    assert _accel.Sketch.from_bytes(row["sketch"]).count == row["count"]
                    intervals += row["count"] // PER
                else:
                    intervals += round(row["sum"]) // PER
            committed.add(intervals)
        # Every series holds the same number of intervals (one transaction per snapshot), and
        # at most the interval being written when the writer was killed is missing.
        (m,) = committed
        assert n <= m <= n + 1, (n, m)
        intervals_stored += m
    (total,) = history("crash_seconds", stat="count", step=1e9, db_path=db)
    assert total.count == PER * SHARDS * intervals_stored


def _by_series(got: list[sqlite3.Row]) -> dict[tuple[str, str], list[sqlite3.Row]]:
    out: dict[tuple[str, str], list[sqlite3.Row]] = {}
    for r in got:
        out.setdefault((r["name"], r["labels"]), []).append(r)
    return out


# ---------------------------------------------------------------------------------------------
# The guide and the agent
# ---------------------------------------------------------------------------------------------

GUIDE = (REPO / "docs" / "store.md").read_text(encoding="utf-8")


def test_the_guide_examples_run_and_its_cli_output_is_real(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"^```python\n(.*?)^```$", GUIDE, flags=re.S | re.M)
    assert len(blocks) >= 2
    for block in blocks:  # in order, in one folder: the later ones read what the first wrote
        exec(compile(block, "docs/store.md", "exec"), {})
    capsys.readouterr()

    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        (console,) = re.findall(r"^```console\n(.*?)^```$", GUIDE, flags=re.S | re.M)
        sessions = re.split(r"^\$ ", console.replace("\\\n", ""), flags=re.M)[1:]
        for session in sessions:
            command, _, expected = session.partition("\n")
            args = shlex.split(command)
            assert args[:2] == ["TZ=UTC", "perfsdk"] or args[0] == "perfsdk", command
            assert main(args[args.index("perfsdk") + 1 :]) == 0, command
            assert capsys.readouterr().out == expected, command
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_the_agent_writes_the_store(tmp_path: Path) -> None:
    agent_module = pytest.importorskip("perfsdk.agent")
    from perfsdk.config import load_config

    manager = PluginManager(
        builtins=("perfsdk.builtin.sqlite_store",), load_entrypoints=False, env={}
    )
    options: dict[str, object] = {}
    manager.hooks.addoption(options)
    db = tmp_path / "agent.db"
    config = load_config(
        {"db_path": str(db), "http_enabled": False, "store_interval_seconds": 0},
        env={},
        cwd=tmp_path,
        plugin_defaults=options,
    )
    registry = perfsdk.Registry()
    agent = agent_module.Agent(config, registry, manager)
    agent.start()
    try:
        series = registry.series("agent_seconds")
        for i in range(50):
            series.record(0.001 * (i + 1), registry.now())
            if i % 10 == 9:
                agent.tick()
    finally:
        agent.stop()  # a last tick, then close
    (point,) = history("agent_seconds", stat="max", step="all", db_path=db)
    assert point.count == 50 and close_to(point.value, 0.05)
