"""Built-in plugin: the SQLite history store (:mod:`perfsdk.store`) as an exporter.

Configuration keys (``perfsdk_addoption`` declares them with their defaults):

``store_enabled``              ``True``; ``False`` contributes no exporter
``db_path``                    ``".perfsdk/perfsdk.db"``
``store_interval_seconds``     ``10``: one row per series per this many seconds of snapshots
``retention_raw_seconds``      ``86400``: raw rows are kept a day, then merged into hours
``retention_hourly_seconds``   ``2592000``: hourly rows are kept 30 days, then deleted
``store_maintenance_seconds``  ``300``: retention runs at most this often (from ``export``)

Disable with ``PERFSDK_DISABLED_PLUGINS=sqlite_store`` or ``store_enabled = false``.

Rows are written once per ``store_interval_seconds`` (the agent exports every ``interval``, 1 s by
default): at one row a second, a busy timer's sketches would take gigabytes a day. Snapshots in
between cost nothing for timers (the next row is computed from the since-start totals) and a few
operations per counter and gauge (their readings are aggregated: count, sum, min, max). A crash
loses at most the interval being accumulated; :meth:`StoreExporter.close` (the agent's stop)
writes it.

Why per-interval deltas, not the cumulative sketches the snapshot carries
--------------------------------------------------------------------------

A snapshot holds each timer's since-start sketch (``SeriesSnapshot.total_sketch``). The exporter
stores, per interval, the *difference* of two consecutive since-start sketches: the observations
made in that interval. With deltas a range's percentiles are the merge of its rows (exact to alpha,
whatever rows retention has already merged or deleted), an hour is the merge of its rows, old rows
can be deleted on their own, rows of several processes (runs) simply merge, and a row holds only
the buckets its interval touched (a since-start sketch holds every bucket ever used, so cumulative
rows would be several times larger). Cumulative rows would need the row just before the range to
subtract at query time: it may have been deleted by retention, it belongs to one process only, and
downsampling would have to keep it.

The subtraction is exact per bucket, because a series' bucket counts only grow within one process
run: ``delta[k] = total_now[k] - total_prev[k]``, rebuilt as a sketch with ``Sketch._add_bins``.
Count, errors and sum are subtracted too. Min and max of a delta cannot be subtracted: when the
since-start min (max) moved in the interval, the new value was recorded in it and is exact;
otherwise the delta's min (max) is the representative value of its lowest (highest) bucket,
clamped to the since-start range, so it is within alpha of the true one, as every percentile is.
A series that folded buckets (more than 4096 distinct ones) has its previous counts folded the
same way before subtracting; counts that went down (a new registry, a cleared series) restart
the series: the whole since-start sketch becomes the interval.

The previous totals ("cursors") are kept in memory per database and process, so an agent stopped
and started again in the same process continues its run instead of storing everything twice. A
forked child starts a new run from zero (the agent zeroes the registry in a forked child). Use one
registry per database per process.

Counters are stored as their increase over the interval (``sum``; a reading below the previous
one is a restart, and the reading itself is the increase) with the lowest and highest reading in
``min``/``max`` and the number of readings in ``count``; gauges as their readings' count, sum, min
and max. Timers without new observations and counters without increase write no row.
"""

from __future__ import annotations

import itertools
import logging
import math
import operator
import os
import threading
import time
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path

from perfsdk import _accel
from perfsdk._speedups_py import multiplier_for, value_of
from perfsdk.errors import ConfigError
from perfsdk.hookspecs import hookimpl
from perfsdk.naming import Labels
from perfsdk.protocols import Exporter
from perfsdk.records import SeriesSnapshot, Snapshot
from perfsdk.store import DEFAULT_DB_PATH, RAW, RollupRow, Store

__all__ = ["OPTIONS", "StoreExporter", "perfsdk_addoption", "perfsdk_exporters"]

log = logging.getLogger("perfsdk.store")

#: The keys this plugin reads, with their defaults.
OPTIONS: dict[str, object] = {
    "store_enabled": True,
    "db_path": DEFAULT_DB_PATH,
    "store_interval_seconds": 10.0,
    "retention_raw_seconds": 86400.0,
    "retention_hourly_seconds": 30 * 86400.0,
    "store_maintenance_seconds": 300.0,
}

_SeriesKey = tuple[str, Labels, str]
# (ts_start, ts_end, count, errors, sum, min, max, sketch): a rollup row without its ids
_Fields = tuple[float, float, int, int, float | None, float | None, float | None, bytes | None]


@dataclass(slots=True)
class _Totals:
    """A timer's since-start state as of the last row written (or skipped: nothing new)."""

    ts: float
    count: int = 0
    errors: int = 0
    sum: float = 0.0
    min: float = math.inf
    max: float = -math.inf
    pos: dict[int, int] = field(default_factory=dict)
    neg: dict[int, int] = field(default_factory=dict)
    zero: int = 0


@dataclass(slots=True)
class _Readings:
    """A counter's or gauge's readings since the last row written."""

    start: float
    last: float | None = None  # the latest reading (counters: to compute increases)
    count: int = 0
    sum: float = 0.0  # gauges: of the readings; counters: of the increases
    min: float = math.inf
    max: float = -math.inf

    def add(self, value: float, counter: bool) -> None:
        if value != value:  # NaN: no reading
            return
        if counter:
            last = self.last
            self.sum += value - last if last is not None and value >= last else value
        else:
            self.sum += value
        self.last = value
        self.count += 1
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value

    def fields(self, now: float, counter: bool) -> _Fields | None:
        if not self.count or (counter and not self.sum):
            return None
        return (self.start, now, self.count, 0, self.sum, self.min, self.max, None)

    def restart(self, now: float) -> None:
        self.start = now
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf


@dataclass(slots=True)
class _Run:
    """One process's run in one database: its id, the state of its series, known series ids."""

    run_id: int
    pid: int
    last_ts: float | None = None  # snapshot time of the last row written
    totals: dict[_SeriesKey, _Totals] = field(default_factory=dict)
    readings: dict[_SeriesKey, _Readings] = field(default_factory=dict)
    series_ids: dict[_SeriesKey, int] = field(default_factory=dict)

    def observe(self, snapshot: Snapshot) -> None:
        """Add the counters' and gauges' readings to the interval being accumulated."""
        start = snapshot.taken_at if self.last_ts is None else self.last_ts
        readings = self.readings
        for s in snapshot.series:
            if s.kind != "timer" and s.value is not None:
                key = (s.name, s.labels, s.kind)
                r = readings.get(key)
                if r is None:
                    r = readings[key] = _Readings(start)
                r.add(s.value, s.kind == "counter")


# Runs by database file (path, device, inode): survive the exporter, not the process.
_RUNS: dict[tuple[str, int, int], _Run] = {}
_RUNS_LOCK = threading.Lock()


def _run_for(store: Store) -> _Run:
    st = os.stat(store.path)
    key = (os.path.realpath(store.path), st.st_dev, st.st_ino)
    pid = os.getpid()
    with _RUNS_LOCK:
        run = _RUNS.get(key)
        if run is None or run.pid != pid:  # a forked child's registry starts from zero
            run = _RUNS[key] = _Run(store.start_run(pid=pid), pid)
        return run


class StoreExporter:
    """Writes snapshots to the store: every ``store_interval_seconds``, one transaction with one
    row per series that changed.

    :param config: the configuration mapping (keys above); missing keys take their defaults.
    :raises ConfigError: a key has a bad value, named with the key.

    The database is opened on the first :meth:`export` (so a failure there is retried by the
    agent's backoff). Retention runs from :meth:`export` at most every
    ``store_maintenance_seconds`` of snapshot time, for at most :attr:`maintenance_budget`
    seconds, continuing at the next export when it did not finish.
    """

    name = "sqlite_store"
    #: Seconds of work retention may do per export (it continues at the next one).
    maintenance_budget = 0.05

    def __init__(self, config: Mapping[str, object] | None = None) -> None:
        cfg: Mapping[str, object] = {} if config is None else config
        path = cfg.get("db_path", DEFAULT_DB_PATH)
        if not isinstance(path, (str, Path)) or not str(path):
            raise ConfigError(f"db_path={path!r} must be a file path, e.g. {DEFAULT_DB_PATH!r}")
        self.db_path = str(path)
        self.interval = _seconds(cfg, "store_interval_seconds", zero_ok=True)
        self.retention_raw_seconds = _seconds(cfg, "retention_raw_seconds")
        self.retention_hourly_seconds = _seconds(cfg, "retention_hourly_seconds")
        self.maintenance_seconds = _seconds(cfg, "store_maintenance_seconds", zero_ok=True)
        if self.retention_hourly_seconds < self.retention_raw_seconds:
            raise ConfigError(
                f"retention_hourly_seconds={self.retention_hourly_seconds!r} is shorter than "
                f"retention_raw_seconds={self.retention_raw_seconds!r}; hourly rows are made "
                "from raw rows once those are retention_raw_seconds old, so it must be >= it"
            )
        #: Snapshot time of the last retention pass, and how many passes ran.
        self.last_maintenance = -math.inf
        self.maintenance_runs = 0
        self._maintenance_pending = False
        self._pending: Snapshot | None = None  # observed, not yet written
        self._store: Store | None = None
        self._run: _Run | None = None
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def _open(self) -> tuple[Store, _Run]:
        if self._pid != os.getpid():
            # Forked with an open connection: SQLite forbids using it here, and closing it could
            # disturb the parent's locks, so it is left alone.
            self._store = self._run = None
            self._pending = None
            self._pid = os.getpid()
        if self._store is None or self._run is None:
            self._store = Store(self.db_path)
            self._run = _run_for(self._store)
        return self._store, self._run

    def export(self, snapshot: Snapshot) -> None:
        """Take in one snapshot; write a row per changed series when ``store_interval_seconds``
        passed since the last write (then maybe run retention)."""
        with self._lock:
            store, run = self._open()
            run.observe(snapshot)
            now = snapshot.taken_at
            last = run.last_ts
            if last is not None and 0.0 <= now - last < self.interval:
                self._pending = snapshot
                return
            self._write(store, run, snapshot)
            if (
                self._maintenance_pending
                or now - self.last_maintenance >= self.maintenance_seconds
                or now < self.last_maintenance
            ):
                self._maintain(store, now)

    def flush(self) -> None:
        """Write the interval being accumulated now, if any."""
        with self._lock:
            if self._pending is not None:
                store, run = self._open()
                self._write(store, run, self._pending)

    def _write(self, store: Store, run: _Run, snapshot: Snapshot) -> None:
        now = snapshot.taken_at
        changes: list[tuple[_SeriesKey, str, _Fields]] = []
        new_totals: list[tuple[_SeriesKey, _Totals]] = []
        for s in snapshot.series:
            key = (s.name, s.labels, s.kind)
            if s.kind == "timer":
                totals, fields = _timer_interval(s, run.totals.get(key), now)
                new_totals.append((key, totals))
            else:
                r = run.readings.get(key)
                fields = None if r is None else r.fields(now, s.kind == "counter")
            if fields is not None:
                changes.append((key, s.help, fields))
        created: dict[_SeriesKey, int] = {}
        rows: list[RollupRow] = []
        with store.transaction():
            for key, help_text, fields in changes:
                series_id = run.series_ids.get(key) or created.get(key)
                if series_id is None:
                    series_id = created[key] = store.series_id(*key, help_text)
                rows.append((series_id, run.run_id, RAW, *fields))
            store.insert_rollups(rows)
        # Committed: only now advance, so a failed write is covered by the next one.
        run.series_ids.update(created)
        run.totals.update(new_totals)
        for r in run.readings.values():
            r.restart(now)
        run.last_ts = now
        self._pending = None

    def _maintain(self, store: Store, now: float) -> None:
        self.last_maintenance = now
        self.maintenance_runs += 1
        try:
            done = store.maintain(
                now,
                raw_seconds=self.retention_raw_seconds,
                hourly_seconds=self.retention_hourly_seconds,
                budget_seconds=self.maintenance_budget,
            )
        except Exception:
            # The snapshot is stored; retention is retried at the next pass.
            log.exception("perfsdk store %s: retention failed; retrying later", store.path)
            done = True
        self._maintenance_pending = not done

    def maintain(self, now: float | None = None) -> None:
        """Run retention to completion now (at snapshot time ``now``, default the current time)."""
        with self._lock:
            store, _ = self._open()
            store.maintain(
                time.time() if now is None else now,
                raw_seconds=self.retention_raw_seconds,
                hourly_seconds=self.retention_hourly_seconds,
            )

    def close(self) -> None:
        """Write the pending interval and close the database (the run's state stays in memory,
        for an exporter started again in this process)."""
        try:
            self.flush()
        finally:
            with self._lock:
                if self._store is not None and self._pid == os.getpid():
                    self._store.close()
                self._store = self._run = None


def _seconds(cfg: Mapping[str, object], key: str, *, zero_ok: bool = False) -> float:
    raw = cfg.get(key, OPTIONS[key])
    value = math.nan
    if isinstance(raw, (int, float, str)) and not isinstance(raw, bool):
        try:
            value = float(raw)
        except ValueError:
            pass
    if not (value > 0.0 or (zero_ok and value == 0.0)) or value == math.inf:
        accepted = "zero or a positive" if zero_ok else "a positive"
        raise ConfigError(f"{key}={raw!r} must be {accepted} number of seconds")
    return value


# ---------------------------------------------------------------------------------------------
# A timer's interval
# ---------------------------------------------------------------------------------------------


def _timer_interval(
    s: SeriesSnapshot, prev: _Totals | None, now: float
) -> tuple[_Totals, _Fields | None]:
    """The timer's new totals, and its row for the interval ending ``now`` (None: no row)."""
    total = s.total
    if total is None:
        return _Totals(now), None
    if prev is not None and total.count == prev.count and total.errors == prev.errors:
        return _Totals(now, *_state(prev)), None  # nothing new; the next row starts here
    if s.total_sketch is None:  # a snapshot taken without sketches: counts only
        return _counts_only(s, prev, now)
    cur = _accel.Sketch.from_bytes(s.total_sketch)
    pos, neg, zero = cur.bins()
    totals = _Totals(now, cur.count, total.errors, cur.sum, cur.min, cur.max, pos, neg, zero)
    if prev is not None:
        dpos = _subtract(pos, prev.pos)
        dneg = _subtract(neg, prev.neg)
        dzero = zero - prev.zero
        if dpos is not None and dneg is not None and dzero >= 0 and total.errors >= prev.errors:
            count = cur.count - prev.count
            errors = total.errors - prev.errors
            if count == 0:
                return totals, (prev.ts, now, 0, errors, 0.0, None, None, None)
            mult = multiplier_for(cur.alpha)
            if cur.min < prev.min:
                lo = cur.min  # the new minimum was recorded in this interval
            elif dneg:
                lo = -value_of(max(dneg), mult)
            else:
                lo = 0.0 if dzero else value_of(min(dpos), mult)
            if cur.max > prev.max:
                hi = cur.max
            elif dpos:
                hi = value_of(max(dpos), mult)
            else:
                hi = 0.0 if dzero else -value_of(min(dneg), mult)
            lo = min(max(lo, cur.min), cur.max)
            hi = min(max(hi, lo), cur.max)
            delta = _accel.Sketch(cur.alpha)
            delta._add_bins(_dense(dpos), _dense(dneg), dzero, cur.sum - prev.sum, lo, hi)
            return totals, (prev.ts, now, count, errors, delta.sum, lo, hi, delta.to_bytes())
        log.info("perfsdk store: %s restarted (its counts went down); stored afresh", s.name)
    seconds = total.seconds
    start = now - seconds if 0.0 <= seconds < math.inf else now
    if cur.count == 0 and total.errors == 0:
        return totals, None
    lo_hi = (cur.min, cur.max) if cur.count else (None, None)
    return totals, (start, now, cur.count, total.errors, cur.sum, *lo_hi, s.total_sketch)


def _state(t: _Totals) -> tuple[int, int, float, float, float, dict[int, int], dict[int, int], int]:
    return t.count, t.errors, t.sum, t.min, t.max, t.pos, t.neg, t.zero


def _counts_only(
    s: SeriesSnapshot, prev: _Totals | None, now: float
) -> tuple[_Totals, _Fields | None]:
    total = s.total
    assert total is not None
    totals = _Totals(now, total.count, total.errors, total.sum)
    if prev is not None and total.count >= prev.count and total.errors >= prev.errors:
        count, errors = total.count - prev.count, total.errors - prev.errors
        return totals, (prev.ts, now, count, errors, total.sum - prev.sum, None, None, None)
    start = now - total.seconds if 0.0 <= total.seconds < math.inf else now
    return totals, (start, now, total.count, total.errors, total.sum, None, None, None)


def _subtract(cur: dict[int, int], prev: dict[int, int]) -> dict[int, int] | None:
    """Per-bucket ``cur - prev`` without zeros; None when a count went down (a restart).

    Both come from ``Sketch.bins()``. The work is done by C-level iteration (map, compress,
    zip): this runs for every changed timer at every write.
    """
    if not prev:
        return cur
    if not prev.keys() <= cur.keys():
        if not cur or min(prev) >= min(cur):
            return None
        lowest = min(cur)  # the series folded its lowest buckets into ``lowest``
        folded = {k: c for k, c in prev.items() if k >= lowest}
        folded[lowest] = folded.get(lowest, 0) + sum(c for k, c in prev.items() if k < lowest)
        prev = folded
        if not prev.keys() <= cur.keys():
            return None
    deltas = list(map(operator.sub, cur.values(), map(prev.get, cur, itertools.repeat(0))))
    out = dict(zip(itertools.compress(cur, deltas), filter(None, deltas), strict=True))
    if out and min(out.values()) < 0:
        return None
    return out


def _dense(bins: dict[int, int]) -> tuple[int, list[int]] | None:
    if not bins:
        return None
    lo, hi = min(bins), max(bins)
    return lo, list(map(bins.get, range(lo, hi + 1), itertools.repeat(0)))


# ---------------------------------------------------------------------------------------------
# Hooks
# ---------------------------------------------------------------------------------------------


@hookimpl
def perfsdk_addoption(options: MutableMapping[str, object]) -> None:
    """Declare the store's keys and defaults."""
    for key, default in OPTIONS.items():
        options.setdefault(key, default)


@hookimpl
def perfsdk_exporters(config: Mapping[str, object]) -> list[Exporter]:
    """Contribute the store exporter unless ``store_enabled`` is false."""
    enabled = config.get("store_enabled", True)
    if isinstance(enabled, str):
        enabled = enabled.strip().lower() not in ("", "0", "false", "no", "off")
    if not enabled:
        return []
    return [StoreExporter(config)]
