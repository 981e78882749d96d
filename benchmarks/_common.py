"""Shared by the benchmark scripts: the checkout on sys.path, machine facts, tables, JSON output.

Benchmarks time this checkout: its root goes first on ``sys.path``, so an installed perfsdk
(editable or not) does not shadow it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    import perfsdk._accel as accel

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "perfsdk_implementation": accel.IMPLEMENTATION,
        "perfsdk_clock": accel.clock_source(),
    }


def machine_line() -> str:
    m = machine()
    return (
        f"Python {m['python']} on {m['cpu']} ({m['cpus']} CPUs); perfsdk "
        f"{m['perfsdk_implementation']}, clock {m['perfsdk_clock']}"
    )


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    return p


def write_json(path: str | None, payload: dict[str, Any]) -> None:
    if not path:
        return
    payload = {"machine": machine(), **payload}
    Path(path).write_text(json.dumps(payload, indent=2, default=float) + "\n")
    print(f"wrote {path}")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> str:
    """A Markdown table (it reads as plain text too). align: one 'l' or 'r' per column."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    align = align or "l" + "r" * (len(headers) - 1)

    def line(row: Sequence[str]) -> str:
        parts = [
            c.ljust(w) if a == "l" else c.rjust(w)
            for c, w, a in zip(row, widths, align, strict=True)
        ]
        return "| " + " | ".join(parts) + " |"

    rule = (
        "| "
        + " | ".join(
            "-" * w if a == "l" else "-" * (w - 1) + ":" for w, a in zip(widths, align, strict=True)
        )
        + " |"
    )
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def build_timer_registry(n_series: int, n_obs: int) -> tuple[Any, list[Any]]:
    """A fresh registry of ``n_series`` timers (one name, a route label each), ``n_obs`` apiece."""
    import random

    import perfsdk

    reg = perfsdk.Registry()
    rng = random.Random(42)
    series = []
    for i in range(n_series):
        s = reg.series("api_request_seconds", {"route": f"/api/v1/item/{i}", "method": "GET"})
        now = reg.now()
        for _ in range(n_obs):
            s.record(rng.lognormvariate(-6.0, 1.0), now)
        series.append(s)
    return reg, series
