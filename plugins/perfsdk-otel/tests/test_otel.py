"""perfsdk-otel: OTLP/HTTP export checked against a local receiver that decodes the protobuf.

The receiver is ``http.server`` on 127.0.0.1 (ephemeral port), decoding each body with
``ExportMetricsServiceRequest``. ``tests/test_otel_plugin.py`` in the perfsdk checkout runs these
same tests as part of the main suite.
"""

from __future__ import annotations

import importlib.metadata
import logging
import math
import random
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import perfsdk_otel
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.metrics.v1 import metrics_pb2
from perfsdk_otel import (
    OtlpExporter,
    OtlpExportError,
    exponential_point,
    otel_index,
    parse_headers,
    scale_for,
)
from perfsdk_otel.histogram import MAX_SCALE, bucket_base

import perfsdk
from perfsdk import _accel
from perfsdk._speedups_py import Sketch as PySketch
from perfsdk.errors import ConfigError
from perfsdk.plugins import PluginManager
from perfsdk.records import Snapshot

ALPHA = 0.01
CUMULATIVE = metrics_pb2.AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE


# -- a local OTLP/HTTP receiver --------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    request: ExportMetricsServiceRequest


@dataclass
class Receiver:
    url: str
    received: list[Received] = field(default_factory=list)
    status: int = 200
    reply: bytes = b""
    content_type: str = "application/x-protobuf"


def _handler(state: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            state.received.append(
                Received(
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    ExportMetricsServiceRequest.FromString(body),
                )
            )
            reply = state.reply or ExportMetricsServiceResponse().SerializeToString()
            self.send_response(state.status)
            self.send_header("Content-Type", state.content_type)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy between the exporter and 127.0.0.1, no OTEL_* resource settings from outside."""
    for name in (
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ):
        monkeypatch.delenv(name, raising=False)
    for name in ("OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}/v1/metrics"
    thread = threading.Thread(
        target=server.serve_forever, args=(0.02,), name="otlp-receiver", daemon=True
    )
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- reading OTel buckets back ---------------------------------------------------------------------


def _otel_quantile(point: metrics_pb2.ExponentialHistogramDataPoint, q: float) -> float:
    """What a consumer reads from the OTel buckets: the bucket holding rank floor-ish q*(n-1)
    (the sketch's own rank rule), reported as the harmonic mean of its bounds, within [min, max]."""
    base = bucket_base(point.scale)
    target = q * (point.count - 1)
    cumulative = 0
    negative = point.negative
    for i in reversed(range(len(negative.bucket_counts))):
        cumulative += negative.bucket_counts[i]
        if cumulative > target:
            lo, hi = base ** (negative.offset + i), base ** (negative.offset + i + 1)
            return float(min(max(-2 * lo * hi / (lo + hi), point.min), point.max))
    cumulative += point.zero_count
    if cumulative > target:
        return 0.0
    positive = point.positive
    for i, count in enumerate(positive.bucket_counts):
        cumulative += count
        if cumulative > target:
            lo, hi = base ** (positive.offset + i), base ** (positive.offset + i + 1)
            return float(min(max(2 * lo * hi / (lo + hi), point.min), point.max))
    return point.max


def _metrics(request: ExportMetricsServiceRequest) -> dict[str, metrics_pb2.Metric]:
    [resource_metrics] = request.resource_metrics
    [scope_metrics] = resource_metrics.scope_metrics
    assert scope_metrics.scope.name == "perfsdk"
    return {m.name: m for m in scope_metrics.metrics}


def _attributes(point: object) -> dict[str, str]:
    return {kv.key: kv.value.string_value for kv in point.attributes}  # type: ignore[attr-defined]


# -- the scale and the bucket index ----------------------------------------------------------------


def test_scale_for_one_percent_is_five() -> None:
    gamma = (1 + ALPHA) / (1 - ALPHA)
    assert scale_for(ALPHA) == 5
    assert bucket_base(5) >= gamma > bucket_base(6)  # 1.0219 >= 1.0202 > 1.0109


@pytest.mark.parametrize("alpha", [1e-6, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.3, 0.9])
def test_scale_is_the_finest_not_finer_than_the_sketch(alpha: float) -> None:
    gamma = (1 + alpha) / (1 - alpha)
    scale = scale_for(alpha)
    assert bucket_base(scale) >= gamma
    assert scale == MAX_SCALE or bucket_base(scale + 1) < gamma


@pytest.mark.parametrize("scale", [-2, 0, 3, 5, 6, 10])
def test_otel_index_follows_upper_inclusive_bounds(scale: int) -> None:
    base = bucket_base(scale)
    # Exact powers of two close their bucket: 2**k = base**(k * 2**scale).
    for k in (-20, -1, 0, 1, 7):
        index = otel_index(2.0**k, scale)
        assert index == math.ceil(k * 2.0**scale) - 1
    rng = random.Random(scale)
    for _ in range(2000):
        v = math.exp(rng.uniform(-30, 30))
        i = otel_index(v, scale)
        assert base**i < v * (1 + 1e-12) and v <= base ** (i + 1) * (1 + 1e-12)


# -- re-bucketing a sketch -------------------------------------------------------------------------


@pytest.mark.parametrize("make", [_accel.Sketch, PySketch], ids=["accel", "py"])
def test_point_from_sketch_is_exact_and_quantiles_stay_within_two_alpha(make: type) -> None:
    rng = random.Random(7)
    sketch = make(ALPHA)
    values = [rng.lognormvariate(-6, 1.5) for _ in range(20_000)]
    values += [0.0] * 37 + [-rng.lognormvariate(-4, 0.5) for _ in range(300)]
    for v in values:
        sketch.add(v)
    point = exponential_point(sketch, {"route": "/a"}, 1, 2)
    assert point.scale == 5
    assert (point.count, point.zero_count) == (len(values), 37)
    assert (point.min, point.max, point.sum) == (sketch.min, sketch.max, sketch.sum)
    assert sum(point.positive.bucket_counts) == 20_000
    assert sum(point.negative.bucket_counts) == 300
    # No empty bucket at either end: the offsets are the first populated indices.
    for buckets in (point.positive, point.negative):
        assert buckets.bucket_counts[0] > 0 and buckets.bucket_counts[-1] > 0

    pb = metrics_pb2.ExponentialHistogramDataPoint(
        count=point.count,
        zero_count=point.zero_count,
        scale=point.scale,
        min=point.min,
        max=point.max,
        positive=metrics_pb2.ExponentialHistogramDataPoint.Buckets(
            offset=point.positive.offset, bucket_counts=point.positive.bucket_counts
        ),
        negative=metrics_pb2.ExponentialHistogramDataPoint.Buckets(
            offset=point.negative.offset, bucket_counts=point.negative.bucket_counts
        ),
    )
    half_width = (bucket_base(5) - 1) / (bucket_base(5) + 1)  # 1.08%
    for q in (0.0, 0.001, 0.01, 0.2, 0.5, 0.9, 0.99, 0.999, 1.0):
        ours, theirs = _otel_quantile(pb, q), sketch.quantile(q)
        assert abs(ours - theirs) <= (half_width + 1e-9) * abs(theirs), q
        assert abs(ours - theirs) <= 2 * ALPHA * abs(theirs), q


def test_every_sketch_bucket_goes_to_the_bucket_of_its_representative() -> None:
    sketch = PySketch(ALPHA)
    for v in (0.001, 0.00102, 0.0011, 0.5, 0.9, 3.0):
        sketch.add(v)
    point = exponential_point(sketch, {}, 0, 0)
    expected: dict[int, int] = {}
    for q in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0):  # one value per rank: the sketch's own answers
        i = otel_index(sketch.quantile(q), 5)
        expected[i] = expected.get(i, 0) + 1
    got = {point.positive.offset + i: c for i, c in enumerate(point.positive.bucket_counts) if c}
    assert got == expected


def test_empty_sketch_has_no_point() -> None:
    with pytest.raises(ValueError, match="empty sketch"):
        exponential_point(PySketch(ALPHA), {}, 0, 0)


# -- end to end over HTTP --------------------------------------------------------------------------


def _snapshot(reg: perfsdk.Registry, n: int = 5000, seed: int = 3) -> Snapshot:
    rng = random.Random(seed)
    series = reg.series("checkout_seconds", {"route": "/checkout"}, help="Checkout latency.")
    for _ in range(n):
        series.record(rng.lognormvariate(-5, 0.8), reg.now())
    for _ in range(3):
        series.record(0.0, reg.now())
    reg.counter("jobs_total", {"queue": "mail"}, help="Jobs done.").inc(5)
    reg.sample_cell("process_cpu_seconds_total", {"mode": "user"}, "counter").set(1.25)
    reg.gauge("queue_depth").set(17)
    return reg.snapshot(include_sketches=True)


def test_export_reaches_the_receiver_as_otlp(receiver: Receiver) -> None:
    reg = perfsdk.Registry(alpha=ALPHA)
    snap = _snapshot(reg)
    exporter = OtlpExporter(
        {
            "otlp_endpoint": receiver.url,
            "otlp_service_name": "checkout-service",
            "otlp_headers": "authorization=Bearer%20s3cret,x-tenant=team-a",
            "otlp_timeout": 5.0,
        }
    )
    exporter.export(snap)

    [got] = receiver.received
    assert got.path == "/v1/metrics"
    assert got.headers["content-type"] == "application/x-protobuf"
    assert got.headers["authorization"] == "Bearer s3cret"
    assert got.headers["x-tenant"] == "team-a"
    [resource_metrics] = got.request.resource_metrics
    resource = {kv.key: kv.value.string_value for kv in resource_metrics.resource.attributes}
    assert resource["service.name"] == "checkout-service"
    assert resource["service.instance.id"]
    metrics = _metrics(got.request)

    # The timer: an exponential histogram at the scale matched to alpha, exact totals.
    timer = metrics["checkout_seconds"]
    assert timer.WhichOneof("data") == "exponential_histogram"
    assert timer.unit == "s" and timer.description == "Checkout latency."
    assert timer.exponential_histogram.aggregation_temporality == CUMULATIVE
    [point] = timer.exponential_histogram.data_points
    assert _attributes(point) == {"route": "/checkout"}
    record = snap.get("checkout_seconds", route="/checkout")
    assert record is not None and record.total is not None and record.total_sketch is not None
    sketch = _accel.Sketch.from_bytes(record.total_sketch)
    assert point.scale == scale_for(ALPHA) == 5
    assert point.count == record.total.count == 5003
    assert point.sum == record.total.sum
    assert point.min == record.total.min == 0.0
    assert point.max == record.total.max
    assert point.zero_count == 3
    assert sum(point.positive.bucket_counts) == point.count - point.zero_count
    assert not point.negative.bucket_counts
    assert point.start_time_unix_nano <= point.time_unix_nano
    assert point.time_unix_nano == round(snap.taken_at * 1e9)
    for q in (0.5, 0.9, 0.99, 0.999):
        assert _otel_quantile(point, q) == pytest.approx(sketch.quantile(q), rel=2 * ALPHA)
    errors = metrics["checkout_seconds_errors_total"]
    assert errors.sum.is_monotonic and errors.sum.aggregation_temporality == CUMULATIVE
    assert errors.sum.data_points[0].as_int == 0

    # Counters: monotonic cumulative Sums; gauges: Gauges.
    jobs = metrics["jobs_total"]
    assert jobs.WhichOneof("data") == "sum"
    assert jobs.sum.is_monotonic and jobs.sum.aggregation_temporality == CUMULATIVE
    [jobs_point] = jobs.sum.data_points
    assert jobs_point.as_double == 5.0 and _attributes(jobs_point) == {"queue": "mail"}
    cpu = metrics["process_cpu_seconds_total"]
    assert cpu.unit == "s" and cpu.sum.is_monotonic
    assert cpu.sum.data_points[0].as_double == 1.25
    depth = metrics["queue_depth"]
    assert depth.WhichOneof("data") == "gauge"
    assert depth.gauge.data_points[0].as_double == 17.0


def test_second_export_is_cumulative_with_the_same_start(receiver: Receiver) -> None:
    reg = perfsdk.Registry(alpha=ALPHA)
    exporter = OtlpExporter({"otlp_endpoint": receiver.url})
    exporter.export(_snapshot(reg, n=100, seed=1))
    time.sleep(0.01)
    exporter.export(_snapshot(reg, n=100, seed=2))
    first, second = (_metrics(r.request) for r in receiver.received)
    [p1] = first["checkout_seconds"].exponential_histogram.data_points
    [p2] = second["checkout_seconds"].exponential_histogram.data_points
    assert (p1.count, p2.count) == (103, 206)
    assert p1.start_time_unix_nano == p2.start_time_unix_nano
    assert p2.time_unix_nano > p1.time_unix_nano
    [j1] = first["jobs_total"].sum.data_points
    [j2] = second["jobs_total"].sum.data_points
    assert (j1.as_double, j2.as_double) == (5.0, 10.0)
    assert j1.start_time_unix_nano == j2.start_time_unix_nano
    assert exporter.exports == 2


def test_timer_without_observations_exports_only_its_error_counter(receiver: Receiver) -> None:
    reg = perfsdk.Registry(alpha=ALPHA)
    reg.series("idle_seconds")
    OtlpExporter({"otlp_endpoint": receiver.url}).export(reg.snapshot(include_sketches=True))
    metrics = _metrics(receiver.received[0].request)
    assert "idle_seconds" not in metrics
    assert metrics["idle_seconds_errors_total"].sum.data_points[0].as_int == 0


def test_snapshot_without_sketches_skips_timers_and_warns_once(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    reg = perfsdk.Registry(alpha=ALPHA)
    reg.series("work_seconds").record(0.01, reg.now())
    reg.gauge("depth").set(1)
    exporter = OtlpExporter({"otlp_endpoint": receiver.url})
    with caplog.at_level(logging.WARNING, logger="perfsdk.otel"):
        exporter.export(reg.snapshot())
        exporter.export(reg.snapshot())
    assert set(_metrics(receiver.received[0].request)) == {"depth"}
    assert sum("include_sketches=True" in r.getMessage() for r in caplog.records) == 1


def test_service_name_defaults_to_the_environment(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.instance.id=pod-7,deployment=blue")
    exporter = OtlpExporter({"otlp_endpoint": receiver.url})
    attributes = exporter.resource.attributes
    assert attributes["service.name"] == "from-env"
    assert attributes["service.instance.id"] == "pod-7"
    assert attributes["deployment"] == "blue"


# -- failures: raise, never hang -------------------------------------------------------------------


def test_refused_connection_raises_at_once() -> None:
    url = f"http://127.0.0.1:{_free_port()}/v1/metrics"
    exporter = OtlpExporter({"otlp_endpoint": url, "otlp_timeout": 2.0})
    started = time.monotonic()
    with pytest.raises(OtlpExportError, match="could not reach OTLP endpoint") as info:
        exporter.export(_snapshot(perfsdk.Registry(alpha=ALPHA), n=10))
    assert time.monotonic() - started < 2.0
    assert url in str(info.value)


def test_unresponsive_endpoint_raises_within_the_timeout() -> None:
    # A socket that listens but never accepts: the kernel completes the handshake and takes the
    # request, and no answer ever comes.
    with socket.socket() as black_hole:
        black_hole.bind(("127.0.0.1", 0))
        black_hole.listen(8)
        url = f"http://127.0.0.1:{black_hole.getsockname()[1]}/v1/metrics"
        exporter = OtlpExporter({"otlp_endpoint": url, "otlp_timeout": 0.5})
        snap = _snapshot(perfsdk.Registry(alpha=ALPHA), n=10)
        started = time.monotonic()
        with pytest.raises(OtlpExportError, match=r"timeout 0\.5 s"):
            exporter.export(snap)
        elapsed = time.monotonic() - started
    assert 0.4 < elapsed < 3.0


@pytest.mark.parametrize("status", [400, 404, 503])
def test_error_status_raises_with_the_status(receiver: Receiver, status: int) -> None:
    receiver.status = status
    receiver.reply = b"collector says no"
    receiver.content_type = "text/plain"
    exporter = OtlpExporter({"otlp_endpoint": receiver.url})
    with pytest.raises(OtlpExportError, match=f"answered HTTP {status} .*collector says no"):
        exporter.export(_snapshot(perfsdk.Registry(alpha=ALPHA), n=10))
    assert exporter.exports == 0


def test_error_status_quotes_the_receivers_status_message(receiver: Receiver) -> None:
    from google.rpc import status_pb2  # type: ignore[import-untyped]

    receiver.status = 400
    receiver.reply = status_pb2.Status(code=3, message="metric name too long").SerializeToString()
    exporter = OtlpExporter({"otlp_endpoint": receiver.url})
    with pytest.raises(OtlpExportError, match=r"answered HTTP 400 .*: metric name too long$"):
        exporter.export(_snapshot(perfsdk.Registry(alpha=ALPHA), n=10))


def test_partial_success_is_logged_not_raised(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    response = ExportMetricsServiceResponse()
    response.partial_success.rejected_data_points = 2
    response.partial_success.error_message = "bad attribute"
    receiver.reply = response.SerializeToString()
    exporter = OtlpExporter({"otlp_endpoint": receiver.url})
    with caplog.at_level(logging.DEBUG, logger="perfsdk.otel"):
        exporter.export(_snapshot(perfsdk.Registry(alpha=ALPHA), n=10))
        exporter.export(_snapshot(perfsdk.Registry(alpha=ALPHA), n=10))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "rejected 2 data points: bad attribute" in warnings[0].message


def test_closed_exporter_refuses_to_export(receiver: Receiver) -> None:
    exporter = OtlpExporter({"otlp_endpoint": receiver.url})
    exporter.close()
    with pytest.raises(OtlpExportError, match="closed"):
        exporter.export(_snapshot(perfsdk.Registry(alpha=ALPHA), n=10))
    assert receiver.received == []


# -- configuration ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"otlp_endpoint": "127.0.0.1:4318"}, "otlp_endpoint='127.0.0.1:4318' is not an http"),
        ({"otlp_endpoint": "ftp://host/v1/metrics"}, "is not an http"),
        ({"otlp_endpoint": "http://h/v1/metrics", "otlp_timeout": 0.0}, "otlp_timeout=0.0"),
        ({"otlp_endpoint": "http://h/v1/metrics", "otlp_timeout": "soon"}, "otlp_timeout='soon'"),
        ({"otlp_endpoint": "http://h/v1/metrics", "otlp_headers": "a=1,s3cret"}, "entry 2 is not"),
    ],
)
def test_bad_configuration_is_a_config_error(config: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        OtlpExporter(config)


def test_config_errors_name_the_source_and_hide_header_values() -> None:
    from perfsdk.config import Config

    config = Config(
        {"otlp_endpoint": "http://h/v1/metrics", "otlp_headers": "authorization Bearer s3cret"},
        {"otlp_headers": "environment variable PERFSDK_OTLP_HEADERS"},
    )
    with pytest.raises(ConfigError) as info:
        OtlpExporter(config)
    message = str(info.value)
    assert "(environment variable PERFSDK_OTLP_HEADERS)" in message
    assert "entry 1 is not name=value" in message and "s3cret" not in message


def test_parse_headers() -> None:
    assert parse_headers("") == {}
    assert parse_headers(" a = 1 , b=x%3Dy%2Cz ,") == {"a": "1", "b": "x=y,z"}
    assert parse_headers({"api-key": "k"}) == {"api-key": "k"}


# -- the plugin ------------------------------------------------------------------------------------


def test_plugin_declares_options_and_is_off_without_an_endpoint() -> None:
    manager = PluginManager(builtins=(), load_entrypoints=False, env={})
    manager.register(perfsdk_otel, name="otel")
    manager.check_pending()
    options: dict[str, object] = {}
    manager.hooks.addoption(options)
    assert options == {
        "otlp_endpoint": "",
        "otlp_headers": "",
        "otlp_timeout": 5.0,
        "otlp_service_name": "",
    }
    assert manager.hooks.exporters(options) == []
    [exporter] = manager.hooks.exporters(
        {**options, "otlp_endpoint": "http://127.0.0.1:4318/v1/metrics"}
    )
    assert isinstance(exporter, OtlpExporter) and exporter.name == "otlp"
    assert exporter.timeout == 5.0
    assert manager.errors == {}


def test_exporter_from_the_hook_exports(receiver: Receiver) -> None:
    manager = PluginManager(builtins=(), load_entrypoints=False, env={})
    manager.register(perfsdk_otel, name="otel")
    reg = perfsdk.Registry(alpha=ALPHA)
    reg.series("work_seconds").record(0.002, reg.now())
    [exporter] = manager.hooks.exporters({"otlp_endpoint": receiver.url, "otlp_timeout": 2.0})
    exporter.export(reg.snapshot(include_sketches=True))
    exporter.close()
    assert "work_seconds" in _metrics(receiver.received[0].request)


def test_entry_point_is_declared() -> None:
    try:
        distribution = importlib.metadata.distribution("perfsdk-otel")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(
            "distribution perfsdk-otel is not installed; pip install -e plugins/perfsdk-otel"
        )
    entry_points = [ep for ep in distribution.entry_points if ep.group == "perfsdk"]
    assert [(ep.name, ep.value) for ep in entry_points] == [("otel", "perfsdk_otel")]
