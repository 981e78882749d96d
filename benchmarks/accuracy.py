"""Quantile accuracy and bytes per series: perfsdk against DDSketch, HdrHistogram, Prometheus, OTel.

Data: 1,000,000 lognormal latencies (median 10 ms, sigma 1.5) and 1,000,000 Pareto latencies
(shape 1.5, minimum 1 ms), seconds, fixed seeds. Each library gets every value one by one (perfsdk
through ``perfsdk.kernels.ingest`` when Numba is there, which gives the same sketch as one-by-one
``add``). The exact answer is ``numpy.quantile(data, q, method="lower")``, the value at rank
``floor(q * (n - 1))``: the order statistic perfsdk and DDSketch estimate. The error against numpy's
default ``method="linear"`` is shown for reference. Relative error = |estimate - exact| / exact.

How each library is asked for a quantile:

- perfsdk ``Sketch(alpha=0.01).quantiles(qs)``; DDSketch(relative_accuracy=0.01)
  ``get_quantile_value(q)``;
- HdrHistogram(1 ns .. 1 h, 3 significant digits) fed ``round(value * 1e9)`` ns,
  ``get_value_at_percentile(100 q)`` / 1e9;
- prometheus_client ``Histogram`` with its default buckets (5 ms .. 10 s): the estimate Prometheus'
  ``histogram_quantile()`` would give (rank q * count, linear interpolation inside the bucket, the
  highest finite bound when the rank falls in +Inf);
- OpenTelemetry SDK exponential histogram (``ExponentialBucketHistogramAggregation()`` defaults:
  at most 160 buckets, scale chosen by the SDK): OTel defines no quantile estimate, so the bucket
  holding rank floor(q * (count - 1)) is reported by its harmonic midpoint 2 lo hi / (lo + hi)
  (the estimator DDSketch and perfsdk use), clamped to [min, max].

Memory per series is measured on a third data set, 200,000 latencies spread log-uniformly over
1 µs .. 10 s (see the table's "how" column).

    python benchmarks/accuracy.py [--json PATH] [-n N]
"""

from __future__ import annotations

import gc
import math
import sys
import time
import types
from collections.abc import Callable
from typing import Any

import numpy as np
from _common import machine_line, parser, table, write_json

import perfsdk._accel as accel

QS = [0.5, 0.9, 0.99, 0.999]
QNAMES = ["p50", "p90", "p99", "p99.9"]


def datasets(n: int) -> dict[str, np.ndarray]:
    lognormal = np.random.default_rng(20240601).lognormal(math.log(0.010), 1.5, n)
    pareto = (np.random.default_rng(20240602).pareto(1.5, n) + 1.0) * 0.001
    return {"lognormal": lognormal, "pareto": pareto}


def deep_sizeof(obj: Any) -> int:
    """Bytes of obj and everything it references, classes, modules and functions excluded."""
    skip = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType)
    seen: set[int] = set()
    stack = [obj]
    total = 0
    while stack:
        o = stack.pop()
        if id(o) in seen or isinstance(o, skip):
            continue
        seen.add(id(o))
        total += sys.getsizeof(o)
        stack.extend(gc.get_referents(o))
    return total


# --- the libraries: each returns (estimator(qs) -> list, bytes, how the bytes were measured) ----


def run_perfsdk(data: np.ndarray) -> tuple[Callable[[list[float]], list[float]], int, str]:
    sk = accel.Sketch(0.01)
    try:
        from perfsdk import kernels

        kernels.ingest(sk, data)
    except ImportError:
        sk.add_many(data.tolist())
    return sk.quantiles, sk.nbytes, "Sketch.nbytes (struct + dense bucket arrays)"


def run_ddsketch(data: np.ndarray) -> tuple[Callable[[list[float]], list[float]], int, str]:
    from ddsketch import DDSketch

    sk = DDSketch(relative_accuracy=0.01)
    add = sk.add
    for v in data.tolist():
        add(v)
    packed = 8 * (len(sk._store.bins) + len(sk._negative_store.bins))
    return (
        lambda qs: [sk.get_quantile_value(q) for q in qs],
        packed,
        f"8 B x dense store bins (Python heap, deep getsizeof: {deep_sizeof(sk):,} B)",
    )


def run_hdr(data: np.ndarray) -> tuple[Callable[[list[float]], list[float]], int, str]:
    from hdrh.histogram import HdrHistogram

    h = HdrHistogram(1, 3_600_000_000_000, 3)
    record = h.record_value
    for v in np.rint(data * 1e9).astype(np.int64).tolist():
        record(max(1, v))
    nbytes = h.counts_len * h.word_size
    return (
        lambda qs: [h.get_value_at_percentile(100.0 * q) / 1e9 for q in qs],
        nbytes,
        f"counts array, counts_len x word_size (encode(): {len(h.encode()):,} B)",
    )


def prometheus_quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """histogram_quantile() of Prometheus on cumulative (upper bound, count) pairs."""
    total = buckets[-1][1]
    rank = q * total
    b = next(i for i, (_, c) in enumerate(buckets) if c >= rank)
    if math.isinf(buckets[b][0]):
        return buckets[-2][0]
    start = 0.0 if b == 0 else buckets[b - 1][0]
    below = 0.0 if b == 0 else buckets[b - 1][1]
    count = buckets[b][1] - below
    return start + (buckets[b][0] - start) * ((rank - below) / count)


def run_prometheus(data: np.ndarray) -> tuple[Callable[[list[float]], list[float]], int, str]:
    from prometheus_client import CollectorRegistry, Histogram

    h = Histogram("latency_seconds", "latency", registry=CollectorRegistry())
    observe = h.observe
    for v in data.tolist():
        observe(v)
    samples = h.collect()[0].samples
    buckets = [(float(s.labels["le"]), s.value) for s in samples if s.name.endswith("_bucket")]
    cells = len(buckets) + 1  # the buckets and the sum
    return (
        lambda qs: [prometheus_quantile(buckets, q) for q in qs],
        8 * cells,
        f"8 B x {cells} cells (buckets + sum; Python heap, deep getsizeof: {deep_sizeof(h):,} B)",
    )


def otel_quantile(dp: Any, q: float) -> float:
    rank = q * (dp.count - 1)
    cum = dp.zero_count
    if cum > rank:
        return 0.0
    for j, c in enumerate(dp.positive.bucket_counts):
        cum += c
        if cum > rank:
            i = dp.positive.offset + j
            lo = 2.0 ** (i * 2.0**-dp.scale)
            hi = 2.0 ** ((i + 1) * 2.0**-dp.scale)
            return float(min(max(2.0 * lo * hi / (lo + hi), dp.min), dp.max))
    return float(dp.max)


def run_otel(data: np.ndarray) -> tuple[Callable[[list[float]], list[float]], int, str]:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View

    reader = InMemoryMetricReader()
    view = View(instrument_name="latency", aggregation=ExponentialBucketHistogramAggregation())
    provider = MeterProvider(metric_readers=[reader], views=[view])
    record = provider.get_meter("accuracy").create_histogram("latency", unit="s").record
    for v in data.tolist():
        record(v)
    metrics = reader.get_metrics_data()
    dp = metrics.resource_metrics[0].scope_metrics[0].metrics[0].data.data_points[0]
    nb = len(dp.positive.bucket_counts) + len(dp.negative.bucket_counts)
    provider.shutdown()
    return (
        lambda qs: [otel_quantile(dp, q) for q in qs],
        8 * nb,
        f"8 B x {nb} bucket counts (scale {dp.scale}; the SDK caps a histogram at 160)",
    )


LIBRARIES: list[tuple[str, Callable[[np.ndarray], Any]]] = [
    ("perfsdk (alpha 0.01)", run_perfsdk),
    ("ddsketch (rel. acc. 0.01)", run_ddsketch),
    ("hdrhistogram (3 digits, ns)", run_hdr),
    ("prometheus_client (default buckets)", run_prometheus),
    ("opentelemetry exp. histogram (160)", run_otel),
]


def series_nbytes() -> tuple[int, int, int, int]:
    """perfsdk Series.nbytes with 1 µs .. 10 s latencies recorded across its 60 s window."""
    values = np.geomspace(1e-6, 10.0, 200_000)
    np.random.default_rng(5).shuffle(values)
    series = accel.Series(alpha=0.01, window_seconds=60.0, slices=6, ticks_per_second=1e9)
    step = int(60e9 / len(values))
    record = series.record
    for i, v in enumerate(values.tolist()):
        record(v, i * step)
    total = series.totals(len(values) * step)[0]
    return series.nbytes, total.nbytes, len(total.to_bytes()), series.count


def main() -> None:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=1_000_000, help="values per data set (1,000,000)")
    args = ap.parse_args()
    t_start = time.perf_counter()
    data = datasets(args.n)
    span = np.geomspace(1e-6, 10.0, 200_000)
    rows_lower, rows_linear, rows_bytes, results = [], [], [], []
    for lib, run in LIBRARIES:
        try:
            mem = run(span)
        except ImportError as exc:
            print(f"skipped {lib}: {exc}")
            continue
        rows_bytes.append([lib, f"{mem[1]:,}", mem[2]])
        for dname, values in data.items():
            t0 = time.perf_counter()
            estimate, _, _ = run(values)
            got = estimate(QS)
            feed = time.perf_counter() - t0
            lower = np.quantile(values, QS, method="lower")
            linear = np.quantile(values, QS)
            err_lower = [abs(g - e) / e for g, e in zip(got, lower, strict=True)]
            err_linear = [abs(g - e) / e for g, e in zip(got, linear, strict=True)]
            rows_lower.append([lib, dname, *(f"{100 * e:.3f}" for e in err_lower)])
            rows_linear.append([lib, dname, *(f"{100 * e:.3f}" for e in err_linear)])
            results.append(
                {
                    "library": lib,
                    "data": dname,
                    "quantiles": QS,
                    "estimates": got,
                    "exact_lower": lower.tolist(),
                    "exact_linear": linear.tolist(),
                    "rel_error_lower": err_lower,
                    "rel_error_linear": err_linear,
                    "feed_seconds": feed,
                }
            )
    s_bytes, total_bytes, wire_bytes, s_count = series_nbytes()

    print(machine_line())
    print(f"{args.n:,} values per data set; relative error in %, exact = numpy method='lower'")
    print(table(["library", "data", *QNAMES], rows_lower, "ll" + "r" * len(QNAMES)))
    print()
    print("for reference, relative error in % against numpy's default method='linear'")
    print(table(["library", "data", *QNAMES], rows_linear, "ll" + "r" * len(QNAMES)))
    print()
    print("bytes per series: 200,000 latencies log-uniform over 1 µs .. 10 s")
    print(table(["library", "bytes", "how measured"], rows_bytes, "lrl"))
    print()
    print(
        f"perfsdk Series (60 s window, 6 slices) after {s_count:,} records spread over the window "
        f"(1 µs .. 10 s): Series.nbytes = {s_bytes:,} B ({s_bytes / 1024:.1f} KiB, "
        f"limit 64 KiB: {'met' if s_bytes <= 65536 else 'MISSED'}); its totals sketch: "
        f"nbytes {total_bytes:,} B, to_bytes() {wire_bytes:,} B"
    )
    print(f"({time.perf_counter() - t_start:.0f} s)")
    write_json(
        args.json,
        {
            "benchmark": "accuracy",
            "n": args.n,
            "results": results,
            "bytes_per_series": [
                {"library": r[0], "bytes": int(r[1].replace(",", "")), "how": r[2]}
                for r in rows_bytes
            ],
            "perfsdk_series": {
                "nbytes": s_bytes,
                "totals_nbytes": total_bytes,
                "totals_wire_bytes": wire_bytes,
                "records": s_count,
            },
        },
    )


if __name__ == "__main__":
    main()
