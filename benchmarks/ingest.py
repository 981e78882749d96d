"""Throughput of ``perfsdk.kernels.ingest``: float64 values per second added to a sketch.

10,000,000 values per run, a fresh ``Sketch(0.01)`` each run, after one warm-up call (the first
call in a process compiles the kernels, or loads them from Numba's cache; that time is shown
apart). Reported: the median of 5 runs, for latency-like data (lognormal and Pareto, positive) and
for data of both signs (normal: half the values go to the mirrored negative store, and the branch
on the sign is unpredictable). For scale, ``Sketch.add_many`` on a Python list of 1,000,000 values.

    python benchmarks/ingest.py [--json PATH] [-n N] [--runs R]
"""

from __future__ import annotations

import time

import numpy as np
from _common import machine_line, median, parser, table, write_json

import perfsdk._accel as accel
from perfsdk import kernels


def main() -> None:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=10_000_000, help="values per run (10,000,000)")
    ap.add_argument("--runs", type=int, default=5, help="timed runs (5)")
    args = ap.parse_args()

    t0 = time.perf_counter()
    kernels.compile_kernels()
    first_call = time.perf_counter() - t0

    rng = np.random.default_rng(42)
    data = {
        "lognormal latencies": rng.lognormal(np.log(0.01), 1.5, args.n),
        "pareto latencies": (rng.pareto(1.5, args.n) + 1.0) * 0.001,
        "normal, both signs": rng.normal(0.0, 1.0, args.n),
    }
    rows, results = [], []
    for name, values in data.items():
        kernels.ingest(accel.Sketch(0.01), values[:100_000])  # warm-up
        times = []
        for _ in range(args.runs):
            sk = accel.Sketch(0.01)
            t = time.perf_counter()
            kernels.ingest(sk, values)
            times.append(time.perf_counter() - t)
            assert sk.count == args.n
        med = median(times)
        rows.append(
            [name, f"{args.n / med / 1e6:.1f}", f"{1e9 * med / args.n:.2f}", f"{med * 1e3:.0f}"]
        )
        results.append(
            {"data": name, "values": args.n, "seconds": times, "values_per_second": args.n / med}
        )

    one_by_one = data["lognormal latencies"][:1_000_000].tolist()
    sk = accel.Sketch(0.01)
    t = time.perf_counter()
    sk.add_many(one_by_one)
    add_many = time.perf_counter() - t
    rows.append(
        [
            f"Sketch.add_many, list of {len(one_by_one):,} ({accel.IMPLEMENTATION})",
            f"{len(one_by_one) / add_many / 1e6:.1f}",
            f"{1e9 * add_many / len(one_by_one):.2f}",
            f"{add_many * 1e3:.0f}",
        ]
    )

    print(machine_line())
    print(
        f"kernels.ingest of {args.n:,} float64 per run, median of {args.runs} runs; first call in "
        f"this process (compile or cache load): {first_call:.2f} s"
    )
    print(table(["data", "M values/s", "ns/value", "ms/run"], rows))
    write_json(
        args.json,
        {
            "benchmark": "ingest",
            "first_call_seconds": first_call,
            "results": results,
            "add_many_values_per_second": len(one_by_one) / add_many,
        },
    )


if __name__ == "__main__":
    main()
