"""perfsdk demo: a small simulated service under @perfsdk.timed, with live percentiles.

Run with ``make demo`` (or ``python examples/demo.py --seconds 8``). Four worker threads serve a mix
of requests whose latencies have a long tail; every second the demo prints the rolling-window table
that ``perfsdk.snapshot()`` gives any service, and at the end a since-start report.
"""

from __future__ import annotations

import argparse
import random
import threading
import time

import perfsdk
from perfsdk.tables import render_snapshot
from perfsdk.thresholds import ThresholdRule, ThresholdSet

requests_total = perfsdk.counter("demo_requests_total", help="Requests served")
in_flight = perfsdk.gauge("demo_in_flight", help="Requests being served")


@perfsdk.timed("demo_parse_seconds")
def parse(payload: bytes) -> int:
    return sum(payload) % 251


@perfsdk.timed("demo_handler_seconds", labels={"route": "/search"}, threshold=0.010)
def search(rng: random.Random) -> int:
    # mostly fast, sometimes slow: a lognormal body and a 1% tail of slow calls
    time.sleep(rng.lognormvariate(-6.5, 0.6) + (0.02 if rng.random() < 0.01 else 0.0))
    return parse(bytes(rng.getrandbits(8) for _ in range(64)))


@perfsdk.timed("demo_handler_seconds", labels={"route": "/checkout"}, threshold=0.010)
def checkout(rng: random.Random) -> None:
    time.sleep(rng.lognormvariate(-5.5, 0.4))
    if rng.random() < 0.02:
        raise RuntimeError("payment declined")


def worker(stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed)
    while not stop.is_set():
        in_flight.inc()
        try:
            if rng.random() < 0.8:
                search(rng)
            else:
                checkout(rng)
        except RuntimeError:
            pass
        finally:
            in_flight.dec()
            requests_total.inc()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=6.0, help="how long to run (default 6)")
    parser.add_argument("--threads", type=int, default=4, help="worker threads (default 4)")
    args = parser.parse_args()

    print(f"perfsdk {perfsdk.__version__}, hot path: {perfsdk.implementation()}")
    stop = threading.Event()
    threads = [
        threading.Thread(target=worker, args=(stop, i), daemon=True) for i in range(args.threads)
    ]
    for t in threads:
        t.start()
    rules = ThresholdSet(
        [
            ThresholdRule.make(
                "demo_handler_seconds", "p99", ">", 0.015, {"route": "/search"}, "search p99"
            ),
            ThresholdRule.make(
                "demo_handler_seconds",
                "error_ratio",
                ">",
                0.01,
                {"route": "/checkout"},
                "checkout errors",
            ),
        ]
    )
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        print(f"\n--- rolling window (last {perfsdk.get_registry().window_seconds:.0f} s) ---")
        print(render_snapshot(perfsdk.snapshot()))
    stop.set()
    for t in threads:
        t.join()

    snap = perfsdk.snapshot()
    print("\n=== report: since start ===")
    print(render_snapshot(snap, scope="total"))
    print("\n=== threshold checks (one native call) ===")
    for r in rules.evaluate(perfsdk.get_registry()):
        state = "BREACHED" if r.matched else "ok"
        print(
            f"{r.rule.name:<16} {r.rule.stat} {r.rule.op} {r.rule.value:g}: "
            f"observed {r.observed:.4g} -> {state}"
        )
    slow = snap.get("demo_handler_seconds", route="/search")
    if slow is not None and slow.total is not None:
        print(
            "\n/search calls slower than 10 ms (exact count): "
            f"{slow.total.above} of {slow.total.count}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
