"""perfsdk demo: an HTTP service monitored with no code change, under load.

Run with ``make demo`` (or ``python examples/run_demo.py --seconds 8``). It

1. starts ``examples/http_service.py`` (which contains no agent code) under
   ``perfsdk run --port <free> --db .perfsdk/demo/perfsdk.db -o store_interval_seconds=1
   -- python ...`` (a history row per second, so a short demo has some history);
2. waits until the service and the agent's Prometheus endpoint answer;
3. drives load at it from a few client threads for a few seconds, with a progress bar;
4. reads the endpoint, as Prometheus would, and prints what the agent measured per route;
5. stops the service with SIGTERM (the agent flushes a last round into the history at exit) and
   prints where the endpoint was, where the database is and how to look at it.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from perfsdk.errors import PerfsdkError
from perfsdk.tables import format_duration
from perfsdk.top_cli import TimerReading, read_endpoint

ROOT = Path(__file__).resolve().parents[1]
SERVICE = ROOT / "examples" / "http_service.py"
DEFAULT_DB = ROOT / ".perfsdk" / "demo" / "perfsdk.db"
SERIES = "demo_http_seconds"
#: Route -> share of the requests the clients send.
MIX = {"/search": 0.75, "/checkout": 0.2, "/report": 0.05}
AGENT_INTERVAL = 0.5

console = Console()


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:  # all bound at once, so the ports differ
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def relative(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def wait_healthy(process: subprocess.Popen[bytes], urls: list[str], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    pending = list(urls)
    while pending and time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        pending = [url for url in pending if not answers(url)]
        if pending:
            time.sleep(0.1)
    return not pending


def client(
    base: str, stop: threading.Event, seed: int, sent: Counter[str], lock: threading.Lock
) -> None:
    rng = random.Random(seed)
    routes, weights = list(MIX), list(MIX.values())
    while not stop.is_set():
        route = rng.choices(routes, weights)[0]
        url = base + route + (f"?q=item{rng.randrange(100)}" if route == "/search" else "")
        outcome = "ok"
        try:
            with urllib.request.urlopen(url, timeout=5.0) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            outcome = "http_error" if exc.code >= 500 else "other"
        except OSError:
            outcome = "unreachable"
        with lock:
            sent[route] += 1
            sent[outcome] += 1


def drive_load(base: str, seconds: float, threads: int) -> tuple[Counter[str], float]:
    sent: Counter[str] = Counter()
    lock = threading.Lock()
    stop = threading.Event()
    workers = [
        threading.Thread(target=client, args=(base, stop, i, sent, lock), daemon=True)
        for i in range(threads)
    ]
    started = time.monotonic()
    for w in workers:
        w.start()
    with Progress(
        TextColumn("[bold]load[/bold] {task.description}"),
        BarColumn(),
        TextColumn("{task.completed:.1f}/{task.total:.0f} s"),
        TimeRemainingColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("", total=seconds)
        while (elapsed := time.monotonic() - started) < seconds:
            with lock:
                done, errors = sum(sent[r] for r in MIX), sent["http_error"]
            progress.update(
                task,
                completed=elapsed,
                description=f"{threads} clients, {done} requests ({errors} answered 500)",
            )
            time.sleep(0.1)
        progress.update(task, completed=seconds)
    stop.set()
    for w in workers:
        w.join(timeout=10.0)
    return sent, time.monotonic() - started


def scrape_routes(url: str, expected: int, timeout: float) -> dict[str, TimerReading]:
    """The demo's series from the endpoint, once the agent's round has seen every request."""
    deadline = time.monotonic() + timeout
    routes: dict[str, TimerReading] = {}
    while True:
        reading = read_endpoint(url)
        routes = {
            dict(t.labels).get("route", ""): t for t in reading.timers.values() if t.name == SERIES
        }
        if sum(t.count for t in routes.values()) >= expected or time.monotonic() >= deadline:
            return routes
        time.sleep(AGENT_INTERVAL / 2)


def summary_table(routes: dict[str, TimerReading], seconds: float) -> Table:
    table = Table(title=f"what the agent measured ({SERIES}, by route)", title_justify="left")
    table.add_column("route")
    for header in ("requests", "rate/s", "p50", "p99", "p99.9", "errors"):
        table.add_column(header, justify="right")
    for route in sorted(routes, key=lambda r: -routes[r].count):
        t = routes[route]
        table.add_row(
            route,
            f"{t.count:.0f}",
            f"{t.count / seconds:.1f}",
            format_duration(t.p50),
            format_duration(t.p99),
            format_duration(t.p999),
            f"[red]{t.errors:.0f}[/red]" if t.errors else "0",
        )
    return table


def stop_service(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="load duration (default 8)")
    parser.add_argument("--threads", type=int, default=4, help="client threads (default 4)")
    parser.add_argument(
        "--db",
        type=Path,
        default=DEFAULT_DB,
        help=f"history database (default {relative(DEFAULT_DB)}, emptied first)",
    )
    args = parser.parse_args()

    db: Path = args.db.resolve()
    if db == DEFAULT_DB:
        shutil.rmtree(db.parent, ignore_errors=True)  # a fresh history for each demo
    db.parent.mkdir(parents=True, exist_ok=True)
    log_path = db.parent / "service.log"
    service_port, metrics_port = free_ports(2)
    base = f"http://127.0.0.1:{service_port}"
    metrics = f"http://127.0.0.1:{metrics_port}/metrics"
    command = [
        sys.executable, "-m", "perfsdk", "run",
        "--port", str(metrics_port), "--db", str(db), "--interval", str(AGENT_INTERVAL),
        "-o", "store_interval_seconds=1",
        "--", sys.executable, str(SERVICE), "--port", str(service_port),
    ]  # fmt: skip
    env = dict(os.environ)
    # perfsdk importable even when it is not installed (a plain checkout)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(ROOT)]))

    console.print("[bold]perfsdk demo[/bold]: a service with no agent code, under perfsdk run")
    console.print(
        "  $ perfsdk run --port", metrics_port, "--db", relative(db), "--interval",
        AGENT_INTERVAL, "-o store_interval_seconds=1 -- python", relative(SERVICE),
        "--port", service_port,
        highlight=False, soft_wrap=True,
    )  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log)
    try:
        if not wait_healthy(process, [base + "/healthz", metrics], timeout=30.0):
            console.print(f"[red]the service did not come up[/red]; its output ({log_path}):")
            console.print(log_path.read_text(errors="replace"), markup=False, highlight=False)
            return 1
        console.print(f"  service at {base}, agent endpoint at {metrics}\n", soft_wrap=True)
        sent, seconds = drive_load(base, args.seconds, args.threads)
        total = sum(sent[r] for r in MIX)
        try:
            routes = scrape_routes(metrics, total, timeout=5 * AGENT_INTERVAL + 2)
        except PerfsdkError as exc:
            console.print(f"[red]could not read the endpoint[/red]: {exc}")
            routes = {}
        console.print()
        console.print(summary_table(routes, seconds))
        console.print(
            f"clients sent {total} requests in {seconds:.1f} s; {sent['http_error']} were "
            f"answered 500 (checkout declines), {sent['unreachable']} failed to connect"
        )
    finally:
        if process.poll() is None:
            code = stop_service(process)
            console.print(f"\nservice stopped with SIGTERM (exit code {code})")

    console.print(f"\nPrometheus endpoint was  {metrics}  (while the service ran)", soft_wrap=True)
    if db.exists():
        console.print(f"history database         {relative(db)}")
        console.print("look at it with")
        for hint in (
            f"perfsdk history {SERIES} --label route=/checkout --stat p99 --step 1s "
            f"--db {relative(db)}",
            f"perfsdk history {SERIES} --label route=/checkout --stat errors --step 1s "
            f"--db {relative(db)}",
            f"perfsdk top --db {relative(db)} --once",
        ):
            console.print(f"  {hint}", highlight=False, soft_wrap=True)
    else:
        console.print(f"[yellow]no history database at {relative(db)}[/yellow] (store disabled?)")
    console.print(f"service output             {relative(log_path)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
