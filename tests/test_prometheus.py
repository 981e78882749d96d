"""The Prometheus exposition (checked with prometheus_client's parser, promtool, and against the
sketch itself), the HTTP endpoint, its plugin, and a real Prometheus server scraping it."""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import math
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import types
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

import perfsdk
from perfsdk import _accel
from perfsdk._speedups_py import key_of, multiplier_for, value_of
from perfsdk.errors import ConfigError
from perfsdk.exporters import exposition, prometheus
from perfsdk.exporters.exposition import (
    CONTENT_TYPE,
    DEFAULT_BUCKETS,
    Renderer,
    bucket_counts,
    check_buckets,
    format_value,
    render_exposition,
)
from perfsdk.exporters.prometheus import PrometheusExporter, accepts_gzip
from perfsdk.plugins import PluginManager
from perfsdk.records import Snapshot
from tests.conftest import FakeClock

QUANTILE_FIELDS = {"0.5": "p50", "0.9": "p90", "0.95": "p95", "0.99": "p99", "0.999": "p999"}
ODD = 'a\\b"c\nd'  # a label value needing every escape


def families(body: bytes) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(body.decode("utf-8"))}


def representative(x: float, alpha: float = 0.01) -> float:
    """The value a sketch reports for an observation x (the oracle for the bucket rule)."""
    if math.isnan(x) or math.isinf(x):
        raise AssertionError("not recorded")
    if abs(x) < 2.2250738585072014e-308:
        return 0.0
    mult = multiplier_for(alpha)
    v = value_of(key_of(abs(x), mult), mult)
    return v if x > 0 else -v


def oracle_counts(values: list[float], bounds: tuple[float, ...]) -> list[int]:
    reps = [representative(x) for x in values]
    return [sum(1 for r in reps if r <= b) for b in bounds] + [len(reps)]


def counts_from_bytes(
    impl: types.ModuleType, data: bytes, bounds: tuple[float, ...] = DEFAULT_BUCKETS
) -> tuple[list[int], float]:
    """(cumulative counts then +Inf, sum) as ``histogram_samples`` writes them for ``data``."""
    template = b"".join(b"b%d \n" % i for i in range(len(bounds) + 1)) + b"sum \ncount \n"
    text = impl.histogram_samples(data, exposition._Ladders(bounds), template).decode()
    values = [line.split(" ")[1] for line in text.splitlines()]
    assert len(values) == len(bounds) + 3 and values[-1] == values[-3]
    return [int(v) for v in values[:-2]], float(values[-2])


@pytest.fixture
def populated(registry: perfsdk.Registry, clock: FakeClock) -> tuple[perfsdk.Registry, list[float]]:
    """A registry with two timer series, a counter, gauges, errors and a dropped value."""
    values = [0.0004 * 1.07**i for i in range(120)] + [0.001, 0.0025, 2.5, 0.0]
    a = registry.series("checkout_seconds", {"route": "/a"}, help="Checkout latency.")
    b = registry.series("checkout_seconds", {"route": ODD}, help="Checkout latency.")
    for x in values:
        a.record(x, registry.now())
    b.record(0.003, registry.now())
    a.record_error(0.05, registry.now())  # an observation that is also an error
    values.append(0.05)
    a.record(math.nan, registry.now())
    registry.counter("jobs_total", {"queue": "mail"}, help="Jobs run.").inc(42)
    registry.gauge("queue_depth", help="Jobs waiting.\nMultiline \\ help").set(17.5)
    registry.gauge("temperature").set(math.inf)
    registry.gauge("unknown").set(math.nan)
    return registry, values


def test_exposition_parses_and_matches_the_snapshot(
    populated: tuple[perfsdk.Registry, list[float]],
) -> None:
    registry, values = populated
    snap = registry.snapshot(include_sketches=True)
    body = render_exposition(snap)
    fams = families(body)

    summary = fams["checkout_seconds"]
    assert summary.type == "summary"
    assert summary.documentation.startswith("Checkout latency.")
    for route in ("/a", ODD):
        rec = snap.get("checkout_seconds", route=route)
        assert rec is not None and rec.window is not None and rec.total is not None
        got = {
            s.labels["quantile"]: s.value
            for s in summary.samples
            if s.name == "checkout_seconds" and s.labels["route"] == route
        }
        assert set(got) == set(QUANTILE_FIELDS)
        for q, field in QUANTILE_FIELDS.items():
            assert got[q] == getattr(rec.window, field)  # the shortest repr round-trips exactly
        sums = {s.name: s.value for s in summary.samples if s.labels == {"route": route}}
        assert sums["checkout_seconds_sum"] == rec.total.sum
        assert sums["checkout_seconds_count"] == rec.total.count

    hist = fams["checkout_seconds_hist"]
    assert hist.type == "histogram"
    samples = [s for s in hist.samples if s.labels["route"] == "/a"]
    buckets = [s for s in samples if s.name == "checkout_seconds_hist_bucket"]
    les = [s.labels["le"] for s in buckets]
    assert les == [format_value(b) for b in DEFAULT_BUCKETS] + ["+Inf"]
    counts = [s.value for s in buckets]
    assert counts == sorted(counts)  # cumulative
    assert counts == oracle_counts(values, DEFAULT_BUCKETS)
    total = {s.name: s.value for s in samples if "le" not in s.labels}
    assert counts[-1] == total["checkout_seconds_hist_count"] == len(values)
    assert total["checkout_seconds_hist_sum"] == pytest.approx(sum(values))

    errors = fams["checkout_seconds_errors"]
    assert errors.type == "counter"
    assert {s.labels["route"]: s.value for s in errors.samples} == {"/a": 1, ODD: 0}
    dropped = fams["checkout_seconds_dropped"]
    assert [(s.labels, s.value) for s in dropped.samples] == [({"route": "/a"}, 1)]

    jobs = fams["jobs"]  # the parser strips a counter's _total from the family name
    assert jobs.type == "counter"
    assert [(s.name, s.labels, s.value) for s in jobs.samples] == [
        ("jobs_total", {"queue": "mail"}, 42)
    ]
    assert fams["queue_depth"].type == "gauge"
    assert fams["queue_depth"].documentation == "Jobs waiting.\nMultiline \\ help"
    assert fams["queue_depth"].samples[0].value == 17.5
    assert fams["temperature"].samples[0].value == math.inf
    assert math.isnan(fams["unknown"].samples[0].value)


def test_label_values_round_trip(registry: perfsdk.Registry) -> None:
    weird = ["", ODD, "\\", '"', "\n", "\\n", "100%", "%s %d", "ünïcødé ✓", "a,b=c}"]
    for i, value in enumerate(weird):
        registry.series("t_seconds", {"v": value}).record(0.001 * (i + 1), registry.now())
        registry.counter("c_total", {"v": value}).inc(i)
        registry.gauge("g", {"v": value}).set(i)
    fams = families(render_exposition(registry.snapshot(include_sketches=True)))
    for name, sample in (("t_seconds", "t_seconds_count"), ("c", "c_total"), ("g", "g")):
        seen = [s.labels["v"] for s in fams[name].samples if s.name == sample]
        assert sorted(seen) == sorted(weird), name
    hist = [s.labels["v"] for s in fams["t_seconds_hist"].samples if s.labels.get("le") == "+Inf"]
    assert sorted(hist) == sorted(weird)


def test_exact_text(registry: perfsdk.Registry) -> None:
    registry.series("op_seconds", {"k": "v"}).record(0.003, registry.now())
    registry.counter("hits_total").inc(2)
    snap = registry.snapshot(include_sketches=True)
    rec = snap.get("op_seconds", k="v")
    assert rec is not None and rec.window is not None
    q = format_value(rec.window.p50)
    text = render_exposition(snap).decode()
    assert text.startswith(
        "# HELP hits_total hits_total\n# TYPE hits_total counter\nhits_total 2.0\n"
    )
    assert (
        "# HELP op_seconds op_seconds (quantiles over the rolling window; sum and count since "
        "start)\n"
        "# TYPE op_seconds summary\n"
        f'op_seconds{{k="v",quantile="0.5"}} {q}\n'
        f'op_seconds{{k="v",quantile="0.9"}} {q}\n'
        f'op_seconds{{k="v",quantile="0.95"}} {q}\n'
        f'op_seconds{{k="v",quantile="0.99"}} {q}\n'
        f'op_seconds{{k="v",quantile="0.999"}} {q}\n'
        'op_seconds_sum{k="v"} 0.003\n'
        'op_seconds_count{k="v"} 1\n'
        "# HELP op_seconds_hist op_seconds (histogram since start; buckets from the sketch, "
        "see docs/exporters.md)\n"
        "# TYPE op_seconds_hist histogram\n"
        'op_seconds_hist_bucket{k="v",le="1e-06"} 0\n'
    ) in text
    assert 'op_seconds_hist_bucket{k="v",le="0.0025"} 0\n' in text
    assert 'op_seconds_hist_bucket{k="v",le="0.005"} 1\n' in text
    assert (
        'op_seconds_hist_bucket{k="v",le="100.0"} 1\n'
        'op_seconds_hist_bucket{k="v",le="+Inf"} 1\n'
        'op_seconds_hist_sum{k="v"} 0.003\n'
        'op_seconds_hist_count{k="v"} 1\n'
    ) in text
    assert text.endswith(
        "# HELP op_seconds_errors_total Observations of op_seconds recorded as errors, since "
        "start.\n"
        "# TYPE op_seconds_errors_total counter\n"
        'op_seconds_errors_total{k="v"} 0\n'
    )
    assert text.count("\n") == 3 + 2 + 7 + 2 + 26 + 2 + 3


def test_empty_registry_renders_nothing(registry: perfsdk.Registry) -> None:
    assert render_exposition(registry.snapshot(include_sketches=True)) == b""


def test_empty_window_gives_nan_quantiles_and_totals_remain(
    registry: perfsdk.Registry, clock: FakeClock
) -> None:
    registry.series("idle_seconds").record(0.002, registry.now())
    clock.advance(registry.window_seconds * 2)
    fams = families(render_exposition(registry.snapshot(include_sketches=True)))
    quantiles = [s for s in fams["idle_seconds"].samples if "quantile" in s.labels]
    assert len(quantiles) == 5 and all(math.isnan(s.value) for s in quantiles)
    counts = {s.name: s.value for s in fams["idle_seconds"].samples if not s.labels}
    assert counts["idle_seconds_count"] == 1
    inf = [s for s in fams["idle_seconds_hist"].samples if s.labels.get("le") == "+Inf"]
    assert inf[0].value == 1


def test_without_sketches_there_is_no_histogram(registry: perfsdk.Registry) -> None:
    registry.series("x_seconds").record(0.002, registry.now())
    fams = families(render_exposition(registry.snapshot()))
    assert "x_seconds" in fams and "x_seconds_hist" not in fams


def test_clashing_names_are_left_out_and_logged_once(
    registry: perfsdk.Registry, caplog: pytest.LogCaptureFixture
) -> None:
    registry.series("clash").record(0.001, registry.now())
    registry.gauge("clash_count").set(5)  # would duplicate the summary's clash_count
    registry.gauge("clash_hist_bucket").set(1)  # would duplicate the histogram's samples
    exposition._clash_logged.discard("clash_count")
    exposition._clash_logged.discard("clash_hist_bucket")
    snap = registry.snapshot(include_sketches=True)
    with caplog.at_level(logging.WARNING, logger="perfsdk.exporters"):
        body = render_exposition(snap)
        render_exposition(snap)
    text = body.decode()
    assert "clash_count 1\n" in text and "clash_count 5" not in text
    assert "# TYPE clash_hist_bucket" not in text
    warnings = [r.getMessage() for r in caplog.records if r.name == "perfsdk.exporters"]
    assert len(warnings) == 2, warnings
    assert "'clash_count'" in warnings[0] and "rename" in warnings[0]
    assert set(families(body)) == {"clash", "clash_hist", "clash_errors"}


def test_reserved_label_names_are_renamed(registry: perfsdk.Registry) -> None:
    registry.series("odd_seconds", {"le": "x", "quantile": "y"}).record(0.001, registry.now())
    fams = families(render_exposition(registry.snapshot(include_sketches=True)))
    sample = next(s for s in fams["odd_seconds"].samples if "quantile" in s.labels)
    assert sample.labels["exported_le"] == "x" and sample.labels["exported_quantile"] == "y"
    bucket = next(s for s in fams["odd_seconds_hist"].samples if "le" in s.labels)
    assert bucket.labels["exported_le"] == "x"


def test_format_value() -> None:
    assert format_value(math.nan) == "NaN"
    assert format_value(math.inf) == "+Inf"
    assert format_value(-math.inf) == "-Inf"
    assert format_value(3) == "3"
    assert format_value(0.1) == "0.1"
    assert format_value(1e-06) == "1e-06"
    assert float(format_value(1 / 3)) == 1 / 3


def test_default_buckets_and_check_buckets() -> None:
    assert DEFAULT_BUCKETS[0] == 1e-6 and DEFAULT_BUCKETS[-1] == 100.0
    assert len(DEFAULT_BUCKETS) == 25
    assert [format_value(b) for b in DEFAULT_BUCKETS[9:12]] == ["0.001", "0.0025", "0.005"]
    assert check_buckets([0.1, 1]) == (0.1, 1.0)
    for bad in ([], [0.0], [-1.0], [1.0, math.inf], [2.0, 1.0], [1.0, 1.0], [math.nan]):
        with pytest.raises(ConfigError):
            check_buckets(bad)


def test_custom_buckets(registry: perfsdk.Registry) -> None:
    values = [0.05, 0.2, 0.7, 3.0]
    s = registry.series("r_seconds")
    for x in values:
        s.record(x, registry.now())
    snap = registry.snapshot(include_sketches=True)
    fams = families(render_exposition(snap, buckets=(0.1, 1.0)))
    buckets = [s for s in fams["r_seconds_hist"].samples if "le" in s.labels]
    assert [(s.labels["le"], s.value) for s in buckets] == [("0.1", 1), ("1.0", 3), ("+Inf", 4)]


values_strategy = st.lists(
    st.one_of(
        st.floats(min_value=1e-9, max_value=1e4),
        st.sampled_from([0.0, 1e-6, 0.0025, 0.1, 1.0, 100.0, 150.0]),
        st.floats(min_value=-1.0, max_value=-1e-9),
    ),
    max_size=60,
)


@settings(max_examples=100, deadline=None)
@given(
    values=values_strategy, doublings=st.sampled_from([0, 1, 8]), max_bins=st.sampled_from([0, 16])
)
def test_histogram_counts_follow_the_rule(
    impl: types.ModuleType, values: list[float], doublings: int, max_bins: int
) -> None:
    """Every way of counting (reading the bytes directly, Sketch.cumulative_counts, and through
    Sketch.bins) agrees with the oracle, for both twins, including bucket counts >= 128 and
    negative values."""
    sk = impl.Sketch(0.01, max_bins)
    sk.add_many(values)
    for _ in range(doublings):  # counts of 2**8 per bucket: multi-byte varints
        sk.merge(sk.copy())
    data = sk.to_bytes()
    pos, neg, zero = sk.bins()
    mult = multiplier_for(0.01)
    via_bins = [
        zero + sum(neg.values()) + sum(c for k, c in pos.items() if value_of(k, mult) <= b)
        for b in DEFAULT_BUCKETS
    ] + [sk.count]
    assert list(bucket_counts(impl.Sketch.from_bytes(data), DEFAULT_BUCKETS)) == via_bins
    assert list(bucket_counts(sk, DEFAULT_BUCKETS)) == via_bins
    counts, total_sum = counts_from_bytes(impl, data)
    assert counts == via_bins
    assert total_sum == sk.sum or (math.isnan(total_sum) and math.isnan(sk.sum))
    if max_bins == 0:  # a capped sketch folds its lowest buckets, so the oracle differs
        assert via_bins == [c * 2**doublings for c in oracle_counts(values, DEFAULT_BUCKETS)]


@settings(max_examples=300, deadline=None)
@given(
    bound=st.sampled_from(DEFAULT_BUCKETS),
    offset=st.floats(min_value=-0.03, max_value=0.03),
)
def test_observations_near_a_bound_miss_it_by_at_most_alpha(bound: float, offset: float) -> None:
    """The documented consequence of the rule: counted in le=b means x < b / (1 - alpha), left
    out means x > b / (1 + alpha); and the same x always goes to the same side."""
    x = bound * (1 + offset)
    counts = oracle_counts([x], (bound,))
    sk = _accel.Sketch(0.01)
    sk.add(x)
    assert counts_from_bytes(_accel, sk.to_bytes(), (bound,))[0] == counts
    if counts[0]:
        assert x < bound / (1 - 0.01)
    else:
        assert x > bound / (1 + 0.01)


def test_series_sketch_counts(registry: perfsdk.Registry) -> None:
    """A series' total sketch (max_bins 4096) read from its bytes agrees with the oracle."""
    s = registry.series("s_seconds")
    values = [1e-5 * 1.03**i for i in range(400)]
    for x in values:
        s.record(x, registry.now())
    data = registry.snapshot(include_sketches=True).series[0].total_sketch
    assert data is not None
    assert counts_from_bytes(_accel, data)[0] == oracle_counts(values, DEFAULT_BUCKETS)


def test_renderer_reuses_text_of_unchanged_series(registry: perfsdk.Registry) -> None:
    a = registry.series("a_seconds")
    b = registry.series("b_seconds")
    a.record(0.001, registry.now())
    b.record(0.002, registry.now())
    renderer = Renderer()
    first = renderer.render(registry.snapshot(include_sketches=True))
    assert renderer.render(registry.snapshot(include_sketches=True)) == first
    b.record(0.2, registry.now())
    third = renderer.render(registry.snapshot(include_sketches=True))
    assert third == render_exposition(registry.snapshot(include_sketches=True))
    fams = families(third)
    inf = {s.name: s.value for s in fams["b_seconds_hist"].samples if s.labels.get("le") == "+Inf"}
    assert inf == {"b_seconds_hist_bucket": 2}


def test_promtool_accepts_the_exposition(
    populated: tuple[perfsdk.Registry, list[float]],
) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (apt-get install -y prometheus)")
    body = render_exposition(populated[0].snapshot(include_sketches=True))
    proc = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, timeout=30, check=False
    )
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()


# --- the HTTP endpoint --------------------------------------------------------------------------


def get(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> Any:
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        return urllib.request.urlopen(request, timeout=10)
    except urllib.error.HTTPError as exc:
        return exc


@pytest.fixture
def exporter() -> Iterator[PrometheusExporter]:
    exp = PrometheusExporter({"http_port": 0})
    yield exp
    exp.close()


def test_endpoint_serves_metrics(
    exporter: PrometheusExporter, populated: tuple[perfsdk.Registry, list[float]]
) -> None:
    assert exporter.serving and exporter.port and exporter.port > 0
    assert exporter.url == f"http://127.0.0.1:{exporter.port}/metrics"
    before = get(exporter.url)
    assert before.status == 200 and before.read() == b""

    snap = populated[0].snapshot(include_sketches=True)
    exporter.export(snap)
    resp = get(exporter.url)
    assert resp.status == 200
    assert (
        resp.headers["Content-Type"] == CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"
    )
    assert resp.headers.get("Content-Encoding") is None
    body = resp.read()
    assert body == render_exposition(snap)
    assert int(resp.headers["Content-Length"]) == len(body)

    zipped = get(exporter.url, {"Accept-Encoding": "gzip, deflate"})
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(zipped.read()) == body
    refused = get(exporter.url, {"Accept-Encoding": "gzip;q=0, identity"})
    assert refused.headers.get("Content-Encoding") is None and refused.read() == body

    with_query = get(exporter.url + "?name[]=x")
    assert with_query.status == 200 and with_query.read() == body
    head = get(exporter.url, method="HEAD")
    assert head.status == 200 and head.read() == b""
    assert int(head.headers["Content-Length"]) == len(body)

    health = get(f"http://127.0.0.1:{exporter.port}/healthz")
    assert health.status == 200 and health.read() == b"ok\n"
    missing = get(f"http://127.0.0.1:{exporter.port}/nope")
    assert missing.status == 404
    assert exporter.scrapes == 6


def test_endpoint_renders_each_snapshot_once(
    exporter: PrometheusExporter, registry: perfsdk.Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry.series("a_seconds").record(0.001, registry.now())
    calls: list[Snapshot] = []
    real = exporter._renderer.render

    def counting(snapshot: Snapshot) -> bytes:
        calls.append(snapshot)
        return real(snapshot)

    monkeypatch.setattr(exporter._renderer, "render", counting)
    first = registry.snapshot(include_sketches=True)
    exporter.export(first)
    assert calls == []  # rendered lazily, on the first scrape
    assert exporter.url is not None
    bodies = {get(exporter.url).read() for _ in range(3)}
    get(exporter.url, {"Accept-Encoding": "gzip"}).read()
    assert calls == [first] and len(bodies) == 1
    second = registry.snapshot(include_sketches=True)
    exporter.export(second)
    exporter.export(second)
    get(exporter.url).read()
    assert calls == [first, second]


def test_concurrent_scrapes(exporter: PrometheusExporter, registry: perfsdk.Registry) -> None:
    for i in range(50):
        registry.series("c_seconds", {"i": str(i)}).record(0.001 * (i + 1), registry.now())
    exporter.export(registry.snapshot(include_sketches=True))
    expected = render_exposition(registry.snapshot(include_sketches=True))
    assert exporter.url is not None
    url = exporter.url
    results: list[bytes] = []

    def scrape() -> None:
        for _ in range(5):
            results.append(get(url).read())

    threads = [threading.Thread(target=scrape) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 40 and set(results) == {expected}


def test_port_in_use_is_logged_once_and_never_raises(
    exporter: PrometheusExporter,
    registry: perfsdk.Registry,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry.series("a_seconds").record(0.001, registry.now())
    snap = registry.snapshot(include_sketches=True)
    with caplog.at_level(logging.INFO, logger="perfsdk.exporters"):
        second = PrometheusExporter({"http_port": exporter.port})
        second.export(snap)
        second.export(snap)
    try:
        assert not second.serving and second.port is None and second.url is None
        infos = [r for r in caplog.records if "already in use" in r.getMessage()]
        assert len(infos) == 1 and infos[0].levelno == logging.INFO
        # it still renders on demand, for whoever asks in-process
        assert second.scrape() == (render_exposition(snap), None)

        # the owner goes away: the next export after REBIND_INTERVAL takes the port over
        port = exporter.port
        exporter.close()
        monkeypatch.setattr(prometheus, "REBIND_INTERVAL", 0.0)
        second._next_bind = time.monotonic()
        second.export(snap)
        assert second.serving and second.port == port
        assert second.url is not None
        assert get(second.url).read() == render_exposition(snap)
    finally:
        second.close()


def test_bad_host_or_port_disables_the_endpoint(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="perfsdk.exporters"):
        bad_port = PrometheusExporter({"http_port": "not a port"})
        bad_host = PrometheusExporter({"http_host": "192.0.2.1", "http_port": 0})  # not ours
    for exp in (bad_port, bad_host):
        assert not exp.serving
        exp.export(Snapshot(0.0, (), "python"))
        exp.close()
    warnings = [r for r in caplog.records if r.name == "perfsdk.exporters"]
    assert len(warnings) == 2 and all(r.levelno == logging.WARNING for r in warnings)


def test_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    exp = PrometheusExporter({"http_host": "::1", "http_port": 0})
    try:
        assert exp.url == f"http://[::1]:{exp.port}/metrics"
        assert get(exp.url).status == 200
    finally:
        exp.close()


def test_close_stops_the_server(registry: perfsdk.Registry) -> None:
    exp = PrometheusExporter({"http_port": 0})
    url = exp.url
    assert url is not None
    exp.close()
    exp.close()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=5)
    exp.export(registry.snapshot())  # after close: accepted, nothing served, no rebind
    assert not exp.serving


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_lets_go_of_the_parents_socket(
    registry: perfsdk.Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A forked worker does not hold the parent's port: it can take it over once the parent
    closes (the child's inherited copy of the listening socket would otherwise keep it bound,
    with nobody accepting)."""
    registry.counter("forked_total").inc()
    snap = registry.snapshot()
    port = free_port()
    exporter = PrometheusExporter({"http_port": port})
    exporter.export(snap)
    assert exporter.port == port
    monkeypatch.setattr(prometheus, "REBIND_INTERVAL", 0.0)
    to_child_r, to_child_w = os.pipe()
    to_parent_r, to_parent_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report through the pipe, never return into pytest
        status = b"?"
        try:
            assert not exporter.serving and exporter.port is None
            exporter.export(snap)  # the parent still has the port: no server, no exception
            assert not exporter.serving
            os.write(to_parent_w, b"ready")
            assert os.read(to_child_r, 6) == b"closed"  # the parent let the port go
            exporter._next_bind = time.monotonic()
            exporter.export(snap)
            assert exporter.serving and exporter.port == port
            os.write(to_parent_w, b"serving")
            os.read(to_child_r, 4)  # until the parent has scraped us
            exporter.close()
            status = b"ok"
        except BaseException as exc:
            status = repr(exc).encode()[:200]
        finally:
            os.write(to_parent_w, b"|" + status)
            os._exit(0)
    try:
        assert os.read(to_parent_r, 5) == b"ready"
        assert exporter.url is not None
        assert b"forked_total" in get(exporter.url).read()  # the parent serves throughout
        exporter.close()
        os.write(to_child_w, b"closed")
        assert os.read(to_parent_r, 7) == b"serving"
        assert b"forked_total" in get(f"http://127.0.0.1:{port}/metrics").read()  # the child
        os.write(to_child_w, b"done")
        assert os.read(to_parent_r, 300) == b"|ok"
    finally:
        exporter.close()
        os.waitpid(pid, 0)
        for fd in (to_child_r, to_child_w, to_parent_r, to_parent_w):
            os.close(fd)


@pytest.fixture
def fake_multiprocess(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    module = types.ModuleType("perfsdk.multiprocess")
    monkeypatch.setitem(sys.modules, "perfsdk.multiprocess", module)
    return module


def test_multiprocess_dir_serves_the_merged_snapshot(
    tmp_path: Path, registry: perfsdk.Registry, fake_multiprocess: types.ModuleType
) -> None:
    registry.counter("merged_total").inc(7)
    merged = registry.snapshot(include_sketches=True)
    asked: list[str] = []

    def merged_snapshot(directory: str) -> Snapshot:
        asked.append(directory)
        return merged

    fake_multiprocess.merged_snapshot = merged_snapshot
    exp = PrometheusExporter({"http_port": 0, "multiprocess_dir": str(tmp_path)})
    try:
        exp.export(Snapshot(0.0, (), "python"))  # this process's own: not what is served
        assert exp.url is not None
        assert get(exp.url).read() == render_exposition(merged)
        zipped = get(exp.url, {"Accept-Encoding": "gzip"})
        assert gzip.decompress(zipped.read()) == render_exposition(merged)
        assert asked == [str(tmp_path)] * 2  # at every scrape
    finally:
        exp.close()


def test_multiprocess_with_the_real_module(tmp_path: Path, registry: perfsdk.Registry) -> None:
    """End to end with perfsdk.multiprocess: a process' state file, served merged."""
    multiprocess = pytest.importorskip("perfsdk.multiprocess")
    writer_type = getattr(multiprocess, "MultiprocessWriter", None)
    if writer_type is None:
        pytest.skip("perfsdk.multiprocess has no MultiprocessWriter")
    s = registry.series("mp_seconds", {"r": "x"})
    for i in range(50):
        s.record(0.001 * (i + 1), registry.now())
    registry.counter("mp_total").inc(5)
    writer_type(tmp_path).export(registry.snapshot(include_sketches=True))
    exp = PrometheusExporter({"http_port": 0, "multiprocess_dir": str(tmp_path)})
    try:
        assert exp.url is not None
        fams = families(get(exp.url).read())
        assert [x.value for x in fams["mp"].samples] == [5]
        inf = [x for x in fams["mp_seconds_hist"].samples if x.labels.get("le") == "+Inf"]
        assert [(x.labels, x.value) for x in inf] == [({"r": "x", "le": "+Inf"}, 50)]
    finally:
        exp.close()


def test_multiprocess_import_failure_falls_back(
    tmp_path: Path,
    registry: perfsdk.Registry,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setitem(sys.modules, "perfsdk.multiprocess", None)  # import raises ImportError
    registry.counter("own_total").inc(3)
    own = registry.snapshot(include_sketches=True)
    exp = PrometheusExporter({"http_port": 0, "multiprocess_dir": str(tmp_path)})
    try:
        exp.export(own)
        assert exp.url is not None
        with caplog.at_level(logging.WARNING, logger="perfsdk.exporters"):
            assert get(exp.url).read() == render_exposition(own)
            assert get(exp.url).read() == render_exposition(own)
        records = [r for r in caplog.records if r.name == "perfsdk.exporters"]
        assert len(records) == 1 and "serving this process" in records[0].getMessage()
    finally:
        exp.close()


def test_multiprocess_merge_error_answers_500(
    tmp_path: Path, fake_multiprocess: types.ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    def merged_snapshot(directory: str) -> Snapshot:
        raise ValueError("corrupt state file")

    fake_multiprocess.merged_snapshot = merged_snapshot
    exp = PrometheusExporter({"http_port": 0, "multiprocess_dir": str(tmp_path)})
    try:
        assert exp.url is not None
        with caplog.at_level(logging.WARNING, logger="perfsdk.exporters"):
            first = get(exp.url)
            get(exp.url)
        assert first.status == 500 and b"corrupt state file" in first.read()
        assert len([r for r in caplog.records if r.name == "perfsdk.exporters"]) == 1
    finally:
        exp.close()


def test_accepts_gzip() -> None:
    assert accepts_gzip("gzip")
    assert accepts_gzip("deflate, GZIP;q=0.5")
    assert accepts_gzip("*")
    assert accepts_gzip("x-gzip")
    assert not accepts_gzip("")
    assert not accepts_gzip("identity")
    assert not accepts_gzip("gzip;q=0")
    assert not accepts_gzip("gzip;q=0, *")
    assert not accepts_gzip("*;q=0")
    assert not accepts_gzip("br, deflate")


def test_plugin_contributes_the_endpoint() -> None:
    manager = PluginManager(
        builtins=("perfsdk.builtin.prometheus_exporter",), load_entrypoints=False, env={}
    )
    exporters = manager.hooks.exporters({"http_port": 0})
    try:
        assert [type(e) for e in exporters] == [PrometheusExporter]
        assert exporters[0].name == "prometheus"
    finally:
        for e in exporters:
            e.close()
    for off in (False, "false", "0", "off"):
        assert manager.hooks.exporters({"http_enabled": off, "http_port": 0}) == []
    assert manager.errors == {}


def test_plugin_can_be_disabled_by_short_name() -> None:
    manager = PluginManager(
        builtins=("perfsdk.builtin.prometheus_exporter",),
        load_entrypoints=False,
        env={"PERFSDK_DISABLED_PLUGINS": "prometheus_exporter"},
    )
    assert manager.hooks.exporters({"http_port": 0}) == []


# --- a real Prometheus server -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prom_api(base: str, path: str, **params: str) -> Any:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}" if params else f"{base}{path}"
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


@contextlib.contextmanager
def prometheus_server(target_port: int, tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("prometheus") or (
        "/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None
    )
    if binary is None:
        pytest.skip(
            "the prometheus binary is not installed; `apt-get install -y prometheus` "
            "(make test installs it) to run this test"
        )
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n"
        "  scrape_interval: 1s\n"
        "  scrape_timeout: 1s\n"
        "  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: perfsdk\n"
        "    static_configs:\n"
        f"      - targets: ['127.0.0.1:{target_port}']\n"
    )
    port = free_port()
    log_path = tmp_path / "prometheus.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        yield f"http://127.0.0.1:{port}"
    except BaseException:
        sys.stderr.write(log_path.read_text(errors="replace")[-4000:])
        raise
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def wait_for(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = condition()
        except (OSError, ValueError, KeyError, IndexError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


@pytest.mark.slow
def test_real_prometheus_scrapes_the_endpoint(
    exporter: PrometheusExporter, registry: perfsdk.Registry, tmp_path: Path
) -> None:
    s = registry.series("checkout_seconds", {"route": "/cart"})
    for i in range(1000):
        s.record(0.001 * (1 + i % 100), registry.now())
    s.record_error(0.0005, registry.now())
    registry.counter("jobs_total", {"queue": "mail"}).inc(42)
    snap = registry.snapshot(include_sketches=True)
    exporter.export(snap)
    rec = snap.get("checkout_seconds", route="/cart")
    assert rec is not None and rec.window is not None and rec.total is not None
    assert exporter.port is not None

    with prometheus_server(exporter.port, tmp_path) as base:

        def target_up() -> bool:
            targets = prom_api(base, "/api/v1/targets")["data"]["activeTargets"]
            return any(t["health"] == "up" for t in targets)

        wait_for(target_up, 60, "Prometheus to scrape the perfsdk target")

        def query(expr: str) -> list[Any]:
            answer = prom_api(base, "/api/v1/query", query=expr)
            assert answer["status"] == "success", answer
            return list(answer["data"]["result"])

        jobs = wait_for(lambda: query('jobs_total{queue="mail"}'), 10, "jobs_total")
        assert float(jobs[0]["value"][1]) == 42
        assert jobs[0]["metric"]["job"] == "perfsdk"
        p99 = query('checkout_seconds{route="/cart",quantile="0.99"}')
        assert float(p99[0]["value"][1]) == rec.window.p99
        count = query('checkout_seconds_count{route="/cart"}')
        assert float(count[0]["value"][1]) == rec.total.count == 1001
        inf = query('checkout_seconds_hist_bucket{route="/cart",le="+Inf"}')
        assert float(inf[0]["value"][1]) == 1001
        errors = query('checkout_seconds_errors_total{route="/cart"}')
        assert float(errors[0]["value"][1]) == 1
        # Prometheus' own estimate from our buckets lands within the bucket holding the p99
        estimate = query('histogram_quantile(0.99, checkout_seconds_hist_bucket{route="/cart"})')
        assert 0.05 < float(estimate[0]["value"][1]) <= 0.1
        health = query('up{job="perfsdk"}')
        assert float(health[0]["value"][1]) == 1


def test_renderer_caches_follow_new_series_and_changes(
    registry: perfsdk.Registry, clock: FakeClock
) -> None:
    """A renderer kept across snapshots writes what a fresh one writes, as series come, change,
    go idle and leave the window, whatever the order they sort in."""
    renderer = Renderer()
    routes = ["/m", "/a", "/z", "/b", "/m2"]
    for step, route in enumerate(routes):
        registry.series("req_seconds", {"route": route}).record(0.001 * (step + 1), clock())
        for again in range(3):
            if again == 1:
                registry.series("req_seconds", {"route": "/a"}).record(0.5, clock())
            clock.advance(25.0)
            snap = registry.snapshot(include_sketches=True)
            assert renderer.render(snap) == Renderer().render(snap)


def test_steady_scraper_is_served_a_body_rendered_ahead() -> None:
    """Three evenly spaced scrapes make the next export render ahead; the scrape only sends."""
    import time as _time

    from perfsdk.exporters.prometheus import PrometheusExporter

    reg = perfsdk.Registry()
    reg.series("ahead_seconds").record(0.01, reg.now())
    exp = PrometheusExporter({"http_port": 0})
    try:
        calls: list[int] = []
        real_render = exp._renderer.render

        def counting(snapshot: perfsdk.Snapshot) -> bytes:
            calls.append(1)
            return real_render(snapshot)

        exp._renderer.render = counting  # type: ignore[method-assign]
        for i in range(3):
            if i:
                _time.sleep(0.3)
            exp.export(reg.snapshot(include_sketches=True))
            exp.scrape(gzip_ok=True)
        rendered_on_scrape = len(calls)
        exp.export(reg.snapshot(include_sketches=True))  # due before the 4th scrape: renders now
        assert len(calls) == rendered_on_scrape + 1
        body, encoding = exp.scrape(gzip_ok=True)
        assert encoding == "gzip" and len(calls) == rendered_on_scrape + 1  # nothing rendered
        import gzip as _gzip

        assert b"ahead_seconds_count 1" in _gzip.decompress(body)
    finally:
        exp.close()
