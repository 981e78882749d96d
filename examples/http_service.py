"""A small HTTP service timed with @perfsdk.timed, and no agent code at all.

The agent comes from the outside::

    perfsdk run --port 9464 -- python examples/http_service.py --port 8000

Routes (GET): ``/search?q=...`` (fast, a long tail), ``/checkout`` (slower, about 3% fail with a
500), ``/report`` (slow), ``/healthz``. Each handler is its own series of ``demo_http_seconds``,
labelled by route. SIGTERM or Ctrl-C stops the server cleanly (in-flight requests finish), so the
agent's last round at exit sees every request. ``examples/run_demo.py`` drives load at it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from urllib.parse import parse_qs, urlsplit

import perfsdk

_rng = threading.local()


def rng() -> random.Random:
    r: random.Random | None = getattr(_rng, "r", None)
    if r is None:
        r = _rng.r = random.Random()
    return r


class PaymentDeclined(Exception):
    pass


@perfsdk.timed("demo_http_seconds", labels={"route": "/search"}, threshold=0.010)
def search(query: str) -> dict[str, object]:
    # mostly a millisecond or two; 1% of queries miss the cache and take ~25 ms
    time.sleep(rng().lognormvariate(-6.9, 0.5) + (0.025 if rng().random() < 0.01 else 0.0))
    return {"query": query, "hits": rng().randrange(50)}


@perfsdk.timed("demo_http_seconds", labels={"route": "/checkout"}, threshold=0.050)
def checkout() -> dict[str, object]:
    time.sleep(rng().lognormvariate(-4.6, 0.4))  # ~10 ms
    if rng().random() < 0.03:
        raise PaymentDeclined("payment declined")
    return {"order": rng().randrange(10**6)}


@perfsdk.timed("demo_http_seconds", labels={"route": "/report"}, threshold=0.250)
def report() -> dict[str, object]:
    time.sleep(rng().uniform(0.08, 0.2))
    return {"rows": rng().randrange(1000, 5000)}


class Handler(BaseHTTPRequestHandler):
    server_version = "perfsdk-demo"
    timeout = 10.0  # a stalled client cannot hold up shutdown for long

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        try:
            if url.path == "/search":
                body = search(parse_qs(url.query).get("q", [""])[0])
            elif url.path == "/checkout":
                body = checkout()
            elif url.path == "/report":
                body = report()
            elif url.path == "/healthz":
                body = {"ok": True}
            else:
                self._send(404, {"error": f"no route {url.path}"})
                return
        except PaymentDeclined as exc:
            self._send(500, {"error": str(exc)})
            return
        self._send(200, body)

    def _send(self, status: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per request would drown the demo's output


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("PORT", "8000")),
        help="port on 127.0.0.1 (default: $PORT, else 8000)",
    )
    args = parser.parse_args()

    # HTTP/1.0 (one request per connection) and non-daemon request threads: server_close()
    # waits for the requests in flight, so they are all recorded before the agent's last round.
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)

    def stop(signum: int, frame: FrameType | None) -> None:
        # shutdown() waits for serve_forever() to return: call it from another thread
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"demo service on http://127.0.0.1:{server.server_port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()
    print("demo service stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
