"""``make demo``: examples/run_demo.py end to end, shortened, and the service on its own."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERFSDK_")}
    for keep in ("PERFSDK_NO_EXTENSIONS", "PERFSDK_EXPECT_COMPILED"):
        if keep in os.environ:
            env[keep] = os.environ[keep]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return env


def test_run_demo_smoke(tmp_path: Path) -> None:
    db = tmp_path / "demo" / "perfsdk.db"
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "run_demo.py"), "--seconds", "2", "--db", str(db)],
        cwd=ROOT,
        env={**environment(), "COLUMNS": "160"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "perfsdk run --port" in out
    rows = {
        cells[0]: cells[1:]
        for line in out.splitlines()
        if line.startswith("│")
        for cells in [[c.strip() for c in line.strip("│ ").split("│")]]
    }
    assert set(rows) == {"/search", "/checkout", "/report"}
    for route, (requests, rate, p50, p99, p999, errors) in rows.items():
        assert int(requests) > 0, route
        assert float(rate) > 0, route
        assert all(re.fullmatch(r"[\d.]+(µs|ms|s)", v) for v in (p50, p99, p999)), route
        assert int(errors) >= 0
    assert int(rows["/search"][0]) > int(rows["/report"][0])
    assert rows["/search"][5] == rows["/report"][5] == "0"  # only checkout fails
    assert "service stopped with SIGTERM (exit code 0)" in out
    assert re.search(r"Prometheus endpoint was\s+http://127\.0\.0\.1:\d+/metrics", out)
    assert f"history database         {db}" in out
    assert "perfsdk history demo_http_seconds --label route=/checkout --stat p99" in out
    assert db.is_file()

    from perfsdk.store import history

    stored = history("demo_http_seconds", {"route": "/search"}, stat="count", db_path=db)
    assert sum(p.value for p in stored) == int(rows["/search"][0])


def test_http_service_alone(tmp_path: Path) -> None:
    """The service has no agent code: on its own it serves, fails some checkouts, and stops on
    SIGTERM with exit code 0."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "http_service.py")],
        cwd=tmp_path,
        env={**environment(), "PORT": str(port)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == f"demo service on http://127.0.0.1:{port}\n"
        base = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(base + "/search?q=x", timeout=10) as response:
            assert json.loads(response.read())["query"] == "x"
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(base + "/nowhere", timeout=10)
        assert missing.value.code == 404
        statuses = []
        for _ in range(150):
            try:
                with urllib.request.urlopen(base + "/checkout", timeout=10) as response:
                    statuses.append(response.status)
            except urllib.error.HTTPError as exc:
                statuses.append(exc.code)
        assert set(statuses) <= {200, 500} and statuses.count(200) > 100
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0
    assert "demo service stopped" in err
