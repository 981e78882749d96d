"""Pick the compiled hot path (``perfsdk._speedups``) or its pure-Python twin.

``PERFSDK_NO_EXTENSIONS=1`` forces the twin (as multidict's ``MULTIDICT_NO_EXTENSIONS``); a missing
or broken extension falls back to it silently, and ``IMPLEMENTATION`` tells which one is live.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

__all__ = [
    "IMPLEMENTATION",
    "OP_CODES",
    "STAT_CODES",
    "Counter",
    "Gauge",
    "RecordMaker",
    "Series",
    "Sketch",
    "TimedFunction",
    "check_alpha",
    "check_quantiles",
    "clock_source",
    "evaluate_rules",
    "format_samples",
    "histogram_samples",
    "now_ticks",
    "refine_clock",
    "ticks_per_second",
]

NO_EXTENSIONS = os.environ.get("PERFSDK_NO_EXTENSIONS", "") not in ("", "0")

if TYPE_CHECKING:
    from ._speedups_py import (
        OP_CODES,
        STAT_CODES,
        Counter,
        Gauge,
        RecordMaker,
        Series,
        Sketch,
        TimedFunction,
        check_alpha,
        check_quantiles,
        clock_source,
        evaluate_rules,
        format_samples,
        histogram_samples,
        now_ticks,
        refine_clock,
        ticks_per_second,
    )

    IMPLEMENTATION: str
else:
    import importlib

    try:
        if NO_EXTENSIONS:
            raise ImportError("PERFSDK_NO_EXTENSIONS is set")
        _impl = importlib.import_module("perfsdk._speedups")
        IMPLEMENTATION = "compiled"
    except ImportError:
        _impl = importlib.import_module("perfsdk._speedups_py")
        IMPLEMENTATION = "python"
    # The names are listed once, in __all__; type checkers read the twin's through the block above.
    globals().update({n: getattr(_impl, n) for n in __all__ if n != "IMPLEMENTATION"})
