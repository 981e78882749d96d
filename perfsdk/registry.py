"""The registry: every series, keyed by name and labels, with a cardinality cap.

A default global registry exists for convenience (``get_registry()``); tests and libraries build
their own (``Registry(clock=...)``), as prometheus_client's ``registry=`` argument allows.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from . import _accel
from .errors import ConfigError
from .naming import Labels, check_metric_name, normalize_labels
from .records import QUANTILES, SeriesSnapshot, Snapshot, Stats, make_series_snapshot, make_stats

__all__ = ["OVERFLOW_LABELS", "Registry", "get_registry", "set_registry"]

log = logging.getLogger("perfsdk")

#: Labels of the one series per name that absorbs label sets beyond the cardinality cap.
OVERFLOW_LABELS: Labels = (("perfsdk_overflow", "true"),)

_QS = tuple(q for _, q in QUANTILES)


@dataclass(slots=True)
class _Entry:
    name: str
    labels: Labels
    kind: str
    help: str
    obj: Any
    # A timer's record in the last snapshot, as (version, window epoch, with sketches, record):
    # while the series' version and window epoch stay the same, its numbers are reused.
    last: tuple[int, int, bool, SeriesSnapshot] | None = None


class Registry:
    """Series by (name, labels).

    :param alpha: relative accuracy of every timer's sketch (default 1%).
    :param window_seconds: span of the rolling window (default 60 s), made of ``slices`` slices.
    :param max_series_per_name: cardinality cap; further label sets of a name share one overflow
        series labelled ``perfsdk_overflow="true"``, so memory stays bounded.
    :param clock: a callable returning integer ticks (tests inject one); default the native clock.
    :param ticks_per_second: ticks of ``clock`` per second (default 1e9 for an injected clock).
    """

    def __init__(
        self,
        *,
        alpha: float = 0.01,
        window_seconds: float = 60.0,
        slices: int = 6,
        max_series_per_name: int = 2000,
        clock: Callable[[], int] | None = None,
        ticks_per_second: float | None = None,
    ) -> None:
        try:
            self.alpha = _accel.check_alpha(alpha)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if not isinstance(window_seconds, (int, float)) or not (
            0 < float(window_seconds) < math.inf
        ):
            raise ConfigError(
                f"window_seconds={window_seconds!r} must be a positive number of seconds"
            )
        if not isinstance(slices, int) or not (1 <= slices <= 1000):
            raise ConfigError(f"slices={slices!r} must be an integer in 1..1000")
        if not isinstance(max_series_per_name, int) or max_series_per_name < 1:
            raise ConfigError(
                f"max_series_per_name={max_series_per_name!r} must be a positive integer"
            )
        self.window_seconds = float(window_seconds)
        self.slices = slices
        self.max_series_per_name = max_series_per_name
        self.native_clock = clock is None
        self.clock: Callable[[], int] = clock if clock is not None else _accel.now_ticks
        if ticks_per_second is None:
            ticks_per_second = _accel.ticks_per_second() if clock is None else 1e9
        self.ticks_per_second = float(ticks_per_second)
        self._entries: dict[tuple[str, Labels], _Entry] = {}
        self._sorted: list[_Entry] | None = None  # the entries in snapshot order (None: redo)
        self._kinds: dict[str, str] = {}
        self._per_name: dict[str, int] = {}
        self.overflowed: dict[str, int] = {}
        self._lock = threading.Lock()

    # --- creation -------------------------------------------------------------------------------

    def _get(
        self,
        name: str,
        labels: Mapping[str, object] | Iterable[tuple[str, object]] | None,
        kind: str,
        help: str,
        factory: Callable[[], Any],
    ) -> Any:
        norm = normalize_labels(labels)
        key = (name, norm)
        entry = self._entries.get(key)
        if entry is not None and entry.kind == kind:
            return entry.obj
        check_metric_name(name)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                if entry.kind != kind:
                    raise ConfigError(
                        f"metric {name!r} is already registered as a {entry.kind}; "
                        f"it cannot also be a {kind}"
                    )
                return entry.obj
            known = self._kinds.get(name)
            if known is not None and known != kind:
                raise ConfigError(
                    f"metric {name!r} is already registered as a {known}; "
                    f"it cannot also be a {kind}"
                )
            if self._per_name.get(name, 0) >= self.max_series_per_name:
                self.overflowed[name] = self.overflowed.get(name, 0) + 1
                if self.overflowed[name] == 1:
                    log.warning(
                        "perfsdk: metric %r reached %d label sets (max_series_per_name); further "
                        'label sets are recorded in one series labelled perfsdk_overflow="true"',
                        name,
                        self.max_series_per_name,
                    )
                key = (name, OVERFLOW_LABELS)
                entry = self._entries.get(key)
                if entry is not None:
                    return entry.obj
                norm = OVERFLOW_LABELS
            else:
                self._per_name[name] = self._per_name.get(name, 0) + 1
            obj = factory()
            self._entries[key] = _Entry(name, norm, kind, help, obj)
            self._sorted = None
            self._kinds[name] = kind
            return obj

    def series(
        self,
        name: str,
        labels: Mapping[str, object] | None = None,
        *,
        help: str = "",
        threshold: float | None = None,
    ) -> _accel.Series:
        """The timer series for ``name`` and ``labels`` (created on first use).

        :param threshold: seconds; observations above it are counted exactly (SLO-style).
        """

        def make() -> _accel.Series:
            return _accel.Series(
                alpha=self.alpha,
                window_seconds=self.window_seconds,
                slices=self.slices,
                ticks_per_second=self.ticks_per_second,
                threshold=threshold,
                created=self.clock(),
            )

        if threshold is not None and (
            not isinstance(threshold, (int, float)) or math.isnan(threshold)
        ):
            raise ConfigError(f"threshold={threshold!r} must be a number of seconds")
        return self._get(name, labels, "timer", help, make)  # type: ignore[no-any-return]

    def counter(
        self, name: str, labels: Mapping[str, object] | None = None, *, help: str = ""
    ) -> _accel.Counter:
        """The counter cell for ``name`` and ``labels``: ``.inc(amount=1)``."""
        return self._get(name, labels, "counter", help, _accel.Counter)  # type: ignore[no-any-return]

    def gauge(
        self, name: str, labels: Mapping[str, object] | None = None, *, help: str = ""
    ) -> _accel.Gauge:
        """The gauge cell for ``name`` and ``labels``: ``.set(v)``, ``.inc()``, ``.dec()``."""
        return self._get(name, labels, "gauge", help, _accel.Gauge)  # type: ignore[no-any-return]

    def sample_cell(
        self,
        name: str,
        labels: Mapping[str, object] | Iterable[tuple[str, object]] | None,
        kind: str,
        help: str = "",
    ) -> _accel.Gauge:
        """The cell a collector's reading goes to: set, not incremented (``kind`` counter or gauge).

        Collected counters (CPU seconds, bytes read) arrive as running totals, so both kinds are
        stored in a settable cell and reported with their own kind.
        """
        if kind not in ("counter", "gauge"):
            raise ConfigError(f"sample {name!r} has kind {kind!r}; expected 'counter' or 'gauge'")
        cell = self._get(name, labels, kind, help, _accel.Gauge)
        if not isinstance(cell, _accel.Gauge):
            raise ConfigError(
                f"metric {name!r} is registered by the application as a {kind} it increments; "
                "a collector cannot also set it"
            )
        return cell

    def reset_data(self) -> None:
        """Zero every series in place (a forked child starts clean; wrappers keep their series)."""
        now = self.now()
        with self._lock:
            items = list(self._entries.values())
        for e in items:
            if e.kind == "timer":
                e.obj.clear(now)
            elif isinstance(e.obj, _accel.Gauge):
                e.obj.set(0.0)
            else:
                e.obj.reset()

    # --- reading --------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return sorted(self._kinds)

    def entries(self) -> list[tuple[str, Labels, str, Any]]:
        """(name, labels, kind, live object) of every series, sorted."""
        return [(e.name, e.labels, e.kind, e.obj) for e in self._sorted_entries()]

    def _sorted_entries(self) -> list[_Entry]:
        with self._lock:
            items = self._sorted
            if items is None:
                items = sorted(self._entries.values(), key=lambda e: (e.name, e.labels))
                self._sorted = items
            return items

    def now(self) -> int:
        return int(self.clock())

    def snapshot(self, *, now: int | None = None, include_sketches: bool = False) -> Snapshot:
        """Immutable statistics of every series: window and since-start, with percentiles.

        A timer unchanged since the previous snapshot (same data, window not moved a slice)
        is not recomputed: its numbers are reused, with the spans and rates brought to ``now``.
        """
        if now is None:
            now = self.now()
        out = []
        for e in self._sorted_entries():
            if e.kind == "timer":
                out.append(_timer_record(e, now, include_sketches))
            else:
                out.append(
                    make_series_snapshot(
                        e.name,
                        e.labels,
                        e.kind,
                        e.help,
                        None,
                        None,
                        e.obj.value,
                        0,
                        None,
                        None,
                        None,
                    )
                )
        return Snapshot(
            taken_at=time.time(), series=tuple(out), implementation=_accel.IMPLEMENTATION
        )

    def window_sketches(
        self, keys: Iterable[tuple[str, Labels]], *, now: int | None = None
    ) -> list[tuple[_accel.Sketch, int, int, float] | None]:
        """The window (sketch, errors, above, seconds) of each requested timer, None if unknown."""
        if now is None:
            now = self.now()
        out: list[tuple[_accel.Sketch, int, int, float] | None] = []
        for key in keys:
            e = self._entries.get(key)
            out.append(e.obj.window(now) if e is not None and e.kind == "timer" else None)
        return out

    def clear(self) -> None:
        """Forget every series (tests)."""
        with self._lock:
            self._entries.clear()
            self._sorted = None
            self._kinds.clear()
            self._per_name.clear()
            self.overflowed.clear()


def _timer_record(e: _Entry, now: int, include_sketches: bool) -> SeriesSnapshot:
    series: _accel.Series = e.obj
    version, epoch, wsec, tsec = series.state(now)
    last = e.last
    if (
        last is not None
        and last[0] == version
        and last[1] == epoch
        and (last[2] or not include_sketches)
    ):
        rec = last[3]
        assert rec.window is not None and rec.total is not None
        return make_series_snapshot(
            e.name,
            e.labels,
            "timer",
            e.help,
            _respan(rec.window, wsec),
            _respan(rec.total, tsec),
            None,
            rec.dropped,
            rec.threshold,
            rec.window_sketch if include_sketches else None,
            rec.total_sketch if include_sketches else None,
        )
    # (a recording between state() and stats() only makes the next snapshot recompute)
    window, total, dropped, wbytes, tbytes = series.stats(now, _QS, include_sketches)
    rec = make_series_snapshot(
        e.name,
        e.labels,
        "timer",
        e.help,
        make_stats(*window),
        make_stats(*total),
        None,
        dropped,
        series.threshold,
        wbytes,
        tbytes,
    )
    e.last = (version, epoch, include_sketches, rec)
    return rec


def _respan(s: Stats, seconds: float) -> Stats:
    """The same statistics over a span of another length (the data unchanged): the rate moves."""
    count = s.count
    return make_stats(
        count,
        s.errors,
        s.sum,
        s.min,
        s.max,
        s.mean,
        count / seconds if seconds > 0 else 0.0,
        s.p50,
        s.p90,
        s.p95,
        s.p99,
        s.p999,
        seconds,
        s.above,
    )


_default: Registry | None = None
_default_lock = threading.Lock()


def get_registry() -> Registry:
    """The default global registry (created on first use)."""
    global _default
    reg = _default
    if reg is None:
        with _default_lock:
            if _default is None:
                _default = Registry()
            reg = _default
    return reg


def set_registry(registry: Registry) -> Registry:
    """Replace the default registry; returns the previous one."""
    global _default
    if not isinstance(registry, Registry):
        raise ConfigError(f"set_registry() needs a Registry, got {registry!r}")
    with _default_lock:
        old = _default if _default is not None else registry
        _default = registry
    return old
