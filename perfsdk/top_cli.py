"""``perfsdk top``: a live terminal view of the busiest timers of a running program.

::

    perfsdk top                                   # the endpoint the configuration names
    perfsdk top --url http://127.0.0.1:9100/metrics --limit 10
    perfsdk top --db .perfsdk/perfsdk.db          # the SQLite history instead
    perfsdk top --once                            # one table, then exit

Each row is one timer series (name and labels): its rate (calls per second), its p50, p99 and
p99.9, its count and its errors, busiest first.

From the Prometheus endpoint, the quantiles are the summary's (``<name>{quantile=...}``), counts
are ``<name>_count`` and ``<name>_errors_total``, and rates are the difference of two counts over
the time between the snapshots they came from: a new snapshot is recognised by the exposition
changing, so a refresh that happens to see no new agent round does not read as a rate of zero.
The quantiles are over the agent's rolling window (the last minute by default) and the counts since
the program started. From the store (``--db``), every figure is over the last minute of the
history (up to its newest row, so a program that has exited can still be looked at), percentiles
from the merge of that minute's sketches.

The table is drawn with `rich <https://rich.readthedocs.io/>`_, imported when the command runs.
"""

from __future__ import annotations

import argparse
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from perfsdk.cli import command
from perfsdk.errors import PerfsdkError
from perfsdk.naming import Labels

if TYPE_CHECKING:
    from rich.console import Console, Group
    from rich.table import Table

__all__ = [
    "Exposition",
    "Reading",
    "TimerReading",
    "TimerRow",
    "cmd_top",
    "compute_rows",
    "default_url",
    "fetch_exposition",
    "live_view",
    "parse_exposition",
    "read_endpoint",
    "read_store",
    "render_table",
    "timer_readings",
]

#: The quantiles shown (a summary's ``quantile`` label value) and the field each goes to.
SHOWN_QUANTILES = {0.5: "p50", 0.99: "p99", 0.999: "p999"}

#: From the store, ``perfsdk top`` shows the last minute of data (the agent's default window).
STORE_WINDOW_SECONDS = 60.0

#: How often ``--once`` re-reads the endpoint while waiting for fresh snapshots.
ONCE_POLL_SECONDS = 0.05

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_UNESCAPE = {"\\": "\\", '"': '"', "n": "\n"}


# --- the text exposition format ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Exposition:
    """A parsed text exposition: every sample, and each family's ``# TYPE``."""

    samples: tuple[tuple[str, Labels, float], ...]
    types: Mapping[str, str]


def _parse_sample(line: str) -> tuple[str, Labels, float]:
    match = _NAME.match(line)
    if match is None:
        raise ValueError("expected a metric name")
    name, i, n = match.group(), match.end(), len(line)
    labels: list[tuple[str, str]] = []
    while i < n and line[i] in " \t":
        i += 1
    if i < n and line[i] == "{":
        i += 1
        while True:
            while i < n and line[i] in " \t":
                i += 1
            if i >= n:
                raise ValueError("unterminated label set: no closing }")
            if line[i] == "}":
                i += 1
                break
            lm = _LABEL_NAME.match(line, i)
            if lm is None:
                raise ValueError(f"expected a label name at column {i + 1}")
            i = lm.end()
            while i < n and line[i] in " \t":
                i += 1
            if i >= n or line[i] != "=":
                raise ValueError(f'expected =" after label {lm.group()!r}')
            i += 1
            while i < n and line[i] in " \t":
                i += 1
            if i >= n or line[i] != '"':
                raise ValueError(f'expected =" after label {lm.group()!r}')
            i += 1
            chars: list[str] = []
            while True:
                if i >= n:
                    raise ValueError(f"unterminated value of label {lm.group()!r}")
                c = line[i]
                if c == '"':
                    i += 1
                    break
                if c == "\\" and i + 1 < n:
                    chars.append(_UNESCAPE.get(line[i + 1], "\\" + line[i + 1]))
                    i += 2
                    continue
                chars.append(c)
                i += 1
            labels.append((lm.group(), "".join(chars)))
            while i < n and line[i] in " \t":
                i += 1
            if i < n and line[i] == ",":
                i += 1
    rest = line[i:].split()
    if not rest:
        raise ValueError("expected a value")
    return name, tuple(labels), float(rest[0])  # float() reads NaN, +Inf, -Inf


def parse_exposition(text: str) -> Exposition:
    """Parse the Prometheus text format (0.0.4; OpenMetrics' ``# EOF`` is ignored).

    :raises PerfsdkError: a line that is not a comment, blank, or a sample.
    """
    samples: list[tuple[str, Labels, float]] = []
    types: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 4 and parts[1] == "TYPE":
                types[parts[2]] = parts[3].strip()
            continue
        try:
            samples.append(_parse_sample(line))
        except (ValueError, IndexError) as exc:
            raise PerfsdkError(
                f"line {number} of the exposition is not a sample ({exc}): {raw[:120]!r}"
            ) from None
    return Exposition(tuple(samples), types)


# --- timers out of an exposition -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TimerReading:
    """One timer series at one moment, as the endpoint or the store tells it."""

    name: str
    labels: Labels
    count: float
    errors: float = 0.0
    p50: float = math.nan
    p99: float = math.nan
    p999: float = math.nan
    #: Calls per second, when the source knows it (the store); else computed from two readings.
    rate: float | None = None


@dataclass(frozen=True, slots=True)
class Reading:
    """Every timer at one moment. ``taken_at`` is when the data was current (Unix time);
    ``digest`` identifies the data, so a re-read of the same snapshot is recognised."""

    taken_at: float
    timers: Mapping[tuple[str, Labels], TimerReading]
    digest: str = ""
    source: str = ""


def _quantile_field(text: str | None) -> str | None:
    try:
        return SHOWN_QUANTILES.get(float(text)) if text is not None else None
    except ValueError:
        return None


def _without(labels: Labels, name: str) -> Labels:
    return tuple((k, v) for k, v in labels if k != name)


def _sorted(labels: Labels) -> Labels:
    return tuple(sorted(labels))


def timer_readings(exposition: Exposition) -> dict[tuple[str, Labels], TimerReading]:
    """The timers of an exposition: every ``summary`` family (and any family whose samples carry
    a ``quantile`` label), with ``<name>_count`` and ``<name>_errors_total`` of the same labels."""
    summaries = {name for name, kind in exposition.types.items() if kind == "summary"}
    summaries |= {
        name for name, labels, _ in exposition.samples if any(k == "quantile" for k, _ in labels)
    }
    quantiles: dict[tuple[str, Labels], dict[str, float]] = {}
    counts: dict[tuple[str, Labels], float] = {}
    errors: dict[tuple[str, Labels], float] = {}
    for name, labels, value in exposition.samples:
        if name in summaries:
            field_name = _quantile_field(dict(labels).get("quantile"))
            key = (name, _sorted(_without(labels, "quantile")))
            quantiles.setdefault(key, {})
            if field_name is not None:
                quantiles[key][field_name] = value
        elif name.endswith("_count") and name[: -len("_count")] in summaries:
            counts[(name[: -len("_count")], _sorted(labels))] = value
        elif name.endswith("_errors_total") and name[: -len("_errors_total")] in summaries:
            errors[(name[: -len("_errors_total")], _sorted(labels))] = value
    out: dict[tuple[str, Labels], TimerReading] = {}
    for key in quantiles.keys() | counts.keys():
        qs = quantiles.get(key, {})
        out[key] = TimerReading(
            name=key[0],
            labels=key[1],
            count=counts.get(key, math.nan),
            errors=errors.get(key, 0.0),
            p50=qs.get("p50", math.nan),
            p99=qs.get("p99", math.nan),
            p999=qs.get("p999", math.nan),
        )
    return out


def fetch_exposition(url: str, *, timeout: float = 5.0) -> str:
    """GET ``url`` and return the body as text.

    :raises PerfsdkError: the endpoint cannot be reached or does not answer 200.
    """
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, headers={"Accept": "text/plain"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body: bytes = response.read()
            charset = response.headers.get_content_charset() or "utf-8"
    except urllib.error.HTTPError as exc:
        raise PerfsdkError(f"{url} answered {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise PerfsdkError(
            f"cannot read {url}: {reason}; is the program running with the agent "
            "(perfsdk run, or perfsdk.start()) and the endpoint on that port?"
        ) from None
    return body.decode(charset, errors="replace")


def read_endpoint(url: str, *, timeout: float = 5.0) -> Reading:
    """Fetch and parse the endpoint at ``url``: one :class:`Reading`."""
    import hashlib

    text = fetch_exposition(url, timeout=timeout)
    taken_at = time.time()
    exposition = parse_exposition(text)
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()
    return Reading(taken_at, timer_readings(exposition), digest, url)


def default_url() -> str:
    """``http://<http_host>:<http_port>/metrics`` from the working directory's configuration
    (``PERFSDK_*``, ``perfsdk.toml``, ``pyproject.toml``), or the defaults if it is invalid."""
    host, port = "127.0.0.1", 9464
    try:
        from perfsdk.config import load_config

        config = load_config()
        host, port = config.text("http_host"), int(config.number("http_port"))
    except (PerfsdkError, ValueError, OSError):
        pass
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/metrics"


# --- rows: rates from two readings ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TimerRow:
    """One line of the table. ``rate`` is None until two readings are available."""

    name: str
    labels: Labels
    count: float
    errors: float
    rate: float | None
    p50: float
    p99: float
    p999: float

    @property
    def series(self) -> str:
        if not self.labels:
            return self.name
        return self.name + "{" + ",".join(f'{k}="{v}"' for k, v in self.labels) + "}"


def compute_rows(current: Reading, previous: Reading | None = None) -> list[TimerRow]:
    """Every timer of ``current``, busiest first: by rate (per second since ``previous``), then
    by count. A series whose count went down (the program restarted) gets no rate."""
    dt = current.taken_at - previous.taken_at if previous is not None else 0.0
    rows: list[TimerRow] = []
    for key, t in current.timers.items():
        rate = t.rate
        if rate is None and previous is not None and dt > 0:
            before = previous.timers.get(key)
            base = before.count if before is not None else 0.0
            if not math.isnan(t.count) and t.count >= base:
                rate = (t.count - base) / dt
        rows.append(TimerRow(t.name, t.labels, t.count, t.errors, rate, t.p50, t.p99, t.p999))

    def busiest(row: TimerRow) -> tuple[float, float, str]:
        count = 0.0 if math.isnan(row.count) else row.count
        return (-(row.rate if row.rate is not None else -1.0), -count, row.series)

    rows.sort(key=busiest)
    return rows


@dataclass(slots=True)
class RateTracker:
    """Keeps the readings rates are computed between.

    A reading identical to the last one (same digest: the agent has not ticked since) is not used
    for rates unless ``stale_after`` seconds passed, so the rate is always over whole agent rounds.
    """

    stale_after: float = 5.0
    previous: Reading | None = None
    latest: Reading | None = None
    rows: list[TimerRow] = field(default_factory=list)

    def update(self, reading: Reading) -> list[TimerRow]:
        latest = self.latest
        fresh = (
            latest is None
            or reading.digest != latest.digest
            or not reading.digest
            or reading.taken_at - latest.taken_at >= self.stale_after
        )
        if fresh:
            self.previous, self.latest = latest, reading
            self.rows = compute_rows(reading, latest)
        return self.rows


# --- the history store ---------------------------------------------------------------------------


def read_store(path: str, *, window: float = STORE_WINDOW_SECONDS) -> Reading:
    """The timers of the SQLite history at ``path`` over the last ``window`` seconds of its data
    (ending at its newest row, so the history of a program that has exited still shows): count,
    errors and rate over that span, percentiles of the merge of its sketches.

    :raises PerfsdkError: the database is missing or unusable.
    """
    from perfsdk.store import Store

    timers: dict[tuple[str, Labels], TimerReading] = {}
    with Store(path, create=False) as store:
        # The one schema detail used directly (docs/store.md): the span the data covers, so a
        # rate is calls over the whole span, however few rows a quiet series has.
        db = store.connection
        row = db.execute("SELECT MAX(ts_end) FROM rollups").fetchone()
        latest = float(row[0]) if row is not None and row[0] is not None else None
        if latest is None:
            return Reading(time.time(), timers, "empty", path)
        since = latest - window
        row = db.execute("SELECT MIN(ts_start) FROM rollups WHERE ts_end > ?", (since,)).fetchone()
        span = latest - max(since, float(row[0]))
        for info in store.series():
            if info.kind != "timer":
                continue
            # history() merges the series whose labels include these: the series itself, and
            # any of the same name with extra labels (rare: one name, two label sets).
            labels = dict(info.labels)
            try:
                counts = store.history(info.name, labels, since, latest, stat="count")
                if not counts:
                    continue
                errors = store.history(info.name, labels, since, latest, stat="errors")
                sketch = store.merged_sketch(info.name, labels, since, latest)
            except PerfsdkError:  # e.g. the name is also a counter's: not one of ours to show
                continue
            count = sum(p.value for p in counts)
            qs = [math.nan] * 3
            if sketch is not None and sketch.count:
                qs = [float(sketch.quantile(q)) for q in (0.5, 0.99, 0.999)]
            key = (info.name, _sorted(info.labels))
            timers[key] = TimerReading(
                name=info.name,
                labels=key[1],
                count=count,
                errors=sum(p.value for p in errors),
                p50=qs[0],
                p99=qs[1],
                p999=qs[2],
                rate=count / span if span > 0 else None,
            )
    return Reading(latest, timers, repr(latest), path)


# --- rendering -----------------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    from perfsdk.tables import format_duration

    return format_duration(seconds)


def _number(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.0f}" if value == int(value) else f"{value:.1f}"


def render_table(
    rows: Sequence[TimerRow],
    *,
    limit: int = 20,
    title: str = "",
    caption: str = "",
) -> Table:
    """The busiest ``limit`` rows as a rich table (name+labels, rate/s, p50, p99, p99.9, count,
    errors); the caption says how many more there are."""
    from rich.table import Table

    table = Table(title=title or None, title_justify="left", expand=False, caption_justify="left")
    table.add_column("series", overflow="fold")
    for header in ("rate/s", "p50", "p99", "p99.9", "count", "errors"):
        table.add_column(header, justify="right", no_wrap=True)
    shown = list(rows[: max(limit, 0)]) if limit else list(rows)
    for row in shown:
        error_text = _number(row.errors)
        if row.errors and not math.isnan(row.errors):
            error_text = f"[red]{error_text}[/red]"
        table.add_row(
            row.series,
            "-" if row.rate is None else f"{row.rate:.1f}",
            _duration(row.p50),
            _duration(row.p99),
            _duration(row.p999),
            _number(row.count),
            error_text,
        )
    notes = [caption] if caption else []
    if len(rows) > len(shown):
        notes.append(f"… and {len(rows) - len(shown)} more (--limit)")
    if not rows:
        notes.append("no timers yet: nothing decorated with @perfsdk.timed has run")
    table.caption = "\n".join(notes) or None
    return table


# --- the command ---------------------------------------------------------------------------------


def _add_top_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--url",
        metavar="URL",
        help="the Prometheus endpoint (default: http://<http_host>:<http_port>/metrics from the "
        "configuration, http://127.0.0.1:9464/metrics unless set)",
    )
    source.add_argument("--db", metavar="PATH", help="read the SQLite history instead")
    parser.add_argument(
        "--interval",
        type=float,
        default=1.0,
        metavar="S",
        help="seconds between refreshes (default 1). --once waits for two fresh snapshots of "
        "the agent to compute rates, at most 2 x S + 0.5 s (0: one reading, no rates)",
    )
    parser.add_argument(
        "--limit", type=int, default=20, metavar="N", help="rows to show (default 20; 0: all)"
    )
    parser.add_argument("--once", action="store_true", help="print one table and exit")


def _read_once(read: Callable[[], Reading], wait: float) -> tuple[list[TimerRow], Reading]:
    """One reading, then re-reads until two fresh snapshots arrived (or ``wait`` is over), so
    the rate is over whole agent rounds rather than from wherever the first reading fell."""
    first = last = read()
    if wait <= 0:
        return compute_rows(first), first
    deadline = time.monotonic() + wait
    fresh: list[Reading] = []
    while len(fresh) < 2 and time.monotonic() < deadline:
        time.sleep(min(ONCE_POLL_SECONDS, max(0.0, deadline - time.monotonic())))
        reading = read()
        if reading.digest != last.digest or not reading.digest:
            fresh.append(reading)
        last = reading
    if len(fresh) == 2:
        return compute_rows(fresh[1], fresh[0]), fresh[1]
    return compute_rows(last, first), last  # a source that does not change: rate over the wait


def _title(source: str, reading: Reading | None, count: int) -> str:
    when = "" if reading is None else time.strftime("%H:%M:%S", time.localtime(reading.taken_at))
    timers = f"{count} timer{'s' if count != 1 else ''}"
    return f"perfsdk top  {source}  {timers}" + (f"  as of {when}" if when else "")


@command("top", "Live view of the busiest timers of a running program.", _add_top_arguments)
def cmd_top(args: argparse.Namespace) -> int:
    """Print the table once (``--once``) or refresh it until interrupted."""
    try:
        from rich.console import Console
    except ImportError:
        raise PerfsdkError(
            "perfsdk top draws its table with rich, which is not installed: pip install rich"
        ) from None

    if args.interval < 0 or not math.isfinite(args.interval):
        raise PerfsdkError(f"--interval {args.interval!r} must be a number of seconds >= 0")
    if args.limit < 0:
        raise PerfsdkError(f"--limit {args.limit!r} must be >= 0 (0 shows every row)")
    source: str
    read: Callable[[], Reading]
    if args.db:
        source = db = args.db

        def read() -> Reading:
            return read_store(db)

    else:
        source = url = args.url or default_url()

        def read() -> Reading:
            return read_endpoint(url)

    console = Console()
    if args.once:
        wait = 0.0 if args.db or not args.interval else 2 * args.interval + 0.5
        rows, reading = _read_once(read, wait)
        table = render_table(rows, limit=args.limit, title=_title(source, reading, len(rows)))
        _print(console, table)
        return 0
    return live_view(console, read, source, interval=args.interval or 1.0, limit=args.limit)


def _print(console: Console, renderable: Table | Group) -> None:
    """Print; into a pipe or file, as wide as the table needs (a terminal keeps its width)."""
    if not console.is_terminal:
        from rich.measure import Measurement

        wanted = Measurement.get(console, console.options.update_width(1000), renderable).maximum
        console.width = max(console.width, wanted)
    console.print(renderable)


def live_view(
    console: Console,
    read: Callable[[], Reading],
    source: str,
    *,
    interval: float = 1.0,
    limit: int = 20,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Redraw the table every ``interval`` seconds until Ctrl-C; a failed read is shown above
    the last good table and retried (the program may be restarting). Into a pipe or a file,
    each refresh prints a new table instead (like ``top -b``)."""
    from rich.console import Group
    from rich.live import Live
    from rich.text import Text

    tracker = RateTracker(stale_after=max(5.0, 3 * interval))

    def frame() -> Group | Table:
        try:
            rows = tracker.update(read())
            error = ""
        except PerfsdkError as exc:
            rows, error = tracker.rows, str(exc)
        title = _title(source, tracker.latest, len(rows))
        table = render_table(rows, limit=limit, title=title, caption="Ctrl-C to quit")
        if error:
            return Group(Text(f"perfsdk: {error} (retrying)", style="bold red"), table)
        return table

    try:
        if not console.is_terminal:
            while True:
                _print(console, frame())
                sleep(interval)
        with Live(frame(), console=console, refresh_per_second=4, transient=False) as live:
            while True:
                sleep(interval)
                live.update(frame())
    except KeyboardInterrupt:
        return 0
