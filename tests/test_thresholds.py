"""Many series against many rules in one native call."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

import perfsdk
from perfsdk import ConfigError, ThresholdRule, ThresholdSet
from perfsdk.thresholds import parse_statistic
from tests.conftest import FakeClock


def test_rules_against_live_windows(registry: perfsdk.Registry, clock: FakeClock) -> None:
    fast = registry.series("fast_seconds")
    slow = registry.series("slow_seconds", {"route": "/a"}, threshold=0.5)
    for i in range(1000):
        fast.record(0.001 * (1 + i % 10), clock())
        slow.record(0.1 if i % 100 else 1.0, clock())
    slow.record_error(0.2, clock())
    clock.advance(10)
    rules = [
        ThresholdRule.make("fast_seconds", "p99", ">", 0.005),
        ThresholdRule.make("fast_seconds", "p50", "<", 0.001),
        ThresholdRule.make("slow_seconds", "max", ">=", 1.0, labels={"route": "/a"}),
        ThresholdRule.make("slow_seconds", "count", ">", 1000, labels={"route": "/a"}),
        ThresholdRule.make("slow_seconds", "above", ">", 9, labels={"route": "/a"}),
        ThresholdRule.make("slow_seconds", "error_ratio", "<=", 0.01, labels={"route": "/a"}),
        ThresholdRule.make("slow_seconds", "rate", ">", 1000, labels={"route": "/a"}),
        ThresholdRule.make("slow_seconds", "mean", ">", 0.05, labels={"route": "/a"}),
        ThresholdRule.make("missing_seconds", "p99", ">", 0),
    ]
    results = ThresholdSet(rules).evaluate(registry)
    assert [r.rule for r in results] == rules
    got = {(r.rule.series, r.rule.stat, r.rule.op): (r.observed, r.matched) for r in results}
    assert got[("fast_seconds", "p99", ">")][1] is True
    assert got[("fast_seconds", "p99", ">")][0] == pytest.approx(0.010, rel=0.01)
    assert got[("fast_seconds", "p50", "<")][1] is False
    assert got[("slow_seconds", "max", ">=")] == (1.0, True)
    assert got[("slow_seconds", "count", ">")] == (1001.0, True)
    assert got[("slow_seconds", "above", ">")] == (10.0, True)
    assert got[("slow_seconds", "error_ratio", "<=")][1] is True
    assert got[("slow_seconds", "rate", ">")][1] is False
    assert got[("slow_seconds", "mean", ">")][1] is True
    missing = got[("missing_seconds", "p99", ">")]
    assert math.isnan(missing[0]) and missing[1] is False


def test_vectorised_matches_one_by_one(registry: perfsdk.Registry, clock: FakeClock) -> None:
    rng = random.Random(7)
    names = [f"s{i}_seconds" for i in range(50)]
    for n in names:
        s = registry.series(n)
        for _ in range(rng.randint(0, 300)):
            s.record(rng.lognormvariate(-5, 1), clock())
    stats = ["p50", "p90", "p99", "p99.9", "max", "min", "mean", "count"]
    rules = [
        ThresholdRule.make(
            rng.choice(names),
            rng.choice(stats),
            rng.choice([">", "<", ">=", "<="]),
            rng.random() * 0.02,
        )
        for _ in range(2000)
    ]
    results = ThresholdSet(rules).evaluate(registry)
    snap = {s.name: s for s in registry.snapshot().series}
    for r in results:
        w = snap[r.rule.series].window
        assert w is not None
        sk = registry.window_sketches([(r.rule.series, ())])[0][0]  # type: ignore[index]
        _code, q = parse_statistic(r.rule.stat)
        if r.rule.stat.startswith("p"):
            expected = sk.quantile(q)
        elif r.rule.stat == "count":
            expected = float(w.count)
        else:
            expected = getattr(w, r.rule.stat)
        if math.isnan(expected):
            assert math.isnan(r.observed) and not r.matched
            continue
        assert r.observed == pytest.approx(expected, rel=1e-12)
        op = {">": np.greater, "<": np.less, ">=": np.greater_equal, "<=": np.less_equal}[r.rule.op]
        assert r.matched == bool(op(expected, r.rule.value))


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("a_seconds", "p101", ">", 1), "'p101'"),
        (("a_seconds", "median", ">", 1), "'median'"),
        (("a_seconds", "p99", "!=", 1), "'!='"),
        (("a_seconds", "p99", ">", "fast"), "'fast'"),
        (("a seconds", "p99", ">", 1), "'a seconds'"),
    ],
)
def test_bad_rules_name_the_value(args: tuple, needle: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigError) as info:
        ThresholdRule.make(*args)
    assert needle in str(info.value)


def test_percentile_parsing() -> None:
    assert parse_statistic("p99.9")[1] == pytest.approx(0.999)
    assert parse_statistic("p50")[1] == 0.5
