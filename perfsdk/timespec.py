"""Times and durations as people write them: ``"-1h"``, ``"now-30m"``, ``"5m"``, ISO dates."""

from __future__ import annotations

import math
import re
from datetime import datetime

from .errors import ConfigError

__all__ = ["parse_duration", "parse_time"]

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)?\Z")
_RELATIVE = re.compile(r"(?:now)?([+-]?)(\d+(?:\.\d+)?)(ms|s|m|h|d|w)\Z")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_TIME_HELP = (
    "use a Unix time (1700000000), 'now', a time relative to now ('-1h', '-30m', '-7d'; units "
    "ms, s, m, h, d, w) or an ISO 8601 date ('2024-05-01T12:00:00')"
)


def parse_time(value: float | str | datetime, *, now: float, name: str = "time") -> float:
    """A Unix time from a number, ``"now"``, a relative time (``"-1h"``, ``"now-30m"``; an
    unsigned ``"1h"`` also means an hour ago) or an ISO 8601 date (naive: local time).

    :raises ConfigError: naming ``name`` and the value.
    """
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if math.isfinite(value):
            return float(value)
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        if text == "now":
            return now
        m = _RELATIVE.match(text)
        if m:
            sign = 1.0 if m.group(1) == "+" else -1.0
            return now + sign * float(m.group(2)) * _UNITS[m.group(3)]
        try:
            number = float(text)
        except ValueError:
            try:
                return datetime.fromisoformat(value.strip()).timestamp()
            except ValueError:
                pass
        else:
            if math.isfinite(number):
                return number
    raise ConfigError(f"{name}={value!r} is not a time; {_TIME_HELP}")


def parse_duration(value: float | str, *, name: str = "step") -> float:
    """Positive seconds from a number or a string such as ``"60"``, ``"5m"``, ``"1h"``;
    ``"all"`` (or ``math.inf``) is infinite: one bucket for the whole range.

    :raises ConfigError: naming ``name`` and the value.
    """
    seconds = math.nan
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        m = _DURATION.match(text)
        if m:
            seconds = float(m.group(1)) * _UNITS[m.group(2) or "s"]
        elif text == "all":
            seconds = math.inf
    if not seconds > 0.0:
        raise ConfigError(
            f"{name}={value!r} is not a positive duration; use seconds (60), a number with a "
            "unit (30s, 5m, 1h, 1d) or 'all' (one point for the whole range)"
        )
    return seconds
