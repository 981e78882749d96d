"""``perfsdk top``: exposition parser, rates, the table, the endpoint and the store as sources."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from rich.console import Console

import perfsdk
import perfsdk.top_cli  # registers `perfsdk top` (cli.py imports it too)
from perfsdk import _accel
from perfsdk.cli import main
from perfsdk.errors import PerfsdkError
from perfsdk.exporters.prometheus import PrometheusExporter, render_exposition
from perfsdk.top_cli import (
    RateTracker,
    Reading,
    TimerReading,
    TimerRow,
    compute_rows,
    default_url,
    live_view,
    parse_exposition,
    read_endpoint,
    read_store,
    render_table,
    timer_readings,
)

CANNED = """\
# HELP api_seconds Handler latency (quantiles over the rolling window; sum and count since start)
# TYPE api_seconds summary
api_seconds{route="/search",quantile="0.5"} 0.0012
api_seconds{route="/search",quantile="0.9"} 0.003
api_seconds{route="/search",quantile="0.99"} 0.0081
api_seconds{route="/search",quantile="0.999"} 0.025
api_seconds_sum{route="/search"} 12.5
api_seconds_count{route="/search"} 5000
api_seconds{route="/report",quantile="0.5"} 0.15
api_seconds{route="/report",quantile="0.99"} 0.31
api_seconds{route="/report",quantile="0.999"} 0.4
api_seconds_sum{route="/report"} 30.0
api_seconds_count{route="/report"} 200
api_seconds{route="/idle",quantile="0.5"} NaN
api_seconds_count{route="/idle"} 0
# TYPE api_seconds_errors_total counter
api_seconds_errors_total{route="/search"} 0
api_seconds_errors_total{route="/report"} 7
# TYPE jobs_total counter
jobs_total{queue="mail"} 12
# TYPE queue_depth gauge
queue_depth 3
"""


def key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted(labels.items()))


def console() -> Console:
    return Console(record=True, width=200, force_terminal=False, color_system=None)


# --- the exposition format -----------------------------------------------------------------------


def test_parse_exposition_samples_types_and_escapes() -> None:
    text = (
        "# HELP odd A family with awkward label values.\n"
        "# TYPE odd gauge\n"
        'odd{path="C:\\\\temp",quote="say \\"hi\\"",nl="a\\nb",empty=""} 1.5 1712345678000\n'
        "odd {} +Inf\n"
        "  odd_neg -Inf  \n"
        'odd_nan{a = "1" , } NaN\n'
        "\n"
        "# EOF\n"
    )
    exposition = parse_exposition(text)
    assert exposition.types == {"odd": "gauge"}
    name, labels, value = exposition.samples[0]
    assert (name, value) == ("odd", 1.5)
    assert dict(labels) == {"path": "C:\\temp", "quote": 'say "hi"', "nl": "a\nb", "empty": ""}
    assert exposition.samples[1] == ("odd", (), math.inf)
    assert exposition.samples[2] == ("odd_neg", (), -math.inf)
    assert exposition.samples[3][:2] == ("odd_nan", (("a", "1"),))
    assert math.isnan(exposition.samples[3][2])


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ('bad{route="/x"', "unterminated label set"),
        ("bad{route=/x} 1", 'expected ="'),
        ("bad 1 2 3 x", None),
        ("bad", "expected a value"),
        ("bad one", "could not convert"),
        ("9bad 1", "expected a metric name"),
    ],
)
def test_parse_errors_name_the_line(line: str, why: str | None) -> None:
    text = f"# TYPE ok gauge\nok 1\n{line}\n"
    if why is None:  # extra fields after the timestamp are tolerated
        assert parse_exposition(text).samples[-1][0] == "bad"
        return
    with pytest.raises(
        PerfsdkError, match=rf"line 3 of the exposition is not a sample \(.*({why})"
    ):
        parse_exposition(text)


def test_parser_agrees_with_prometheus_client() -> None:
    parser = pytest.importorskip("prometheus_client.parser")
    registry = perfsdk.Registry()
    for route in ("/a", 'we"ird\\path\n'):
        series = registry.series("api_seconds", {"route": route})
        for ms in (1, 2, 3, 50):
            series.record(ms / 1000, registry.now())
        series.record_error(0.004, registry.now())
    perfsdk.counter("jobs_total", {"queue": "mail"}, registry=registry).inc(4)
    text = render_exposition(registry.snapshot(include_sketches=True)).decode()

    ours = parse_exposition(text)
    theirs = [
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for family in parser.text_string_to_metric_families(text)
        for s in family.samples
    ]
    mine = [(n, tuple(sorted(lb)), v) for n, lb, v in ours.samples]
    assert len(mine) == len(theirs)
    for (n1, l1, v1), (n2, l2, v2) in zip(mine, theirs):
        # prometheus_client names a counter's sample without _total in some versions
        assert n1.removesuffix("_total") == n2.removesuffix("_total")
        assert l1 == l2
        assert v1 == v2 or (math.isnan(v1) and math.isnan(v2))


def test_timer_readings_from_the_real_exposition() -> None:
    registry = perfsdk.Registry()
    fast = registry.series("api_seconds", {"route": "/fast", "quantile": "odd"})
    for _ in range(99):
        fast.record(0.001, registry.now())
    fast.record_error(0.2, registry.now())
    registry.series("api_seconds", {"route": "/empty"})
    perfsdk.gauge("queue_depth", registry=registry).set(2)
    snapshot = registry.snapshot(include_sketches=True)
    timers = timer_readings(parse_exposition(render_exposition(snapshot).decode()))

    assert set(timers) == {
        key("api_seconds", route="/fast", exported_quantile="odd"),
        key("api_seconds", route="/empty"),
    }
    t = timers[key("api_seconds", route="/fast", exported_quantile="odd")]
    window = snapshot.get("api_seconds", route="/fast", quantile="odd")
    assert window is not None and window.window is not None
    assert (t.count, t.errors) == (100, 1)
    assert t.p50 == pytest.approx(window.window.p50)
    assert t.p99 == pytest.approx(window.window.p99)
    assert t.p999 == pytest.approx(window.window.p999)
    assert 0.00099 <= t.p50 <= 0.00101
    empty = timers[key("api_seconds", route="/empty")]
    assert empty.count == 0 and math.isnan(empty.p50)


def test_timer_readings_from_canned_text() -> None:
    timers = timer_readings(parse_exposition(CANNED))
    assert set(timers) == {
        key("api_seconds", route="/search"),
        key("api_seconds", route="/report"),
        key("api_seconds", route="/idle"),
    }
    report = timers[key("api_seconds", route="/report")]
    assert (report.count, report.errors, report.p50, report.p99, report.p999) == (
        200,
        7,
        0.15,
        0.31,
        0.4,
    )


# --- rates ---------------------------------------------------------------------------------------


def reading(at: float, digest: str = "", **counts: float) -> Reading:
    timers = {
        key("t", route=route): TimerReading("t", (("route", route),), count, errors=count / 100)
        for route, count in counts.items()
    }
    return Reading(at, timers, digest or f"d{at}")


def test_rows_are_sorted_by_rate_then_count() -> None:
    before = reading(100.0, a=100, b=1000, c=10)
    after = reading(102.0, a=300, b=1010, c=10, d=4)
    rows = compute_rows(after, before)
    assert [(r.series, r.rate) for r in rows] == [
        ('t{route="a"}', 100.0),
        ('t{route="b"}', 5.0),
        ('t{route="d"}', 2.0),  # new since the last reading: counted from zero
        ('t{route="c"}', 0.0),
    ]
    first = compute_rows(before)
    assert [r.rate for r in first] == [None, None, None]
    assert [r.series for r in first] == ['t{route="b"}', 't{route="a"}', 't{route="c"}']


def test_a_restarted_series_gets_no_rate() -> None:
    rows = compute_rows(reading(2.0, a=5), reading(1.0, a=500))
    assert rows[0].rate is None


def test_a_rate_the_source_knows_is_kept() -> None:
    current = Reading(5.0, {key("t"): TimerReading("t", (), 50.0, rate=12.5)}, "x")
    assert compute_rows(current)[0].rate == 12.5


def test_rate_tracker_waits_for_a_new_snapshot() -> None:
    tracker = RateTracker(stale_after=10.0)
    tracker.update(reading(0.0, "one", a=0))
    rows = tracker.update(reading(1.0, "two", a=10))
    assert rows[0].rate == 10.0
    # the same snapshot read again half a second later: the rate stays what it was
    assert tracker.update(reading(1.5, "two", a=10))[0].rate == 10.0
    assert tracker.update(reading(3.0, "three", a=40))[0].rate == 15.0
    # nothing new for longer than stale_after: the series is idle
    assert tracker.update(reading(14.0, "three", a=40))[0].rate == 0.0


# --- the table -----------------------------------------------------------------------------------


def test_render_table() -> None:
    rows = [
        TimerRow("api_seconds", (("route", "/search"),), 5000, 0, 250.0, 0.0012, 0.0081, 0.025),
        TimerRow("api_seconds", (("route", "/report"),), 200, 7, 10.0, 0.15, 0.31, 0.4),
        TimerRow("idle_seconds", (), 0, 0, None, math.nan, math.nan, math.nan),
    ]
    out = console()
    out.print(render_table(rows, limit=2, title="top"))
    text = out.export_text()
    assert table_rows(text) == [
        ['api_seconds{route="/search"}', "250.0", "1.20ms", "8.10ms", "25.00ms", "5000", "0"],
        ['api_seconds{route="/report"}', "10.0", "150.00ms", "310.00ms", "400.00ms", "200", "7"],
    ]
    assert "idle_seconds" not in text
    assert "… and 1 more (--limit)" in text
    for header in ("series", "rate/s", "p50", "p99", "p99.9", "count", "errors"):
        assert header in text

    out = console()
    out.print(render_table(rows, limit=0))
    text = out.export_text()
    assert "idle_seconds" in text and "more" not in text
    assert table_rows(text)[2] == ["idle_seconds", "-", "-", "-", "-", "0", "0"]

    out = console()
    out.print(render_table([]))
    assert "no timers yet" in out.export_text()


# --- the endpoint as a source --------------------------------------------------------------------


class _Canned(BaseHTTPRequestHandler):
    body = CANNED.encode()

    def do_GET(self) -> None:
        status = 200 if self.path == "/metrics" else 404
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def canned_endpoint() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Canned)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def table_rows(output: str) -> list[list[str]]:
    """The data rows of a printed table, as cells."""
    return [
        [cell.strip() for cell in line.strip("│ ").split("│")]
        for line in output.splitlines()
        if line.startswith("│")
    ]


def test_top_once_against_a_canned_endpoint(
    canned_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    assert main(["top", "--once", "--url", canned_endpoint + "/metrics", "--interval", "0.1"]) == 0
    assert time.monotonic() - started < 5
    out = capsys.readouterr().out
    assert f"perfsdk top  {canned_endpoint}/metrics  3 timers" in out
    rows = table_rows(out)
    assert [row[0] for row in rows] == [
        'api_seconds{route="/search"}',
        'api_seconds{route="/report"}',
        'api_seconds{route="/idle"}',
    ]
    # the canned endpoint never changes: every rate is zero
    assert rows[1] == [
        'api_seconds{route="/report"}',
        "0.0",
        "150.00ms",
        "310.00ms",
        "400.00ms",
        "200",
        "7",
    ]

    assert (
        main(
            [
                "top",
                "--once",
                "--url",
                canned_endpoint + "/metrics",
                "--interval",
                "0",
                "--limit",
                "1",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert table_rows(out) == [
        ['api_seconds{route="/search"}', "-", "1.20ms", "8.10ms", "25.00ms", "5000", "0"]
    ]
    assert "… and 2 more (--limit)" in out


def test_top_once_against_the_real_exporter(capsys: pytest.CaptureFixture[str]) -> None:
    """A registry exported every 50 ms, 5 busy calls and 1 quiet call per round: the rates
    come from two fresh snapshots."""
    registry = perfsdk.Registry()
    busy = registry.series("work_seconds", {"kind": "busy"})
    quiet = registry.series("work_seconds", {"kind": "quiet"})
    exporter = PrometheusExporter({"http_port": 0})
    assert exporter.url is not None
    stop = threading.Event()

    def agent() -> None:
        while not stop.is_set():
            for _ in range(5):
                busy.record(0.002, registry.now())
            quiet.record_error(0.5, registry.now())
            exporter.export(registry.snapshot(include_sketches=True))
            time.sleep(0.05)

    thread = threading.Thread(target=agent, daemon=True)
    thread.start()
    try:
        assert main(["top", "--once", "--url", exporter.url, "--interval", "0.5"]) == 0
    finally:
        stop.set()
        thread.join()
        exporter.close()
    rows = table_rows(capsys.readouterr().out)
    assert [row[0] for row in rows] == ['work_seconds{kind="busy"}', 'work_seconds{kind="quiet"}']
    busy_rate, quiet_rate = float(rows[0][1]), float(rows[1][1])
    assert busy_rate > 0 and quiet_rate > 0
    assert busy_rate / quiet_rate == pytest.approx(5, rel=0.01)
    assert rows[0][2] == "2.00ms" and rows[1][2] == "500.00ms"
    assert int(rows[1][6]) == int(rows[1][5]) > 0  # every quiet call was an error


def test_unreachable_endpoint(capsys: pytest.CaptureFixture[str]) -> None:
    url = "http://127.0.0.1:9/metrics"
    assert main(["top", "--once", "--url", url]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"perfsdk: error: cannot read {url}:")
    assert "perfsdk run" in err


def test_endpoint_errors_are_reported(canned_endpoint: str) -> None:
    with pytest.raises(PerfsdkError, match=r"answered 404"):
        read_endpoint(canned_endpoint + "/nowhere")


def test_default_url_follows_the_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PERFSDK_HTTP_HOST", raising=False)
    monkeypatch.delenv("PERFSDK_HTTP_PORT", raising=False)
    assert default_url() == "http://127.0.0.1:9464/metrics"
    (tmp_path / "perfsdk.toml").write_text('http_host = "0.0.0.0"\nhttp_port = 9100\n')
    assert default_url() == "http://127.0.0.1:9100/metrics"
    monkeypatch.setenv("PERFSDK_HTTP_PORT", "9200")
    monkeypatch.setenv("PERFSDK_HTTP_HOST", "::1")
    assert default_url() == "http://[::1]:9200/metrics"
    monkeypatch.setenv("PERFSDK_HTTP_PORT", "not-a-port")
    assert default_url() == "http://127.0.0.1:9464/metrics"


def test_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["top", "--once", "--limit", "-1"]) == 1
    assert "--limit -1 must be >= 0" in capsys.readouterr().err
    assert main(["top", "--once", "--interval", "-1"]) == 1
    assert "--interval -1.0 must be" in capsys.readouterr().err
    assert main(["top", "--url", "http://x", "--db", "y"]) == 2
    assert "not allowed with argument" in capsys.readouterr().err


# --- live -----------------------------------------------------------------------------------------


def test_live_view_redraws_until_interrupted() -> None:
    readings = iter(
        [
            reading(0.0, a=0),
            PerfsdkError("cannot read http://x: refused"),
            reading(2.0, a=50),
        ]
    )

    def read() -> Reading:
        item = next(readings)
        if isinstance(item, Exception):
            raise item
        return item

    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 3:
            raise KeyboardInterrupt

    out = console()  # not a terminal: each refresh prints a table, as `top -b` does
    assert live_view(out, read, "http://x", interval=0.25, sleep=sleep) == 0
    text = out.export_text()
    assert sleeps == [0.25, 0.25, 0.25]
    assert text.count("perfsdk top  http://x") == 3
    assert "perfsdk: cannot read http://x: refused (retrying)" in text
    assert [row[1] for row in table_rows(text)] == ["-", "-", "25.0"]


# --- the store as a source -----------------------------------------------------------------------


def make_store(path: Path) -> float:
    """A database with 10 s of a busy and a quiet timer (one row per second) and a counter;
    returns the time of its newest row."""
    from perfsdk.store import RAW, Store

    end = 1_700_000_000.0
    with Store(path) as store:
        run = store.start_run(started=end - 10)
        busy = store.series_id("api_seconds", (("route", "/search"),), "timer")
        quiet = store.series_id("api_seconds", (("route", "/report"),), "timer")
        other = store.series_id("jobs_total", (), "counter")
        rows = []
        for i in range(10):
            t0, t1 = end - 10 + i, end - 9 + i
            sketch = _accel.Sketch(0.01)
            for _ in range(99):
                sketch.add(0.001)
            sketch.add(0.1)
            rows.append((busy, run, RAW, t0, t1, 100, 1, sketch.sum, 0.001, 0.1, sketch.to_bytes()))
            rows.append((other, run, RAW, t0, t1, 1, 0, 3.0, 3.0 * i, 3.0 * i, None))
        slow = _accel.Sketch(0.01)
        slow.add(0.25)
        rows.append((quiet, run, RAW, end - 1, end, 1, 0, 0.25, 0.25, 0.25, slow.to_bytes()))
        with store.transaction():
            store.insert_rollups(rows)
    return end


def test_read_store(tmp_path: Path) -> None:
    path = tmp_path / "perfsdk.db"
    end = make_store(path)
    got = read_store(str(path))
    assert got.taken_at == end
    assert set(got.timers) == {
        key("api_seconds", route="/search"),
        key("api_seconds", route="/report"),
    }
    busy = got.timers[key("api_seconds", route="/search")]
    assert (busy.count, busy.errors, busy.rate) == (1000, 10, 100.0)
    assert busy.p50 == pytest.approx(0.001, rel=0.01)
    assert busy.p999 == pytest.approx(0.1, rel=0.01)
    quiet = got.timers[key("api_seconds", route="/report")]
    assert quiet.rate == pytest.approx(0.1)  # one call over the ten seconds the data covers
    # only the last `window` seconds of the data
    recent = read_store(str(path), window=2.0).timers[key("api_seconds", route="/search")]
    assert (recent.count, recent.rate) == (200, 100.0)


def test_top_once_from_the_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "perfsdk.db"
    make_store(path)
    assert main(["top", "--db", str(path), "--once"]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert rows == [
        # p99 is the 990th of 1000 calls, 1 ms; p99.9 one of the ten 100 ms calls (within 1%)
        ['api_seconds{route="/search"}', "100.0", "1.01ms", "1.01ms", "99.52ms", "1000", "10"],
        ['api_seconds{route="/report"}', "0.1", "250.00ms", "250.00ms", "250.00ms", "1", "0"],
    ]


def test_empty_and_missing_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from perfsdk.store import Store

    assert main(["top", "--db", str(tmp_path / "missing.db"), "--once"]) == 1
    assert "no perfsdk database at" in capsys.readouterr().err
    with Store(tmp_path / "empty.db"):
        pass
    assert main(["top", "--db", str(tmp_path / "empty.db"), "--once"]) == 0
    assert "no timers yet" in capsys.readouterr().out
