"""Per-call cost of timing a function, against a bare call and against peer libraries.

Every candidate wraps the same trivial ``def f(x): return x`` and records each call's duration
somewhere (a perfsdk series, a Prometheus histogram, ...). Method: ``timeit`` with the garbage
collector off, ``number`` calls per repeat (calibrated to about 25 ms), 5 repeats per round, keep
the *minimum* repeat of each round; 9 rounds that visit the candidates in rotating order, so that
slow drifts of the machine hit all of them alike; report the *median of the 9 per-round minimums*
in ns per call. "added" is that minus the bare call; "× perfsdk" is added / perfsdk's added.

    python benchmarks/overhead.py [--json PATH] [--rounds N]
"""

from __future__ import annotations

import time
import timeit
from collections.abc import Callable
from typing import Any

from _common import machine_line, median, parser, table, write_json

import perfsdk
import perfsdk._accel as accel
import perfsdk._speedups_py as twin


def f(x: Any) -> Any:
    return x


def perfsdk_timed() -> Callable[[Any], Any]:
    reg = perfsdk.Registry()
    if hasattr(perfsdk, "timed"):
        return perfsdk.timed(registry=reg)(f)  # type: ignore[no-any-return]
    series = accel.Series(ticks_per_second=accel.ticks_per_second())
    return accel.TimedFunction(f, series)  # type: ignore[no-any-return]


def perfsdk_twin() -> Callable[[Any], Any]:
    return twin.TimedFunction(f, twin.Series(ticks_per_second=1e9))


def floor() -> Callable[[Any], Any]:
    """The least a Python-level wrapper can do: two clock reads around the call, nothing kept."""

    def wrapper(x: Any, _clock: Callable[[], int] = time.perf_counter_ns) -> Any:
        _clock()
        r = f(x)
        _clock()  # read and dropped: the floor keeps nothing
        return r

    return wrapper


def prometheus() -> Callable[[Any], Any]:
    from prometheus_client import CollectorRegistry, Histogram

    h = Histogram("bench_seconds", "bench", registry=CollectorRegistry())
    return h.time()(f)  # type: ignore[no-any-return]


def opentelemetry() -> Callable[[Any], Any]:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    hist = provider.get_meter("bench").create_histogram("bench", unit="s")
    record = hist.record

    def wrapper(x: Any, _clock: Callable[[], float] = time.perf_counter) -> Any:
        t0 = _clock()
        r = f(x)
        record(_clock() - t0)
        return r

    return wrapper


def ddsketch() -> Callable[[Any], Any]:
    from ddsketch import DDSketch

    add = DDSketch(relative_accuracy=0.01).add

    def wrapper(x: Any, _clock: Callable[[], int] = time.perf_counter_ns) -> Any:
        t0 = _clock()
        r = f(x)
        add((_clock() - t0) * 1e-9)
        return r

    return wrapper


def hdrhistogram() -> Callable[[Any], Any]:
    from hdrh.histogram import HdrHistogram

    record = HdrHistogram(1, 3_600_000_000_000, 3).record_value

    def wrapper(x: Any, _clock: Callable[[], int] = time.perf_counter_ns) -> Any:
        t0 = _clock()
        r = f(x)
        record(_clock() - t0)
        return r

    return wrapper


CANDIDATES: list[tuple[str, Callable[[], Callable[[Any], Any]]]] = [
    ("bare call", lambda: f),
    ("floor: Python wrapper, 2 perf_counter_ns", floor),
    ("perfsdk @timed", perfsdk_timed),
    ("perfsdk twin TimedFunction (pure Python)", perfsdk_twin),
    ("prometheus_client Histogram.time()", prometheus),
    ("opentelemetry-sdk histogram.record", opentelemetry),
    ("ddsketch DDSketch.add", ddsketch),
    ("hdrhistogram record_value", hdrhistogram),
]


def per_call(g: Callable[[Any], Any], number: int, repeat: int) -> float:
    times = timeit.repeat("g(1)", globals={"g": g}, number=number, repeat=repeat)
    return min(times) / number


def main() -> None:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=9, help="rounds (default 9)")
    ap.add_argument("--repeat", type=int, default=5, help="timeit repeats per round (default 5)")
    args = ap.parse_args()

    wrapped: list[tuple[str, Callable[[Any], Any]]] = []
    for name, make in CANDIDATES:
        try:
            wrapped.append((name, make()))
        except ImportError as exc:
            print(f"skipped {name}: {exc}")
    numbers = {}
    for name, g in wrapped:
        per = per_call(g, 2000, 3)
        numbers[name] = max(1000, int(0.025 / max(per, 1e-9)))
    samples: dict[str, list[float]] = {name: [] for name, _ in wrapped}
    start = time.perf_counter()
    for r in range(args.rounds):
        order = wrapped[r % len(wrapped) :] + wrapped[: r % len(wrapped)]
        for name, g in order:
            samples[name].append(per_call(g, numbers[name], args.repeat) * 1e9)
    elapsed = time.perf_counter() - start

    ns = {name: median(v) for name, v in samples.items()}
    bare = ns["bare call"]
    ref = ns.get("perfsdk @timed", float("nan")) - bare
    rows = []
    results = []
    for name, _ in wrapped:
        added = ns[name] - bare
        ratio = added / ref if name != "bare call" else float("nan")
        rows.append(
            [
                name,
                f"{ns[name]:.1f}",
                "" if name == "bare call" else f"{added:.1f}",
                "" if name == "bare call" else f"{ratio:.2f}",
            ]
        )
        results.append(
            {
                "name": name,
                "ns_per_call": ns[name],
                "added_ns": added,
                "ratio_vs_perfsdk": ratio,
                "per_round_min_ns": samples[name],
                "calls_per_repeat": numbers[name],
            }
        )
    timed_type = type(dict(wrapped)["perfsdk @timed"])
    print(machine_line())
    print(f"perfsdk @timed returns {timed_type.__module__}.{timed_type.__qualname__}")
    print(
        f"median of {args.rounds} per-round minimums ({args.repeat} timeit repeats each), "
        f"ns per call of f(1); {elapsed:.0f} s"
    )
    print(table(["wrapper", "ns/call", "added ns", "× perfsdk"], rows))
    write_json(args.json, {"benchmark": "overhead", "results": results})


if __name__ == "__main__":
    main()
