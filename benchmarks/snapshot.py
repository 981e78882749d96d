"""Cost of ``registry.snapshot()`` for 1,000 timer series: what the agent pays every tick.

A registry holds ``--series`` timer series (default 1,000; two labels each), each with ``--obs``
lognormal observations (median 2.5 ms). Each figure is the median of ``--runs`` timings (default
30) of one ``registry.snapshot(...)``, in ms per snapshot of all the series.

Scenarios:

- *all changed*: every series got one more observation since the previous snapshot (a busy
  service: every series is recomputed).
- *10% changed*: one series in ten got one more observation.
- *none changed*: no new data since the previous snapshot (an idle service, or series that are
  rarely called: what is already known is reused).

each with ``include_sketches=True`` (the agent's tick: the serialised sketches the exporters use)
and ``False`` (``perfsdk.snapshot()``).

    python benchmarks/snapshot.py [--json PATH] [--series N] [--obs N] [--runs N]
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from _common import build_timer_registry as build
from _common import machine_line, median, parser, table, write_json

#: The agent's overhead budget is 0.5% of one core at one tick a second: 5 ms a tick in all.
BUDGET_MS = 5.0


def timed(runs: int, setup: Callable[[], Any], action: Callable[[], Any]) -> list[float]:
    times = []
    for _ in range(runs):
        setup()
        t = time.perf_counter()
        action()
        times.append(time.perf_counter() - t)
    return times


def main() -> None:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--series", type=int, default=1000, help="timer series (1,000)")
    ap.add_argument("--obs", type=int, default=200, help="observations per series (200)")
    ap.add_argument("--runs", type=int, default=30, help="timings per figure (30)")
    args = ap.parse_args()

    reg, series = build(args.series, args.obs)
    tenth = series[::10]

    def touch(which: list[Any]) -> Callable[[], None]:
        def run() -> None:
            now = reg.now()
            for s in which:
                s.record(0.004, now)

        return run

    scenarios = {
        "all changed": touch(series),
        "10% changed": touch(tenth),
        "none changed": lambda: None,
    }
    results: dict[str, list[float]] = {}
    for sketches in (True, False):
        for label, setup in scenarios.items():
            reg.snapshot(include_sketches=sketches)  # the previous tick
            key = f"{label}, include_sketches={sketches}"
            results[key] = timed(
                args.runs, setup, lambda s=sketches: reg.snapshot(include_sketches=s)
            )

    rows = []
    for label, times in results.items():
        ms = median(times) * 1e3
        rows.append(
            [label, f"{ms:.2f}", f"{min(times) * 1e3:.2f}", f"{ms / args.series * 1e3:.2f}"]
        )
    print(machine_line())
    print(
        f"{args.series:,} timer series × {args.obs} observations; median (and min) of "
        f"{args.runs} snapshots per row"
    )
    print(table(["scenario", "median ms", "min ms", "µs/series"], rows))
    idle = median(results["none changed, include_sketches=True"]) * 1e3
    busy = median(results["all changed, include_sketches=True"]) * 1e3
    print(
        f"agent tick (include_sketches=True) at 1 s: {idle / 10:.2f}% of a core idle, "
        f"{busy / 10:.2f}% with every series changed (budget for the whole agent: "
        f"{BUDGET_MS / 10:.1f}%)"
    )
    write_json(
        args.json,
        {
            "benchmark": "snapshot",
            "series": args.series,
            "observations_per_series": args.obs,
            "results": [
                {"scenario": label, "seconds": times, "median_ms": median(times) * 1e3}
                for label, times in results.items()
            ],
        },
    )


if __name__ == "__main__":
    main()
