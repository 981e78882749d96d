"""Plain-text tables of a snapshot, for terminals and logs."""

from __future__ import annotations

import math

from .records import Snapshot, Stats

__all__ = ["format_duration", "render_snapshot"]


def format_duration(seconds: float) -> str:
    """``0.000123`` -> ``123.0µs``; NaN -> ``-``."""
    if seconds is None or math.isnan(seconds):
        return "-"
    a = abs(seconds)
    if a == 0:
        return "0"
    if a < 1e-6:
        return f"{seconds * 1e9:.0f}ns"
    if a < 1e-3:
        return f"{seconds * 1e6:.1f}µs"
    if a < 1.0:
        return f"{seconds * 1e3:.2f}ms"
    return f"{seconds:.3f}s"


def _labels(labels: tuple[tuple[str, str], ...]) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in labels) + "}" if labels else ""


def render_snapshot(snapshot: Snapshot, *, scope: str = "window") -> str:
    """A table of every timer (count, errors, rate, mean, p50..p99.9, max) then counters/gauges.

    :param scope: ``"window"`` (the rolling window) or ``"total"`` (since start).
    """
    if scope not in ("window", "total"):
        raise ValueError(f"scope={scope!r}; expected 'window' or 'total'")
    head = ["series", "count", "errors", "rate/s", "mean", "p50", "p90", "p99", "p99.9", "max"]
    rows: list[list[str]] = []
    for s in snapshot.series:
        if s.kind != "timer":
            continue
        st: Stats | None = s.window if scope == "window" else s.total
        if st is None:
            continue
        rows.append(
            [
                s.name + _labels(s.labels),
                str(st.count),
                str(st.errors),
                f"{st.rate:.1f}",
                format_duration(st.mean),
                format_duration(st.p50),
                format_duration(st.p90),
                format_duration(st.p99),
                format_duration(st.p999),
                format_duration(st.max),
            ]
        )
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = [
        "  ".join(
            h.ljust(w) if i == 0 else h.rjust(w)
            for i, (h, w) in enumerate(zip(head, widths, strict=True))
        )
    ]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
    others = [s for s in snapshot.series if s.kind != "timer"]
    if others:
        lines.append("")
        for s in others:
            lines.append(f"{s.kind:<8} {s.name}{_labels(s.labels)} = {s.value:g}")
    return "\n".join(lines)
