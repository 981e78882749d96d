"""Threshold checks: many series against many rules in one native call.

A rule reads "statistic of series over the rolling window, operator, value", e.g.
``ThresholdRule("checkout_seconds", "p99", ">", 0.25)``. ``ThresholdSet`` compiles rules once into
flat arrays sorted by series and quantile, so evaluating thousands of rules is one pass over each
series' buckets (``perfsdk._speedups.evaluate_rules``). The alert engine builds on this.
"""

from __future__ import annotations

import math
import re
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from . import _accel
from .errors import ConfigError
from .naming import Labels, check_metric_name, normalize_labels
from .registry import Registry

__all__ = ["ThresholdResult", "ThresholdRule", "ThresholdSet", "parse_statistic"]

_PERCENTILE_RE = re.compile(r"p(\d+(?:\.\d+)?)\Z")
_PLAIN = ("count", "rate", "mean", "min", "max", "sum", "errors", "error_ratio", "above")


def parse_statistic(stat: str) -> tuple[int, float]:
    """``"p99"`` -> (quantile code, 0.99); ``"p99.9"`` -> 0.999; ``"mean"`` -> (mean code, 0)."""
    if isinstance(stat, str):
        if stat in _PLAIN:
            return _accel.STAT_CODES[stat], 0.0
        m = _PERCENTILE_RE.match(stat)
        if m:
            pct = float(m.group(1))
            if 0.0 <= pct <= 100.0:
                return _accel.STAT_CODES["quantile"], pct / 100.0
    raise ConfigError(
        f"unknown statistic {stat!r}; expected one of {', '.join(_PLAIN)} or a percentile "
        "such as p50, p99, p99.9"
    )


@dataclass(frozen=True, slots=True)
class ThresholdRule:
    """``stat(series) op value`` over the rolling window. ``labels`` must match exactly."""

    series: str
    stat: str
    op: str
    value: float
    labels: Labels = ()
    name: str = ""

    @classmethod
    def make(
        cls,
        series: str,
        stat: str,
        op: str,
        value: float,
        labels: Mapping[str, object] | None = None,
        name: str = "",
    ) -> ThresholdRule:
        where = f"rule {name!r}" if name else f"rule on {series!r}"
        check_metric_name(series, where=f"{where}: series")
        parse_statistic(stat)
        if op not in _accel.OP_CODES:
            raise ConfigError(f"{where}: unknown operator {op!r}; expected one of >, >=, <, <=")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise ConfigError(f"{where}: threshold value {value!r} is not a number")
        return cls(series, stat, op, float(value), normalize_labels(labels), name)


@dataclass(frozen=True, slots=True)
class ThresholdResult:
    rule: ThresholdRule
    observed: float
    matched: bool


class ThresholdSet:
    """Rules compiled for one vectorised evaluation."""

    def __init__(self, rules: Iterable[ThresholdRule]) -> None:
        self.rules: tuple[ThresholdRule, ...] = tuple(rules)
        keys: list[tuple[str, Labels]] = []
        index: dict[tuple[str, Labels], int] = {}
        rows = []
        for pos, r in enumerate(self.rules):
            key = (r.series, r.labels)
            if key not in index:
                index[key] = len(keys)
                keys.append(key)
            code, arg = parse_statistic(r.stat)
            rows.append((index[key], arg if code == _accel.STAT_CODES["quantile"] else -1.0, pos))
        rows.sort()
        self.keys = keys
        self._order = [pos for _, _, pos in rows]
        n = len(rows)
        self._series_idx = array("q", [si for si, _, _ in rows])
        self._stat = array("i", [parse_statistic(self.rules[p].stat)[0] for p in self._order])
        self._arg = array("d", [max(a, 0.0) for _, a, _ in rows])
        self._op = array("i", [_accel.OP_CODES[self.rules[p].op] for p in self._order])
        self._limit = array("d", [self.rules[p].value for p in self._order])
        self._out_value = array("d", bytes(8 * n))
        self._out_match = array("B", bytes(n))

    def evaluate_sketches(
        self,
        windows: Sequence[tuple[_accel.Sketch, int, int, float] | None],
    ) -> list[ThresholdResult]:
        """Evaluate against (sketch, errors, above, seconds) per key of ``self.keys``."""
        empty = _accel.Sketch()
        sketches = []
        seconds = array("d")
        errors = array("d")
        above = array("d")
        for w in windows:
            if w is None:
                sketches.append(empty)
                seconds.append(0.0)
                errors.append(0.0)
                above.append(0.0)
            else:
                sketches.append(w[0])
                errors.append(float(w[1]))
                above.append(float(w[2]))
                seconds.append(float(w[3]))
        if not self._order:
            return []
        _accel.evaluate_rules(
            sketches,
            seconds,
            errors,
            above,
            self._series_idx,
            self._stat,
            self._arg,
            self._op,
            self._limit,
            self._out_value,
            self._out_match,
        )
        results: list[ThresholdResult | None] = [None] * len(self.rules)
        for j, pos in enumerate(self._order):
            results[pos] = ThresholdResult(
                self.rules[pos], self._out_value[j], bool(self._out_match[j])
            )
        return [r for r in results if r is not None]

    def evaluate(self, registry: Registry, *, now: int | None = None) -> list[ThresholdResult]:
        """Evaluate every rule against the registry's rolling windows."""
        return self.evaluate_sketches(registry.window_sketches(self.keys, now=now))
