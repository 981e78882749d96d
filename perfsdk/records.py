"""Immutable records handed from the core to exporters, rules and reports.

Percentiles of an empty window are NaN (as in Prometheus' summaries); ``to_dict`` turns them into
``None`` for JSON.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from . import _accel
from .naming import Labels

__all__ = ["QUANTILES", "SeriesSnapshot", "Snapshot", "Stats"]

#: The quantiles every snapshot reports, with their field names.
QUANTILES: tuple[tuple[str, float], ...] = (
    ("p50", 0.5),
    ("p90", 0.9),
    ("p95", 0.95),
    ("p99", 0.99),
    ("p999", 0.999),
)


def _clean(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


@dataclass(frozen=True, slots=True)
class Stats:
    """Statistics of one series over one span (the rolling window, or since start).

    ``rate`` is observations per second over ``seconds``, the span actually covered. ``above`` is
    the     exact number of observations above the series' threshold (None when it has none).
    """

    count: int
    errors: int
    sum: float
    min: float
    max: float
    mean: float
    rate: float
    p50: float
    p90: float
    p95: float
    p99: float
    p999: float
    seconds: float
    above: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: _clean(getattr(self, k)) for k in self.__dataclass_fields__}


@dataclass(frozen=True, slots=True)
class SeriesSnapshot:
    """One series at one moment. ``kind`` is ``timer``, ``counter`` or ``gauge``.

    Timers carry ``window`` and ``total`` stats (and, when the snapshot was asked for them, the
    serialised sketches, mergeable across processes); counters and gauges carry ``value``.
    """

    name: str
    labels: Labels
    kind: str
    help: str = ""
    window: Stats | None = None
    total: Stats | None = None
    value: float | None = None
    dropped: int = 0
    threshold: float | None = None
    window_sketch: bytes | None = field(default=None, repr=False)
    total_sketch: bytes | None = field(default=None, repr=False)

    @property
    def labels_dict(self) -> dict[str, str]:
        return dict(self.labels)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "labels": dict(self.labels),
            "kind": self.kind,
            "help": self.help,
            "window": self.window.to_dict() if self.window else None,
            "total": self.total.to_dict() if self.total else None,
            "value": self.value,
            "dropped": self.dropped,
            "threshold": self.threshold,
        }


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every series of a registry at one moment (``taken_at`` is Unix time)."""

    taken_at: float
    series: tuple[SeriesSnapshot, ...]
    implementation: str

    def get(self, name: str, **labels: str) -> SeriesSnapshot | None:
        """The series with this name and exactly these labels, or None."""
        want = tuple(sorted((k, str(v)) for k, v in labels.items()))
        for s in self.series:
            if s.name == name and s.labels == want:
                return s
        return None

    def by_name(self, name: str) -> tuple[SeriesSnapshot, ...]:
        return tuple(s for s in self.series if s.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "taken_at": self.taken_at,
            "implementation": self.implementation,
            "series": [s.to_dict() for s in self.series],
        }


#: ``make_stats(count, errors, ..., seconds, above)``: ``Stats`` from every field, positionally,
#: several times faster than ``Stats(...)`` (see ``RecordMaker``); the registry builds three
#: records per timer per snapshot.
make_stats: Callable[..., Stats] = _accel.RecordMaker(Stats, [f.name for f in fields(Stats)])
#: ``make_series_snapshot(name, labels, ..., total_sketch)``: the same for ``SeriesSnapshot``.
make_series_snapshot: Callable[..., SeriesSnapshot] = _accel.RecordMaker(
    SeriesSnapshot, [f.name for f in fields(SeriesSnapshot)]
)
