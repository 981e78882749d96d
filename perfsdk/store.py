"""The SQLite store: perfsdk's memory (metric history now; profiles, alerts, baselines later).

One file, ``.perfsdk/perfsdk.db`` by default (config key ``db_path``), in WAL mode with
``synchronous=NORMAL``: readers never block the writer, and a committed transaction survives a
crash of the process (only a power loss may take the last few back). Every write is one
transaction, so a process killed mid-write leaves the database as of its last commit. The schema
and its migrations: :mod:`perfsdk.store_schema`; the guide: ``docs/store.md``.

::

    runs     (run_id, pid, host, started)                 one per exporting process
    series   (id, name, labels JSON, kind, help)          one per (name, labels, kind)
    rollups  (series_id, run_id, resolution, ts_start, ts_end,
              count, errors, sum, min, max, sketch BLOB)  one per series, run and interval

A rollup row covers the interval ``(ts_start, ts_end]`` of one series in one run and holds what
happened *in* that interval (not since start): for a timer, the observations' count, errors, sum,
min, max and their serialised sketch, so the percentiles of any time range are recomputed exactly
(to the sketch's ``alpha``) by merging the sketches of its rows; for a counter, its readings'
count, its increase (``sum``) and its lowest and highest reading; for a gauge, its readings' count,
sum, min and max. ``resolution`` is :data:`RAW` (0) for a row the exporter wrote and
:data:`HOURLY` (3600) for the merge of an hour's raw rows (:meth:`Store.maintain`).
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import socket
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType

from . import _accel
from .errors import ConfigError
from .naming import Labels, check_metric_name, normalize_labels
from .store_schema import (
    APPLICATION_ID,
    MergeSketches,
    StoreError,
    merge_sketch_bytes,
    migrate,
    write_transaction,
)
from .timespec import parse_duration, parse_time

__all__ = [
    "APPLICATION_ID",
    "DEFAULT_DB_PATH",
    "HOURLY",
    "RAW",
    "HistoryPoint",
    "RollupRow",
    "SeriesInfo",
    "Store",
    "StoreError",
    "default_db_path",
    "history",
    "parse_duration",
    "parse_stat",
    "parse_time",
]

#: Where the store lives unless the configuration (``db_path``) says otherwise.
DEFAULT_DB_PATH = ".perfsdk/perfsdk.db"
#: ``rollups.resolution`` of a raw row (one agent interval) and of an hourly row.
RAW = 0
HOURLY = 3600

#: (series_id, run_id, resolution, ts_start, ts_end, count, errors, sum, min, max, sketch)
RollupRow = tuple[
    int, int, int, float, float, int, int, float | None, float | None, float | None, bytes | None
]

# What queries read: (ts_start, ts_end, count, errors, sum, min, max, sketch)
_Row = tuple[float, float, int, int, float | None, float | None, float | None, bytes | None]

_INSERT_ROLLUP = (
    "INSERT INTO rollups (series_id, run_id, resolution, ts_start, ts_end, count, errors, sum, "
    "min, max, sketch) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_EXPIRE_BATCH = 5000
_IDS_PER_QUERY = 500


# ---------------------------------------------------------------------------------------------
# The store
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SeriesInfo:
    """One row of the ``series`` table."""

    id: int
    name: str
    labels: Labels
    kind: str
    help: str


@dataclass(frozen=True, slots=True)
class HistoryPoint:
    """One point of :func:`history`: ``value`` of the statistic over ``(start, end]``.

    ``count`` is the number of observations (timers) or readings (counters, gauges) merged.
    """

    start: float
    end: float
    value: float
    count: int


class Store:
    """An open perfsdk database.

    :param path: the database file; its folder is created when ``create`` is true.
    :param create: create the file when missing; when false a missing file is a StoreError.
    :param timeout: seconds to wait for another writer's lock before failing.
    :raises StoreError: the file is not a perfsdk database, or is newer than this perfsdk.

    The connection may be used from any thread, one at a time (the caller serialises).
    """

    def __init__(
        self,
        path: str | os.PathLike[str] = DEFAULT_DB_PATH,
        *,
        create: bool = True,
        timeout: float = 5.0,
    ) -> None:
        self.path = Path(path)
        if not create and not self.path.exists():
            raise StoreError(
                f"no perfsdk database at {str(self.path)!r}; the store exporter creates it while "
                "the agent runs (config key db_path, default .perfsdk/perfsdk.db)"
            )
        try:
            if create:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, timeout=timeout, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the perfsdk database {str(self.path)!r}: {exc}") from exc
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.create_aggregate(
                "perfsdk_merge_sketches",
                1,
                MergeSketches,  # type: ignore[arg-type]
            )
            self.schema_version = migrate(self._db, str(self.path))
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise StoreError(f"{str(self.path)!r} is not a usable SQLite database: {exc}") from exc
        except BaseException:
            self._db.close()
            raise

    @property
    def connection(self) -> sqlite3.Connection:
        """The underlying connection (autocommit; use :meth:`transaction` to group writes)."""
        return self._db

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: committed on success, rolled back on any exception."""
        with write_transaction(self._db) as db:
            yield db

    # -- writing -----------------------------------------------------------------------------

    def start_run(
        self, *, pid: int | None = None, host: str | None = None, started: float | None = None
    ) -> int:
        """Record a new run (one exporting process) and return its ``run_id``."""
        cur = self._db.execute(
            "INSERT INTO runs (pid, host, started) VALUES (?, ?, ?)",
            (
                os.getpid() if pid is None else pid,
                socket.gethostname() if host is None else host,
                time.time() if started is None else started,
            ),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def series_id(self, name: str, labels: Labels, kind: str, help: str = "") -> int:
        """The id of the series (name, labels, kind), created if new (inside the caller's
        transaction, if any)."""
        encoded = _encode_labels(labels)
        self._db.execute(
            "INSERT OR IGNORE INTO series (name, labels, kind, help) VALUES (?, ?, ?, ?)",
            (name, encoded, kind, help),
        )
        row = self._db.execute(
            "SELECT id FROM series WHERE name = ? AND labels = ? AND kind = ?",
            (name, encoded, kind),
        ).fetchone()
        return int(row[0])

    def insert_rollups(self, rows: Sequence[RollupRow]) -> None:
        """Insert rollup rows (one prepared statement, many parameter sets)."""
        self._db.executemany(_INSERT_ROLLUP, rows)

    # -- retention and downsampling ----------------------------------------------------------

    def maintain(
        self,
        now: float,
        *,
        raw_seconds: float = 86400.0,
        hourly_seconds: float = 30 * 86400.0,
        budget_seconds: float | None = None,
    ) -> bool:
        """Apply retention at time ``now`` (Unix); return True when nothing due is left.

        Rows whose ``ts_end`` is ``hourly_seconds`` old or older are deleted. Raw rows of every
        hour that ended ``raw_seconds`` ago or earlier are merged, per series and run, into one
        hourly row (sums of counts, errors and sums, min of mins, max of maxes, merged sketches):
        the data of a range is kept exactly, only its time resolution coarsens. A row belongs to
        the hour its ``ts_end`` falls in, ``(h, h + 3600]``.

        Work is done in small transactions (one per series and hour), oldest first; with a
        ``budget_seconds`` it stops once the budget is spent and returns False, and the next call
        continues where this one stopped.
        """
        deadline = math.inf if budget_seconds is None else time.monotonic() + budget_seconds
        expire_before = now - hourly_seconds
        for resolution in (RAW, HOURLY):
            while True:
                with self.transaction() as db:
                    deleted = db.execute(
                        "DELETE FROM rollups WHERE rowid IN (SELECT rowid FROM rollups "
                        "WHERE resolution = ? AND ts_end <= ? LIMIT ?)",
                        (resolution, expire_before, _EXPIRE_BATCH),
                    ).rowcount
                if deleted < _EXPIRE_BATCH:
                    break
                if time.monotonic() >= deadline:
                    return False
        hours_before = math.floor((now - raw_seconds) / HOURLY) * HOURLY
        while True:
            oldest = self._db.execute(
                "SELECT MIN(ts_end) FROM rollups WHERE resolution = ? AND ts_end <= ?",
                (RAW, hours_before),
            ).fetchone()[0]
            if oldest is None:
                return True
            lo = (math.ceil(oldest / HOURLY) - 1) * HOURLY
            hi = lo + HOURLY
            ids = [
                int(r[0])
                for r in self._db.execute(
                    "SELECT DISTINCT series_id FROM rollups "
                    "WHERE resolution = ? AND ts_end > ? AND ts_end <= ?",
                    (RAW, lo, hi),
                )
            ]
            for series_id in ids:
                self._downsample(series_id, lo, hi)  # at least one, so every call progresses
                if time.monotonic() >= deadline:
                    return False

    def _downsample(self, series_id: int, lo: float, hi: float) -> None:
        where = "series_id = ? AND resolution IN (?, ?) AND ts_end > ? AND ts_end <= ?"
        args = (series_id, RAW, HOURLY, lo, hi)
        with self.transaction() as db:
            # Rows inserted below get higher rowids, so "rowid <= last" deletes only the inputs
            # (the raw rows, and an hourly row merged again if the hour was downsampled before).
            last = db.execute("SELECT MAX(rowid) FROM rollups").fetchone()[0]
            db.execute(
                "INSERT INTO rollups (series_id, run_id, resolution, ts_start, ts_end, count, "
                "errors, sum, min, max, sketch) "
                "SELECT series_id, run_id, ?, MIN(ts_start), MAX(ts_end), SUM(count), "
                "SUM(errors), SUM(sum), MIN(min), MAX(max), perfsdk_merge_sketches(sketch) "
                f"FROM rollups WHERE {where} GROUP BY run_id",
                (HOURLY, *args),
            )
            db.execute(f"DELETE FROM rollups WHERE {where} AND rowid <= ?", (*args, last))

    # -- reading -----------------------------------------------------------------------------

    def series(self, name: str | None = None) -> list[SeriesInfo]:
        """Every series (of ``name``, if given), sorted by name and labels."""
        sql = "SELECT id, name, labels, kind, help FROM series"
        cur = (
            self._db.execute(sql + " WHERE name = ?", (name,))
            if name is not None
            else self._db.execute(sql)
        )
        out = [SeriesInfo(int(i), n, _decode_labels(lb), k, h) for i, n, lb, k, h in cur]
        out.sort(key=lambda s: (s.name, s.labels, s.kind))
        return out

    def history(
        self,
        name: str,
        labels: Mapping[str, object] | None = None,
        since: float | str | datetime | None = None,
        until: float | str | datetime | None = None,
        stat: str = "p99",
        step: float | str | None = None,
        *,
        now: float | None = None,
    ) -> list[HistoryPoint]:
        """See :func:`history`."""
        return self._run(_Query.make(name, labels, since, until, stat, step, now))

    def merged_sketch(
        self,
        name: str,
        labels: Mapping[str, object] | None = None,
        since: float | str | datetime | None = None,
        until: float | str | datetime | None = None,
        *,
        now: float | None = None,
    ) -> _accel.Sketch | None:
        """The merge of every matching timer row's sketch over the range (None: no data)."""
        query = _Query.make(name, labels, since, until, "count", None, now)
        ids, _ = self._matching(query)
        acc: _accel.Sketch | None = None
        for row in self._rows(ids, query, sketches=True):
            if row[7] is not None:
                acc = merge_sketch_bytes(acc, row[7])
        return acc

    def _matching(self, query: _Query) -> tuple[list[int], str]:
        known = self.series(query.name)
        if not known:
            names = [r[0] for r in self._db.execute("SELECT DISTINCT name FROM series LIMIT 21")]
            listing = ", ".join(sorted(names)[:20]) + (", ..." if len(names) > 20 else "")
            raise StoreError(
                f"no series named {query.name!r} in {str(self.path)!r}; "
                f"it holds: {listing or 'nothing yet'}"
            )
        want = set(query.labels)
        chosen = [s for s in known if want <= set(s.labels)]
        if not chosen:
            sets = sorted({_format_labels(s.labels) for s in known})
            raise StoreError(
                f"no series {query.name}{_format_labels(query.labels)} in {str(self.path)!r}; "
                f"its label sets are: {', '.join(sets[:20])}" + (", ..." if len(sets) > 20 else "")
            )
        kinds = sorted({s.kind for s in chosen})
        if len(kinds) > 1:
            raise StoreError(
                f"series {query.name!r} was recorded as {' and '.join(kinds)}; narrow it with "
                "labels so that one kind is left"
            )
        kind = kinds[0]
        accepted = _STATS[kind]
        if (query.quantile is not None and kind != "timer") or (
            query.quantile is None and query.stat not in accepted
        ):
            shown = ", ".join(accepted) + (", p50, p99, p99.9, ..." if kind == "timer" else "")
            raise ConfigError(
                f"stat={query.stat!r} does not apply to {query.name!r}, a {kind}; "
                f"use one of {shown}"
            )
        return [s.id for s in chosen], kind

    def _rows(self, ids: list[int], query: _Query, *, sketches: bool) -> list[_Row]:
        cols = "ts_start, ts_end, count, errors, sum, min, max, "
        cols += "sketch" if sketches else "NULL"
        rows: list[_Row] = []
        for i in range(0, len(ids), _IDS_PER_QUERY):
            chunk = ids[i : i + _IDS_PER_QUERY]
            sql = (
                f"SELECT {cols} FROM rollups WHERE series_id IN ({','.join('?' * len(chunk))}) "
                "AND ts_end > ? AND ts_end <= ?"
            )
            rows.extend(self._db.execute(sql, (*chunk, query.since, query.until)))
        rows.sort(key=lambda r: r[1])
        return rows

    def _run(self, query: _Query) -> list[HistoryPoint]:
        ids, kind = self._matching(query)
        q = query.quantile
        groups: dict[float | None, _Group] = {}
        for start, end, count, errors, total, lo, hi, blob in self._rows(
            ids, query, sketches=q is not None
        ):
            key = end if query.step is None else _bucket(end, query.step)
            g = groups.get(key)
            if g is None:
                g = groups[key] = _Group(start, end)
            g.add(start, end, count, errors, total, lo, hi)
            if blob is not None:
                g.sketch = merge_sketch_bytes(g.sketch, blob)
        points = []
        for key, g in groups.items():
            if query.step is not None:
                lo, hi = (-math.inf, math.inf) if key is None else (key, key + query.step)
                lo, hi = max(lo, query.since), min(hi, query.until)  # clipped to the range
                g.start = lo if lo > -math.inf else g.start  # unbounded: the data's own span
                g.end = hi if hi < math.inf else g.end
            points.append(HistoryPoint(g.start, g.end, g.value(query.stat, q, kind), g.count))
        return points


def _bucket(end: float, step: float) -> float | None:
    """The start of the bucket ``(start, start + step]`` holding ``end`` (None: step is all)."""
    return None if step == math.inf else (math.ceil(end / step) - 1) * step


_STATS: dict[str, tuple[str, ...]] = {
    "timer": ("count", "rate", "mean", "min", "max", "sum", "errors", "error_ratio"),
    "counter": ("count", "rate", "min", "max", "sum"),
    "gauge": ("count", "mean", "min", "max", "sum"),
}
_ALL_STATS = tuple(dict.fromkeys(s for stats in _STATS.values() for s in stats))


class _Group:
    """Rows merged into one history point."""

    __slots__ = ("count", "end", "errors", "max", "min", "sketch", "start", "sum")

    def __init__(self, start: float, end: float) -> None:
        self.start = start
        self.end = end
        self.count = 0
        self.errors = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.sketch: _accel.Sketch | None = None

    def add(
        self,
        start: float,
        end: float,
        count: int,
        errors: int,
        total: float | None,
        lo: float | None,
        hi: float | None,
    ) -> None:
        self.start = min(self.start, start)
        self.end = max(self.end, end)
        self.count += count
        self.errors += errors
        if total is not None:
            self.sum += total
        if lo is not None and lo < self.min:
            self.min = lo
        if hi is not None and hi > self.max:
            self.max = hi

    def value(self, stat: str, quantile: float | None, kind: str) -> float:
        if quantile is not None:
            return math.nan if self.sketch is None else float(self.sketch.quantile(quantile))
        if stat == "count":
            return float(self.count)
        if stat == "errors":
            return float(self.errors)
        if stat == "sum":
            return self.sum
        if stat == "min":
            return self.min if self.min <= self.max else math.nan
        if stat == "max":
            return self.max if self.min <= self.max else math.nan
        if stat == "mean":
            return self.sum / self.count if self.count else math.nan
        if stat == "error_ratio":
            return self.errors / self.count if self.count else math.nan
        # rate: observations per second (timers), increase per second (counters)
        seconds = self.end - self.start
        amount = self.sum if kind == "counter" else float(self.count)
        return amount / seconds if seconds > 0 else math.nan


# ---------------------------------------------------------------------------------------------
# Queries
# ---------------------------------------------------------------------------------------------

_PERCENTILE = re.compile(r"p(\d+(?:\.\d+)?)\Z")


def parse_stat(stat: object) -> float | None:
    """``"p99"`` -> 0.99, ``"p99.9"`` -> 0.999; a plain statistic -> None.

    :raises ConfigError: an unknown statistic, named.
    """
    if isinstance(stat, str):
        if stat in _ALL_STATS:
            return None
        m = _PERCENTILE.match(stat)
        if m and float(m.group(1)) <= 100.0:
            return float(m.group(1)) / 100.0
    raise ConfigError(
        f"unknown stat {stat!r}; expected one of {', '.join(_ALL_STATS)} or a percentile such "
        "as p50, p99, p99.9"
    )


@dataclass(frozen=True, slots=True)
class _Query:
    name: str
    labels: Labels
    since: float
    until: float
    stat: str
    quantile: float | None
    step: float | None

    @classmethod
    def make(
        cls,
        name: str,
        labels: Mapping[str, object] | None,
        since: float | str | datetime | None,
        until: float | str | datetime | None,
        stat: str,
        step: float | str | None,
        now: float | None,
    ) -> _Query:
        check_metric_name(name, where="series name")
        norm = normalize_labels(labels)
        quantile = parse_stat(stat)
        at = time.time() if now is None else float(now)
        lo = -math.inf if since is None else parse_time(since, now=at, name="since")
        hi = math.inf if until is None else parse_time(until, now=at, name="until")
        if lo >= hi:
            raise ConfigError(f"since={since!r} is not before until={until!r}; nothing to show")
        seconds = None if step is None else parse_duration(step)
        return cls(name, norm, lo, hi, stat, quantile, seconds)


def history(
    name: str,
    labels: Mapping[str, object] | None = None,
    since: float | str | datetime | None = None,
    until: float | str | datetime | None = None,
    stat: str = "p99",
    step: float | str | None = None,
    db_path: str | os.PathLike[str] | None = None,
    *,
    now: float | None = None,
) -> list[HistoryPoint]:
    """The history of one statistic of a series, from the store.

    :param name: the series (metric) name.
    :param labels: a filter: every series of ``name`` whose labels include these pairs is merged
        (``None``: every series of the name).
    :param since: start of the range (exclusive), a Unix time or a string such as ``"-1h"``
        (see :func:`parse_time`); ``None``: from the beginning.
    :param until: end of the range (inclusive); ``None``: up to the newest row.
    :param stat: ``count``, ``rate``, ``mean``, ``min``, ``max``, ``sum``, ``errors``,
        ``error_ratio``, or a percentile ``p50``, ``p99``, ``p99.9`` (timers only). For a counter
        ``sum`` is its increase and ``rate`` the increase per second.
    :param step: seconds (or ``"5m"``): rows are grouped into buckets ``(k*step, (k+1)*step]``
        aligned to the Unix epoch and their sketches merged, so each bucket's percentiles are
        exact to the sketch's alpha; the first and last buckets are clipped to the range.
        ``"all"`` (or ``math.inf``): one point for the whole range. ``None``: one point per
        stored interval end.
    :param db_path: the database; default the configuration's ``db_path``.
    :param now: the time relative times are taken from (default: the current time).
    :returns: points in time order; buckets without rows are left out.
    :raises ConfigError: a bad name, label, time, step or statistic, named.
    :raises StoreError: no database, or no series of that name and labels in it.

    A row is in the range when its end is: ``since < ts_end <= until``.
    """
    query = _Query.make(name, labels, since, until, stat, step, now)
    with Store(default_db_path() if db_path is None else db_path, create=False) as store:
        return store._run(query)


def default_db_path() -> str:
    """The ``db_path`` of the running agent, else of the configuration (``perfsdk.toml``,
    ``PERFSDK_DB_PATH``, ...)."""
    from perfsdk.agent import get_agent
    from perfsdk.config import load_config

    agent = get_agent()
    config = agent.config if agent is not None else load_config(plugin_defaults=_plugin_options())
    return str(config["db_path"])


@functools.cache
def _plugin_options() -> dict[str, object]:
    # Once per process: the addoption hook is historic, each call is remembered.
    from perfsdk.plugins import get_plugin_manager

    options: dict[str, object] = {}
    get_plugin_manager().hooks.addoption(options)
    return options


def _encode_labels(labels: Labels) -> str:
    return json.dumps(dict(labels), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _decode_labels(text: str) -> Labels:
    return tuple(sorted((str(k), str(v)) for k, v in json.loads(text).items()))


def _format_labels(labels: Labels) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in labels) + "}"
