"""The Prometheus endpoint: an HTTP server on a daemon thread serving the latest snapshot.

``GET /metrics`` answers the text exposition (:mod:`perfsdk.exporters.exposition` says what a
snapshot becomes), gzip-compressed when the scraper accepts it; ``GET /healthz`` answers ``ok``;
anything else 404. Configuration keys: ``http_enabled``, ``http_host``, ``http_port``,
``multiprocess_dir`` (see docs/exporters.md).
"""

from __future__ import annotations

import errno
import gzip
import importlib
import logging
import os
import socket
import socketserver
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast
from urllib.parse import urlsplit

from perfsdk.exporters.exposition import (
    CONTENT_TYPE,
    DEFAULT_BUCKETS,
    Renderer,
    render_exposition,
)
from perfsdk.records import Snapshot

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_BUCKETS",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "REBIND_INTERVAL",
    "PrometheusExporter",
    "accepts_gzip",
    "render_exposition",
]

log = logging.getLogger("perfsdk.exporters")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9464

#: After losing the port to another process, try to take it over this often (seconds).
REBIND_INTERVAL = 30.0
#: How far ahead of an expected scrape the agent renders, and how stale that body may be.
RENDER_AHEAD_SECONDS = 2.0


# --- the HTTP endpoint --------------------------------------------------------------------------


def accepts_gzip(header: str) -> bool:
    """Whether an ``Accept-Encoding`` value allows gzip: ``gzip`` (or ``x-gzip``) with q > 0, or
    failing any mention of gzip, ``*`` with q > 0 (RFC 9110, section 12.5.3)."""
    wildcard: float | None = None
    for part in header.split(","):
        coding, _, params = part.partition(";")
        coding = coding.strip().lower()
        if coding not in ("gzip", "x-gzip", "*"):
            continue
        quality = 1.0
        for param in params.split(";"):
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if coding == "*":
            wildcard = quality
        else:
            return quality > 0.0
    return wildcard is not None and wildcard > 0.0


def _compress(body: bytes) -> bytes:
    # Level 1: 1,000 timer series (2.4 MB) shrink 11x in ~10 ms; level 6 gains a third for 3x that.
    return gzip.compress(body, compresslevel=1, mtime=0)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog of 5 makes a 6th simultaneous connect wait a 1 s SYN retry.
    request_queue_size = 128
    exporter: PrometheusExporter

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN (a reverse DNS lookup): skip it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A scraper that hangs up mid-response is not worth a traceback on stderr.
        log.debug("perfsdk: error serving %s", client_address, exc_info=True)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "perfsdk"
    timeout = 30.0
    disable_nagle_algorithm = True  # headers and body are separate writes

    def do_GET(self) -> None:
        self._respond(send_body=True)

    def do_HEAD(self) -> None:
        self._respond(send_body=False)

    def _respond(self, *, send_body: bool) -> None:
        path = urlsplit(self.path).path
        encoding: str | None = None
        if path == "/metrics":
            gzip_ok = accepts_gzip(self.headers.get("Accept-Encoding", ""))
            try:
                body, encoding = self.server.exporter.scrape(gzip_ok=gzip_ok)
                status, ctype = 200, CONTENT_TYPE
            except Exception as exc:
                self.server.exporter.scrape_failed(exc)
                body = f"perfsdk: scrape failed: {type(exc).__name__}: {exc}\n".encode()
                status, ctype = 500, "text/plain; charset=utf-8"
        elif path == "/healthz":
            body, status, ctype = b"ok\n", 200, "text/plain; charset=utf-8"
        else:
            body = b"not found; metrics are at /metrics\n"
            status, ctype = 404, "text/plain; charset=utf-8"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        if encoding:
            self.send_header("Content-Encoding", encoding)
        if path == "/metrics":
            self.send_header("Vary", "Accept-Encoding")
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line on stderr per scrape is noise in the application's output


def _port_of(raw: object) -> int | None:
    if isinstance(raw, bool):
        return None
    try:
        port = int(cast(Any, raw))
    except (TypeError, ValueError):
        return None
    return port if 0 <= port <= 65535 else None


# Every exporter alive in this process, so a forked child can let go of the parent's sockets.
_live: weakref.WeakSet[PrometheusExporter] = weakref.WeakSet()
_fork_hook_installed = False


def _after_fork_in_child() -> None:
    for exporter in list(_live):
        exporter._forget_server_after_fork()


def _install_fork_hook() -> None:
    global _fork_hook_installed
    if not _fork_hook_installed:
        _fork_hook_installed = True
        os.register_at_fork(after_in_child=_after_fork_in_child)


class PrometheusExporter:
    """Serves the latest snapshot at ``http://<http_host>:<http_port>/metrics``.

    :param config: reads ``http_host`` (default ``127.0.0.1``), ``http_port`` (default 9464;
        0 picks a free port, see :attr:`port`) and ``multiprocess_dir`` (when set, each scrape
        serves ``perfsdk.multiprocess.merged_snapshot(multiprocess_dir)`` instead).
    :param buckets: histogram upper bounds in seconds (default :data:`DEFAULT_BUCKETS`).

    The server runs on a daemon thread. Nothing here raises into the application: when the port
    is taken (another worker of the same service serves it) that is logged once at INFO, the
    exporter keeps accepting snapshots without a server, and tries to take the port over every
    :data:`REBIND_INTERVAL` seconds (so a surviving worker serves when the owner exits). Each
    snapshot is rendered at most once, lazily on its first scrape (the agent exports every
    second; scrapers come far less often), and the gzip form is cached alongside. When scrapes
    arrive at a steady period (three in a row within 20%), the export due just before the next
    expected scrape renders (and gzips, if the scraper asks for gzip) on the agent thread, and that
    scrape is answered with those bytes if they are at most :data:`RENDER_AHEAD_SECONDS` older than
    the newest snapshot: the same one render per scrape, moved off the scraper's clock.
    """

    name = "prometheus"

    def __init__(
        self,
        config: Mapping[str, object] | None = None,
        *,
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> None:
        config = {} if config is None else config
        self.host = str(config.get("http_host") or DEFAULT_HOST)
        raw_port = config.get("http_port", DEFAULT_PORT)
        mp_dir = config.get("multiprocess_dir") or ""
        self.multiprocess_dir = str(mp_dir)
        self._renderer = Renderer(buckets)
        #: The port the server listens on, or None when this process serves nothing.
        self.port: int | None = None
        #: Scrapes answered with 200.
        self.scrapes = 0
        self._lock = threading.Lock()
        self._render_lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._generation = 0
        self._body: bytes | None = None
        self._gzipped: bytes | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self._next_bind: float | None = None
        self._port_taken_logged = False
        self._failures_logged: set[str] = set()
        # Render-ahead: when scrapes come at a steady period, the export just before the next
        # expected scrape renders (and gzips) on the agent thread, so the scrape only sends bytes.
        self._scrape_times: list[float] = []
        self._scrape_gzip = False
        self._ahead: tuple[float, bytes, bytes | None] | None = None  # (taken, body, gzipped)
        self._ahead_cycle = -1
        self._scrape_count = 0
        port = _port_of(raw_port)
        if port is None:
            log.warning(
                "perfsdk: http_port=%r is not a port number (0..65535); "
                "the Prometheus endpoint is off",
                raw_port,
            )
            self._requested_port = -1
            return
        self._requested_port = port
        _install_fork_hook()
        _live.add(self)
        self._bind()

    # -- server lifecycle -----------------------------------------------------------------------

    @property
    def url(self) -> str | None:
        """``http://host:port/metrics`` while serving, else None."""
        if self.port is None:
            return None
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    @property
    def serving(self) -> bool:
        return self._server is not None

    def _bind(self) -> None:
        cls = _Server6 if ":" in self.host else _Server
        try:
            server = cls((self.host, self._requested_port), _Handler)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                self._next_bind = time.monotonic() + REBIND_INTERVAL
                if not self._port_taken_logged:
                    self._port_taken_logged = True
                    log.info(
                        "perfsdk: %s:%d is already in use (another worker serves the metrics?); "
                        "this process serves no Prometheus endpoint and retries every %.0f s",
                        self.host,
                        self._requested_port,
                        REBIND_INTERVAL,
                    )
            else:
                self._next_bind = None
                log.warning(
                    "perfsdk: cannot serve Prometheus metrics on %s:%d (%s); the endpoint is off",
                    self.host,
                    self._requested_port,
                    exc,
                )
            return
        server.exporter = self
        self._server = server
        self.port = int(server.server_address[1])
        self._next_bind = None
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"perfsdk-prometheus-{self.port}",
            daemon=True,
        )
        self._thread.start()
        if self._port_taken_logged:
            log.info("perfsdk: now serving Prometheus metrics at %s", self.url)

    def _forget_server_after_fork(self) -> None:
        # A forked child inherits the listening socket but not the thread serving it: close the
        # child's copy (the parent keeps serving) and, like any process that found the port
        # taken, try to take it over later, should the parent exit.
        self._lock = threading.Lock()  # either may have been held by a thread that is gone
        self._render_lock = threading.Lock()
        server, self._server, self._thread = self._server, None, None
        if server is None:
            return
        self.port = None
        try:
            server.socket.close()
        except OSError:
            pass
        if not self._closed and self._requested_port > 0:
            self._port_taken_logged = True  # the parent serves; nothing worth logging
            self._next_bind = time.monotonic() + REBIND_INTERVAL

    def close(self) -> None:
        """Stop the server (idempotent)."""
        self._closed = True
        server, thread = self._server, self._thread
        self._server = self._thread = None
        self.port = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5.0)

    # -- Exporter protocol ----------------------------------------------------------------------

    def export(self, snapshot: Snapshot) -> None:
        """Make ``snapshot`` the one served (rendered on its first scrape, or ahead of it)."""
        with self._lock:
            self._snapshot = snapshot
            self._generation += 1
            self._body = None
            self._gzipped = None
        self._render_ahead(snapshot)
        if (
            self._server is None
            and not self._closed
            and self._next_bind is not None
            and time.monotonic() >= self._next_bind
        ):
            self._bind()

    def _expected_scrape(self) -> tuple[float, int] | None:
        """(when the next scrape is due, which cycle) from the last scrapes' steady period."""
        times = self._scrape_times
        if len(times) < 3 or self.multiprocess_dir:
            return None
        p1, p2 = times[-1] - times[-2], times[-2] - times[-3]
        if p1 <= 0 or abs(p1 - p2) > 0.2 * p1:  # not a steady scraper: render on demand
            return None
        return times[-1] + p1, self._scrape_count

    def _render_ahead(self, snapshot: Snapshot) -> None:
        due = self._expected_scrape()
        if due is None:
            return
        at, cycle = due
        now = time.monotonic()
        if cycle == self._ahead_cycle or now < at - RENDER_AHEAD_SECONDS or now > at:
            return
        self._ahead_cycle = cycle
        body = self._renderer.render(snapshot)
        gzipped = _compress(body) if self._scrape_gzip else None
        with self._lock:
            self._ahead = (snapshot.taken_at, body, gzipped)

    def _take_ahead(self, gzip_ok: bool) -> tuple[bytes, str | None] | None:
        """The body rendered ahead, if it is recent enough to stand for the latest snapshot."""
        with self._lock:
            ahead, latest = self._ahead, self._snapshot
            self._ahead = None
        if ahead is None or latest is None or latest.taken_at - ahead[0] > RENDER_AHEAD_SECONDS:
            return None
        if gzip_ok:
            return (ahead[2], "gzip") if ahead[2] is not None else None
        return ahead[1], None

    def _note_scrape(self, gzip_ok: bool) -> None:
        with self._lock:
            self._scrape_times = [*self._scrape_times[-2:], time.monotonic()]
            self._scrape_count += 1
            self._scrape_gzip = gzip_ok

    # -- scraping -------------------------------------------------------------------------------

    def scrape(self, *, gzip_ok: bool = False) -> tuple[bytes, str | None]:
        """The body of a ``/metrics`` response and its content encoding (``"gzip"`` or None)."""
        if self.multiprocess_dir:
            merged = self._merged_snapshot()
            if merged is not None:
                fresh = self._renderer.render(merged)
                self._count_scrape()
                return (_compress(fresh), "gzip") if gzip_ok else (fresh, None)
        self._note_scrape(gzip_ok)
        ahead = self._take_ahead(gzip_ok)
        if ahead is not None:
            self._count_scrape()
            return ahead
        with self._render_lock:  # concurrent scrapes of one snapshot render it once
            with self._lock:
                snapshot, generation = self._snapshot, self._generation
                cached, gzipped = self._body, self._gzipped
            if cached is not None:
                body = cached
            else:
                body = b"" if snapshot is None else self._renderer.render(snapshot)
            if gzip_ok and gzipped is None:
                gzipped = _compress(body)
            with self._lock:
                if self._generation == generation:
                    self._body = body
                    if gzipped is not None:
                        self._gzipped = gzipped
        self._count_scrape()
        if gzip_ok and gzipped is not None:
            return gzipped, "gzip"
        return body, None

    def _count_scrape(self) -> None:
        with self._lock:
            self.scrapes += 1

    def _merged_snapshot(self) -> Snapshot | None:
        try:
            # Imported here: the module is optional, and only multiprocess setups need it.
            module = importlib.import_module("perfsdk.multiprocess")
            merge = module.merged_snapshot
        except (ImportError, AttributeError) as exc:
            self._log_once(
                "import",
                "perfsdk: multiprocess_dir is set but perfsdk.multiprocess.merged_snapshot is "
                "unavailable (%s); serving this process's snapshot only",
                exc,
            )
            return None
        return cast(Snapshot, merge(self.multiprocess_dir))

    def scrape_failed(self, exc: BaseException) -> None:
        """Log a failed scrape (once per kind of failure); the handler answers 500."""
        self._log_once(
            f"scrape:{type(exc).__name__}",
            "perfsdk: a Prometheus scrape failed (%s); answered 500",
            exc,
            exc_info=exc,
        )

    def _log_once(
        self, key: str, message: str, *args: object, exc_info: BaseException | None = None
    ) -> None:
        if key in self._failures_logged:
            return
        self._failures_logged.add(key)
        log.warning(message, *args, exc_info=exc_info)

    def __repr__(self) -> str:
        where = self.url or "not serving"
        return f"<PrometheusExporter {where}>"
