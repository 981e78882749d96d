"""Scrape cost with many exited workers: perfsdk.multiprocess and prometheus_client's multiprocess.

For each count of exited workers (10, 100, 1,000 by default), real processes are forked from this
one; each records the same observations (20 timer series, ``--observations`` lognormal latencies
each) and exits. ``--live`` more workers record the same and stay alive for the whole round. Then:

- perfsdk: each worker exports its state with ``MultiprocessWriter``; a scrape is
  ``merged_snapshot(dir)`` plus ``render_exposition`` (the Prometheus text). The first scrape after
  the workers exit folds them into the archive (each exited worker is read once, ever); the
  steady-state scrapes read the archive and the living workers' files only.
- prometheus_client: each worker observes into a ``Histogram`` with a ``route`` label under
  ``PROMETHEUS_MULTIPROC_DIR``; a scrape is ``MultiProcessCollector`` + ``generate_latest``, which
  reads every worker's ``.db`` file, living or not, on every scrape.

Reported: milliseconds per scrape, the first and the median of the steady-state ones (at least
``--min-runs`` runs, more while within ``--budget`` seconds).

    python benchmarks/multiprocess_scrape.py [--json PATH] [--workers 10,100,1000] [--live 4]
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import random
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import machine_line, median, parser, table, write_json

# prometheus_client picks its multiprocess value class when it is imported: the variable must be
# set first. Each round points it at a fresh directory (read when a metric's value is created).
_PROM_BASE = tempfile.mkdtemp(prefix="prom-mp-")
os.environ["PROMETHEUS_MULTIPROC_DIR"] = _PROM_BASE

from prometheus_client import CollectorRegistry, Histogram, generate_latest  # noqa: E402
from prometheus_client.multiprocess import MultiProcessCollector  # noqa: E402

import perfsdk  # noqa: E402
from perfsdk.multiprocess import MultiprocessWriter, merged_snapshot  # noqa: E402

try:
    from perfsdk.exporters.prometheus import render_exposition

    RENDERED = True
except ImportError:  # the exporter is not there: time the merge alone
    RENDERED = False

    def render_exposition(snapshot: perfsdk.Snapshot) -> bytes:  # type: ignore[misc]
        return b""


SERIES = 20


def observations(seed: int, n: int) -> list[list[float]]:
    rnd = random.Random(seed)
    return [[rnd.lognormvariate(-4.5, 1.0) for _ in range(n)] for _ in range(SERIES)]


def perfsdk_worker(directory: str, seed: int, n: int) -> None:
    reg = perfsdk.Registry()
    for i, values in enumerate(observations(seed, n)):
        series = reg.series("request_seconds", {"route": f"/r{i}"}, help="Request latency.")
        for v in values:
            series.record(v, reg.now())
    MultiprocessWriter(directory).export(reg.snapshot(include_sketches=True))


def prometheus_worker(directory: str, seed: int, n: int) -> None:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    hist = Histogram("request_seconds", "Request latency.", ["route"], registry=None)
    for i, values in enumerate(observations(seed, n)):
        child = hist.labels(route=f"/r{i}")
        for v in values:
            child.observe(v)


def fork(work: Callable[[], None], *, stay: bool = False) -> int:
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            work()
            if stay:
                signal.pause()
        except BaseException:
            code = 1
        os._exit(code)
    return pid


def run_workers(work: Callable[[int], None], count: int, seed0: int) -> None:
    """Fork ``count`` workers, two at a time, and reap them (so none is left a zombie)."""
    running: list[int] = []
    for i in range(count):
        running.append(fork(functools.partial(work, seed0 + i)))
        if len(running) >= 2:
            _, status = os.waitpid(running.pop(0), 0)
            assert os.waitstatus_to_exitcode(status) == 0
    for pid in running:
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0


def start_live(work: Callable[[int], None], count: int, seed0: int) -> list[int]:
    return [fork(functools.partial(work, seed0 + i), stay=True) for i in range(count)]


def stop_live(pids: list[int]) -> None:
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    for pid in pids:
        os.waitpid(pid, 0)


def time_scrapes(scrape: Callable[[], int], min_runs: int, budget: float) -> dict[str, Any]:
    t = time.perf_counter()
    size = scrape()
    first = time.perf_counter() - t
    runs: list[float] = []
    started = time.perf_counter()
    while len(runs) < min_runs or time.perf_counter() - started < budget:
        t = time.perf_counter()
        scrape()
        runs.append(time.perf_counter() - t)
        if len(runs) >= 200:
            break
    return {
        "first_ms": first * 1e3,
        "steady_ms": median(runs) * 1e3,
        "runs": len(runs),
        "bytes": size,
    }


def wait_for_files(directory: Path, pattern: str, count: int) -> None:
    deadline = time.monotonic() + 60
    while len(list(directory.glob(pattern))) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"live workers did not write {count} {pattern} files in {directory}")
        time.sleep(0.01)


def one_round(count: int, live_count: int, n: int, min_runs: int, budget: float) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="perfsdk-mp-bench-"))
    ps_dir, pc_dir = root / "perfsdk", root / "prometheus"
    ps_dir.mkdir()
    pc_dir.mkdir()

    def ps_work(seed: int) -> None:
        perfsdk_worker(str(ps_dir), seed, n)

    def pc_work(seed: int) -> None:
        prometheus_worker(str(pc_dir), seed, n)

    def ps_scrape() -> int:
        return len(render_exposition(merged_snapshot(ps_dir)))

    def pc_scrape() -> int:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(pc_dir))
        return len(generate_latest(registry))

    try:
        t = time.perf_counter()
        run_workers(ps_work, count, 0)
        live = start_live(ps_work, live_count, 10**6)
        wait_for_files(ps_dir, "*.psnap", count + live_count)
        ps_setup = time.perf_counter() - t
        try:
            ps = time_scrapes(ps_scrape, min_runs, budget)
            check = merged_snapshot(ps_dir).get("request_seconds", route="/r0")
            assert check is not None and check.total is not None
            assert check.total.count == (count + live_count) * n, check.total.count
        finally:
            stop_live(live)

        t = time.perf_counter()
        run_workers(pc_work, count, 0)
        live = start_live(pc_work, live_count, 10**6)
        wait_for_files(pc_dir, "histogram_*.db", count + live_count)
        pc_setup = time.perf_counter() - t
        try:
            pc = time_scrapes(pc_scrape, min_runs, budget)
        finally:
            stop_live(live)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {
        "exited_workers": count,
        "live_workers": live_count,
        "series_per_worker": SERIES,
        "observations_per_series": n,
        "perfsdk": {**ps, "setup_seconds": ps_setup, "rendered": RENDERED},
        "prometheus_client": {**pc, "setup_seconds": pc_setup},
    }


def main() -> None:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--workers", default="10,100,1000", help="exited workers per round")
    ap.add_argument("--live", type=int, default=4, help="living workers in every round (4)")
    ap.add_argument("--observations", type=int, default=100, help="per series per worker (100)")
    ap.add_argument("--min-runs", type=int, default=5, help="steady-state scrapes, at least (5)")
    ap.add_argument("--budget", type=float, default=2.0, help="seconds of steady scrapes (2)")
    args = ap.parse_args()
    counts = [int(c) for c in args.workers.split(",")]
    n = args.observations

    print(machine_line())
    print(f"prometheus_client {importlib.metadata.version('prometheus_client')}")
    if not RENDERED:
        print("perfsdk.exporters.prometheus is missing: perfsdk times merged_snapshot() alone")
    rows, results = [], []
    for count in counts:
        res = one_round(count, args.live, n, args.min_runs, args.budget)
        ps, pc = res["perfsdk"], res["prometheus_client"]
        rows.append(
            [
                f"{count:,}",
                f"{ps['first_ms']:.2f}",
                f"{ps['steady_ms']:.2f}",
                f"{pc['first_ms']:.2f}",
                f"{pc['steady_ms']:.2f}",
                f"{pc['steady_ms'] / ps['steady_ms']:.0f}x",
            ]
        )
        results.append(res)
        print(f"  {count} exited workers: done", flush=True)
    shutil.rmtree(_PROM_BASE, ignore_errors=True)
    what = "merged_snapshot + render_exposition" if RENDERED else "merged_snapshot alone"
    print(
        f"\nms per scrape ({SERIES} timer series per worker, {n} observations each, "
        f"{args.live} living workers besides the exited ones); perfsdk: {what}; "
        "prometheus_client: MultiProcessCollector + generate_latest\n"
    )
    print(
        table(
            [
                "exited workers",
                "perfsdk first",
                "perfsdk steady",
                "prometheus_client first",
                "prometheus_client steady",
                "steady ratio",
            ],
            rows,
        )
    )
    write_json(args.json, {"benchmark": "multiprocess_scrape", "results": results})


if __name__ == "__main__":
    main()
