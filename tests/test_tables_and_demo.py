"""The text table and the demo, run as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import perfsdk
from perfsdk.tables import format_duration, render_snapshot
from tests.conftest import FakeClock

ROOT = Path(__file__).resolve().parents[1]


def test_format_duration() -> None:
    assert format_duration(0.000123) == "123.0µs"
    assert format_duration(0.25) == "250.00ms"
    assert format_duration(2.5) == "2.500s"
    assert format_duration(5e-8) == "50ns"
    assert format_duration(float("nan")) == "-"


def test_render_snapshot(registry: perfsdk.Registry, clock: FakeClock) -> None:
    s = registry.series("api_seconds", {"route": "/x"})
    for _ in range(10):
        s.record(0.002, clock())
    perfsdk.counter("hits_total", registry=registry).inc(3)
    out = render_snapshot(registry.snapshot())
    assert 'api_seconds{route="/x"}' in out
    assert "2.00ms" in out
    assert "hits_total = 3" in out


def test_demo_runs_and_reports() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py"), "--seconds", "1.5", "--threads", "2"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=True,
    )
    assert "=== report: since start ===" in out.stdout
    assert 'demo_handler_seconds{route="/search"}' in out.stdout
    assert "threshold checks" in out.stdout
