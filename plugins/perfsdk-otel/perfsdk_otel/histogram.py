"""A perfsdk sketch as an OpenTelemetry exponential histogram data point.

**Scale.** An OTel exponential histogram at scale ``s`` has bucket ``i`` covering
``(base**i, base**(i + 1)]`` with ``base = 2 ** (2 ** -s)``. A perfsdk sketch of accuracy ``alpha``
has buckets at most ``gamma = (1 + alpha) / (1 - alpha)`` wide (ratio of bounds). The scale chosen
is the largest whose base is still at least ``gamma``: the OTel buckets are never finer than the
sketch's, so each receives one or two whole sketch buckets and none is left empty between two
populated ones (a finer scale would advertise a resolution the data does not have, leave a comb of
empty buckets and nearly double the bucket count). For ``alpha = 0.01``: ``gamma = 1.0202``, scale 5
(base 1.0219, 32 buckets per power of two against the sketch's 35); scale 6 (base 1.0109) would be
finer than the data.

**Re-bucketing rule.** The count of each sketch bucket goes, whole, to the OTel bucket that contains
the sketch bucket's representative value: the value the sketch itself reports for a quantile
falling in that bucket (the harmonic mean of the bucket's bounds), clamped to the exact
``[min, max]`` as the sketch's quantiles are. The mapping is monotonic, so ranks are preserved: a
quantile read from the OTel buckets is the OTel bucket holding the sketch's own answer, within
``(base - 1) / (base + 1)`` (1.08% at scale 5) of it, and so within about ``2 * alpha`` of the true
value. ``count``, ``sum``, ``min``, ``max`` and ``zero_count`` are the sketch's, exact; negative
values go to the negative buckets by magnitude.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from opentelemetry.sdk.metrics.export import Buckets, ExponentialHistogramDataPoint
from opentelemetry.util.types import Attributes

from perfsdk import _accel
from perfsdk._speedups_py import MIN_INDEXABLE, value_of

__all__ = ["MAX_SCALE", "MIN_SCALE", "bucket_base", "exponential_point", "otel_index", "scale_for"]

#: The scales the OTLP data model allows (opentelemetry-proto ExponentialHistogramDataPoint).
MIN_SCALE = -10
MAX_SCALE = 20


def bucket_base(scale: int) -> float:
    """The ratio of an OTel bucket's upper to lower bound at ``scale``: ``2 ** (2 ** -scale)``."""
    return float(2.0 ** (2.0**-scale))


def scale_for(alpha: float) -> int:
    """The largest OTel scale whose bucket base is at least the sketch's ``gamma``.

    ``base >= gamma`` means ``2 ** -scale >= log2(gamma)``, so the answer is
    ``floor(-log2(log2(gamma)))``, checked against the bases themselves so rounding in the logs
    cannot pick a scale one too fine; clamped to the allowed ``[-10, 20]``.
    """
    gamma = (1.0 + alpha) / (1.0 - alpha)
    scale = math.floor(-math.log2(math.log2(gamma)))
    while scale > MIN_SCALE and bucket_base(scale) < gamma:
        scale -= 1
    while scale < MAX_SCALE and bucket_base(scale + 1) >= gamma:
        scale += 1
    return max(MIN_SCALE, min(MAX_SCALE, scale))


def otel_index(magnitude: float, scale: int) -> int:
    """The index of the OTel bucket ``(base**i, base**(i + 1)]`` holding ``magnitude`` (> 0).

    ``ceil(log2(v) * 2**scale) - 1``; exact powers of two, the only bounds a double can hit
    exactly, are computed without ``log2`` so they land in the bucket they close.
    """
    mantissa, exponent = math.frexp(magnitude)
    if mantissa == 0.5:  # magnitude == 2 ** (exponent - 1)
        return math.ceil(math.ldexp(exponent - 1, scale)) - 1
    return math.ceil(math.ldexp(math.log2(magnitude), scale)) - 1


#: (mult, scale) -> {sketch key: OTel index of the key's representative value}. The cubic behind
#: ``value_of`` costs microseconds and a timer has hundreds of buckets on every export; a table
#: holds one entry per key ever seen (a few thousand at most for one accuracy).
_TABLES: dict[tuple[float, int], dict[int, int]] = {}
_TABLE_LIMIT = 1 << 16


def _table(mult: float, scale: int) -> dict[int, int]:
    table = _TABLES.get((mult, scale))
    if table is None or len(table) > _TABLE_LIMIT:
        table = _TABLES[(mult, scale)] = {}
    return table


def _rebucket(
    bins: Mapping[int, int], sign: float, mult: float, lo: float, hi: float, scale: int
) -> Buckets:
    keys = sorted(bins)
    if not keys:
        return Buckets(offset=0, bucket_counts=[])
    table = _table(mult, scale)
    indices = []
    for key in keys:
        index = table.get(key)
        if index is None:
            index = table[key] = otel_index(value_of(key, mult), scale)
        indices.append(index)
    # Clamping to [min, max] can only move the outermost buckets (min and max are among their
    # values, every other representative lies between them), and never past a neighbour.
    for i in {0, len(keys) - 1}:
        representative = min(max(sign * value_of(keys[i], mult), lo), hi)
        indices[i] = otel_index(max(abs(representative), MIN_INDEXABLE), scale)
    offset = min(indices)  # indices[0]: representatives grow with the key
    counts = [0] * (max(indices) - offset + 1)
    for key, index in zip(keys, indices, strict=True):
        counts[index - offset] += bins[key]
    return Buckets(offset=offset, bucket_counts=counts)


def exponential_point(
    sketch: _accel.Sketch,
    attributes: Attributes,
    start_time_unix_nano: int,
    time_unix_nano: int,
) -> ExponentialHistogramDataPoint:
    """The cumulative OTel data point of ``sketch`` (which must hold at least one value)."""
    if sketch.count == 0:
        raise ValueError("an empty sketch has no min or max; skip it instead of exporting it")
    scale = scale_for(sketch.alpha)
    positive, negative, zero = sketch.bins()
    lo, hi = sketch.min, sketch.max
    return ExponentialHistogramDataPoint(
        attributes=attributes,
        start_time_unix_nano=start_time_unix_nano,
        time_unix_nano=time_unix_nano,
        count=sketch.count,
        sum=sketch.sum,
        scale=scale,
        zero_count=zero,
        positive=_rebucket(positive, 1.0, sketch.mult, lo, hi, scale),
        negative=_rebucket(negative, -1.0, sketch.mult, lo, hi, scale),
        flags=0,
        min=lo,
        max=hi,
    )
