"""A perfsdk snapshot as OpenTelemetry SDK metric data (``opentelemetry.sdk.metrics.export``).

Everything is cumulative, from the since-start totals:

- a timer becomes an exponential histogram (:mod:`perfsdk_otel.histogram`) built from its
  ``total_sketch``, plus ``<name>_errors_total``, a monotonic Sum of the calls that raised;
- a counter becomes a monotonic Sum;
- a gauge becomes a Gauge.

Labels become attributes; the unit is read from the name's suffix (``_seconds`` -> ``s``,
``_bytes`` -> ``By``; timers are always ``s``). A timer that has recorded nothing yet has no
histogram point (an OTel histogram point needs a min and a max), and a timer whose snapshot carries
no sketch is left out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    ExponentialHistogram,
    ExponentialHistogramDataPoint,
    Gauge,
    Metric,
    NumberDataPoint,
    Sum,
)

from perfsdk import _accel
from perfsdk.records import SeriesSnapshot, Snapshot

from .histogram import exponential_point

__all__ = ["ERRORS_SUFFIX", "build_metrics", "unit_of"]

#: Appended to a timer's name for the counter of its calls that raised.
ERRORS_SUFFIX = "_errors_total"

#: Called with a series and the snapshot time (ns); returns the series' start time (ns).
StartTime = Callable[[SeriesSnapshot, int], int]

_UNITS = (("_seconds", "s"), ("_bytes", "By"))


def unit_of(name: str, kind: str) -> str:
    """The UCUM unit of a perfsdk metric: ``s`` for timers, else from the name's suffix."""
    if kind == "timer":
        return "s"
    base = name.removesuffix("_total")
    for suffix, unit in _UNITS:
        if base.endswith(suffix):
            return unit
    return ""


def _groups(series: Sequence[SeriesSnapshot]) -> Iterator[tuple[str, list[SeriesSnapshot]]]:
    """Series grouped by name, in snapshot order (a name has one kind in a registry)."""
    by_name: dict[str, list[SeriesSnapshot]] = {}
    for s in series:
        by_name.setdefault(s.name, []).append(s)
    yield from by_name.items()


def _timer_metrics(
    name: str, group: list[SeriesSnapshot], now_ns: int, start: StartTime
) -> list[Metric]:
    points: list[ExponentialHistogramDataPoint] = []
    errors: list[NumberDataPoint] = []
    for s in group:
        if s.total_sketch is None or s.total is None:
            continue
        sketch = _accel.Sketch.from_bytes(s.total_sketch)
        start_ns = start(s, now_ns)
        attributes = dict(s.labels)
        errors.append(NumberDataPoint(attributes, start_ns, now_ns, s.total.errors))
        if sketch.count:
            points.append(exponential_point(sketch, attributes, start_ns, now_ns))
    help_text = group[0].help
    out = []
    if points:
        histogram = ExponentialHistogram(points, AggregationTemporality.CUMULATIVE)
        out.append(Metric(name, help_text, "s", histogram))
    if errors:
        description = f"Calls of {name} that raised." + (f" {help_text}" if help_text else "")
        errors_sum = Sum(errors, AggregationTemporality.CUMULATIVE, is_monotonic=True)
        out.append(Metric(name + ERRORS_SUFFIX, description, "", errors_sum))
    return out


def _number_metric(
    name: str, kind: str, group: list[SeriesSnapshot], now_ns: int, start: StartTime
) -> Metric | None:
    points = [
        NumberDataPoint(
            dict(s.labels),
            start(s, now_ns) if kind == "counter" else 0,
            now_ns,
            float(s.value),
        )
        for s in group
        if s.value is not None
    ]
    if not points:
        return None
    unit = unit_of(name, kind)
    if kind == "counter":
        data: Sum | Gauge = Sum(points, AggregationTemporality.CUMULATIVE, is_monotonic=True)
    else:
        data = Gauge(points)
    return Metric(name, group[0].help, unit, data)


def build_metrics(snapshot: Snapshot, start: StartTime) -> list[Metric]:
    """The OTel metrics of every series in ``snapshot``.

    :param start: gives each cumulative series its start time; it must return the same value for
        the same series on every call, or backends take the series for restarted.
    """
    now_ns = round(snapshot.taken_at * 1e9)
    metrics: list[Metric] = []
    for name, group in _groups(snapshot.series):
        kind = group[0].kind
        if kind == "timer":
            metrics.extend(_timer_metrics(name, group, now_ns, start))
        elif kind in ("counter", "gauge"):
            metric = _number_metric(name, kind, group, now_ns, start)
            if metric is not None:
                metrics.append(metric)
    return metrics
