"""Cost of a Prometheus scrape of 1,000 timer series: rendering, and serving over HTTP.

A registry holds ``--series`` timer series (default 1,000; two labels each), each with ``--obs``
lognormal observations (median 2.5 ms). Every series becomes 41 exposition lines (a summary of 5
quantiles, a 26-bucket histogram, sums, counts, errors). Each figure is the median of ``--scrapes``
timings (default 30); a client is ``urllib.request`` on the same machine, timed from the request to
the last byte of the body, one connection per scrape as Prometheus' HTTP/1.0 exchange has it.

Scenarios:

- *render, every series changed*: ``Renderer.render`` of a snapshot in which every series got one
  more observation since the previous render (the worst case: every histogram is recomputed).
- *render, nothing changed*: the same, with no new data (histogram text reused, summaries redone).
- *scrape, cached*: ``GET /metrics`` of a snapshot already rendered (every scrape after the first
  of one export), plain and gzip.
- *scrape, fresh export*: ``export()`` of a snapshot in which every series changed, then
  ``GET /metrics``: render + (gzip +) serve, what a scraper waits for at worst.

For scale: ``registry.snapshot(include_sketches=True)`` (the agent's tick, not part of a scrape)
and prometheus_client's ``generate_latest`` for as many ``Histogram`` series with the same 25
buckets (it has no summary quantiles).

    python benchmarks/scrape.py [--json PATH] [--series N] [--obs N] [--scrapes N]
"""

from __future__ import annotations

import gzip
import random
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from _common import build_timer_registry as build
from _common import machine_line, median, parser, table, write_json

import perfsdk
from perfsdk.exporters.exposition import DEFAULT_BUCKETS, Renderer
from perfsdk.exporters.prometheus import PrometheusExporter

TARGET_MS = 10.0


def touch(reg: perfsdk.Registry, series: list[Any]) -> None:
    now = reg.now()
    for s in series:
        s.record(0.004, now)


def fetch(url: str, gzip_ok: bool) -> bytes:
    headers = {"Accept-Encoding": "gzip"} if gzip_ok else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as r:
        return bytes(r.read())


def timed(runs: int, setup: Callable[[], Any], action: Callable[[Any], Any]) -> list[float]:
    times = []
    for _ in range(runs):
        arg = setup()
        t = time.perf_counter()
        action(arg)
        times.append(time.perf_counter() - t)
    return times


def prometheus_client_render(n_series: int, n_obs: int, runs: int) -> list[float] | None:
    try:
        import prometheus_client
    except ImportError:
        return None
    registry = prometheus_client.CollectorRegistry()
    hist = prometheus_client.Histogram(
        "api_request_seconds",
        "Request latency.",
        ["route", "method"],
        buckets=DEFAULT_BUCKETS,
        registry=registry,
    )
    rng = random.Random(42)
    for i in range(n_series):
        child = hist.labels(route=f"/api/v1/item/{i}", method="GET")
        for _ in range(n_obs):
            child.observe(rng.lognormvariate(-6.0, 1.0))
    return timed(runs, lambda: None, lambda _: prometheus_client.generate_latest(registry))


def main() -> None:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--series", type=int, default=1000, help="timer series (1,000)")
    ap.add_argument("--obs", type=int, default=200, help="observations per series (200)")
    ap.add_argument("--scrapes", type=int, default=30, help="timings per figure (30)")
    args = ap.parse_args()
    runs = args.scrapes

    reg, series = build(args.series, args.obs)
    renderer = Renderer()
    renderer.render(reg.snapshot(include_sketches=True))  # label text cached, as after a scrape

    def changed() -> Any:
        touch(reg, series)
        return reg.snapshot(include_sketches=True)

    results: dict[str, list[float]] = {}
    sizes: dict[str, int] = {}
    results["render, every series changed"] = timed(runs, changed, renderer.render)
    same = reg.snapshot(include_sketches=True)
    renderer.render(same)
    results["render, nothing changed"] = timed(
        runs, lambda: reg.snapshot(include_sketches=True), renderer.render
    )
    body = renderer.render(same)
    sizes["render, every series changed"] = sizes["render, nothing changed"] = len(body)

    exporter = PrometheusExporter({"http_port": 0})
    try:
        url = exporter.url
        assert url is not None
        exporter.export(changed())
        fetch(url, False)
        for gzip_ok in (False, True):
            label = "scrape, cached" + (", gzip" if gzip_ok else "")
            results[label] = timed(runs, lambda: None, lambda _, g=gzip_ok: fetch(url, g))
            sizes[label] = len(fetch(url, gzip_ok))
        for gzip_ok in (False, True):
            label = "scrape, fresh export" + (", gzip" if gzip_ok else "")
            results[label] = timed(
                runs, lambda: exporter.export(changed()), lambda _, g=gzip_ok: fetch(url, g)
            )
            got = fetch(url, gzip_ok)
            sizes[label] = len(got)
            if gzip_ok:
                assert gzip.decompress(got) == exporter.scrape()[0]
    finally:
        exporter.close()

    # A steady scraper (as Prometheus is: one scrape per scrape_interval): the export due just
    # before each expected scrape renders and gzips ahead on the exporting thread, so the timed
    # scrape itself only sends bytes. The render still happens once per scrape, off its clock.
    ahead = PrometheusExporter({"http_port": 0})
    try:
        url = ahead.url
        assert url is not None
        period = 0.3
        label = "scrape by a steady scraper, fresh export rendered ahead, gzip"
        times: list[float] = []
        last = time.monotonic()
        for i in range(runs + 3):
            ahead.export(changed())
            time.sleep(max(0.0, last + period - time.monotonic()))
            last = time.monotonic()
            t0 = time.perf_counter()
            got = fetch(url, True)
            if i >= 3:
                times.append(time.perf_counter() - t0)
        results[label] = times
        sizes[label] = len(got)
    finally:
        ahead.close()

    scale: dict[str, list[float]] = {
        "registry.snapshot(include_sketches=True)": timed(
            max(5, runs // 3), lambda: None, lambda _: reg.snapshot(include_sketches=True)
        )
    }
    peer = prometheus_client_render(args.series, args.obs, max(5, runs // 3))
    if peer is not None:
        scale["prometheus_client generate_latest, histograms only"] = peer

    rows = []
    for label, times in results.items():
        ms = median(times) * 1e3
        rows.append([label, f"{ms:.2f}", f"{max(times) * 1e3:.2f}", f"{sizes[label]:,}"])
    for label, times in scale.items():
        rows.append([f"for scale: {label}", f"{median(times) * 1e3:.2f}", "", ""])

    print(machine_line())
    print(
        f"{args.series:,} timer series × {args.obs} observations; median (and max) of {runs} "
        "timings per row; target: a scrape ≤ 10 ms"
    )
    print(table(["scenario", "median ms", "max ms", "body bytes"], rows))
    cached = median(results["scrape, cached, gzip"]) * 1e3
    fresh = median(results["scrape, fresh export, gzip"]) * 1e3
    steady = median(results["scrape by a steady scraper, fresh export rendered ahead, gzip"]) * 1e3
    print(
        f"cached scrape (gzip) {cached:.2f} ms: {'met' if cached <= TARGET_MS else 'missed'}; "
        f"steady scraper after a fresh export (rendered ahead) {steady:.2f} ms: "
        f"{'met' if steady <= TARGET_MS else 'missed'}; "
        f"unexpected scrape right after a fresh export (render + gzip + serve) {fresh:.2f} ms: "
        f"{'met' if fresh <= TARGET_MS else 'missed'}"
    )
    write_json(
        args.json,
        {
            "benchmark": "scrape",
            "series": args.series,
            "observations_per_series": args.obs,
            "target_ms": TARGET_MS,
            "results": [
                {
                    "scenario": label,
                    "seconds": times,
                    "median_ms": median(times) * 1e3,
                    "bytes": sizes.get(label),
                }
                for label, times in {**results, **scale}.items()
            ],
        },
    )


if __name__ == "__main__":
    main()
