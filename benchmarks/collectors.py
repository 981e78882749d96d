"""Cost of one ``collect()`` of each built-in collector, and what it means for the agent's budget.

Each collector is made once, warmed up, then its ``collect()`` is timed ``--runs`` times
(``time.perf_counter_ns`` around each call; garbage collector on, as in production): the table
shows the median and 90th percentile wall time in microseconds, then the mean CPU time of the
calling thread per call (``time.thread_time_ns`` over all runs: what the overhead target counts,
and unlike wall time not inflated when other processes take the CPU away), alone and with the
agent's next step included: each sample stored with ``Registry.sample_cell(...).set()``. Rows for
the USS read (``memory_full_info``, done every ``process_uss_every`` collects) and the GC-pause
callback (per collection) follow. The last line adds the CPU means up against the target: agent
overhead at a 1 s interval at most 0.5% of one core, i.e. 5 ms of CPU per second.

    python benchmarks/collectors.py [--runs 2000] [--json PATH]
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

from _common import machine_line, median, parser, table, write_json

import perfsdk
from perfsdk.collectors.process import ProcessCollector
from perfsdk.collectors.runtime import GcPauseRecorder, RuntimeCollector
from perfsdk.collectors.system import SystemCollector
from perfsdk.protocols import Sample

BUDGET_US = 5000.0  # 0.5% of one core at a 1 s interval


def timings(fn: Callable[[], Any], runs: int) -> list[float]:
    for _ in range(min(50, runs)):
        fn()
    out = []
    clock = time.perf_counter_ns
    for _ in range(runs):
        t0 = clock()
        fn()
        out.append((clock() - t0) / 1000)
    return out


def cpu_per_call(fn: Callable[[], Any], runs: int) -> float:
    """Mean CPU µs of this thread per call."""
    for _ in range(min(50, runs)):
        fn()
    t0 = time.thread_time_ns()
    for _ in range(runs):
        fn()
    return (time.thread_time_ns() - t0) / runs / 1000


def p90(xs: list[float]) -> float:
    return sorted(xs)[int(0.9 * (len(xs) - 1))]


def stored(collect: Callable[[], list[Sample]], registry: perfsdk.Registry) -> Callable[[], None]:
    cell = getattr(registry, "sample_cell", None)

    def run() -> None:
        for s in collect():
            if cell is not None:
                cell(s.name, s.labels, s.kind, s.help).set(s.value)

    return run


def gc_callback_cost(runs: int) -> tuple[float, float]:
    """Median µs of a young collection without, then with, the pause callback."""
    garbage: list[object] = []

    def young() -> None:
        garbage.clear()
        garbage.extend([] for _ in range(50))
        gc.collect(0)

    without = median(timings(young, runs))
    recorder = GcPauseRecorder(max_pending=runs + 100)
    recorder.install()
    try:
        with_cb = median(timings(young, runs))
    finally:
        recorder.uninstall()
    return without, with_cb


def main() -> None:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2000, help="timed collects per collector (2000)")
    args = ap.parse_args()
    registry = perfsdk.Registry()
    collectors: list[tuple[str, Any]] = [
        ("process (steady: no USS read)", ProcessCollector(uss_every=0)),
        ("system", SystemCollector()),
        ("python_runtime", RuntimeCollector(registry, gc_pauses=None)),
    ]
    try:
        import perfsdk_gpu  # type: ignore[import-not-found]

        gpu = perfsdk_gpu.open_gpu_collector()
    except ImportError:
        gpu = None
    if gpu is not None:
        collectors.append(("gpu", gpu))

    print(machine_line())
    print(f"{args.runs} timed collects each (after 50 untimed), µs per call")
    rows = []
    results: dict[str, dict[str, float]] = {}
    total = 0.0
    for label, collector in collectors:
        collect = collector.collect
        bare = timings(collect, args.runs)
        cpu = cpu_per_call(collect, args.runs)
        cpu_store = cpu_per_call(stored(collect, registry), args.runs)
        n = len(collect())
        total += cpu_store
        rows.append(
            [
                label,
                n,
                f"{median(bare):.1f}",
                f"{p90(bare):.1f}",
                f"{cpu:.1f}",
                f"{cpu_store:.1f}",
            ]
        )
        results[label] = {
            "samples": n,
            "median_us": median(bare),
            "p90_us": p90(bare),
            "cpu_us": cpu,
            "cpu_with_store_us": cpu_store,
        }
    if gpu is None:
        rows.append(["gpu", "-", "no GPU", "", "", ""])

    process = ProcessCollector(uss_every=0)
    uss_runs = max(20, args.runs // 20)
    uss = timings(process._process.memory_full_info, uss_runs)
    uss_cpu = cpu_per_call(process._process.memory_full_info, uss_runs)
    rows.append(
        [
            "  USS read (memory_full_info)",
            1,
            f"{median(uss):.1f}",
            f"{p90(uss):.1f}",
            f"{uss_cpu:.1f}",
            "",
        ]
    )
    results["uss_read"] = {"median_us": median(uss), "p90_us": p90(uss), "cpu_us": uss_cpu}
    without, with_cb = gc_callback_cost(args.runs)
    rows.append(["  gc.collect(0), no callback", "", f"{without:.1f}", "", "", ""])
    rows.append(["  gc.collect(0), pause callback", "", f"{with_cb:.1f}", "", "", ""])
    results["gc_callback"] = {"without_us": without, "with_us": with_cb}

    print(
        table(
            ["collector", "samples", "wall median", "wall p90", "CPU", "CPU + store"],
            rows,
        )
    )
    # USS every 60 collects adds its cost / 60 per second on average.
    amortized_uss = uss_cpu / 60
    per_second = total + amortized_uss
    print(
        f"CPU of all collectors + stores + USS/60: {per_second:.0f} µs per 1 s tick = "
        f"{per_second / 1e6 * 100:.3f}% of one core (target ≤ 0.5%, {BUDGET_US:.0f} µs)"
    )
    write_json(
        args.json,
        {"runs": args.runs, "collectors": results, "per_second_us": per_second},
    )


if __name__ == "__main__":
    main()
