"""The rolling window: slices expire under an injected clock; totals are kept beside it."""

from __future__ import annotations

import math
import threading
from types import ModuleType

import pytest

S = 1_000_000_000  # ticks per second (nanoseconds)


def make(impl: ModuleType, **kw: object) -> object:
    return impl.Series(alpha=0.01, window_seconds=60, slices=6, ticks_per_second=1e9, **kw)


def test_window_expires_and_totals_remain(impl: ModuleType) -> None:
    s = make(impl)
    for i in range(100):
        s.record(0.010, 5 * S + i)
    sk, errors, _above, _secs = s.window(10 * S)
    assert sk.count == 100 and errors == 0
    assert math.isclose(sk.quantile(0.99), 0.010, rel_tol=0.01)
    # 59 s later the slice is still inside the window; 61 s later it is gone
    assert s.window(59 * S)[0].count == 100
    assert s.window(61 * S)[0].count == 0
    assert math.isnan(s.window(61 * S)[0].quantile(0.99))
    tot = s.totals(200 * S)[0]
    assert tot.count == 100
    # a new recording after idle reuses the slot, and the totals keep the old data
    s.record(0.5, 200 * S)
    assert s.window(200 * S)[0].count == 1
    assert s.totals(200 * S)[0].count == 101
    assert s.count == 101


def test_window_is_a_sliding_sum_of_slices(impl: ModuleType) -> None:
    s = make(impl)
    for sec in range(120):
        s.record(float(sec + 1), sec * S)
    sk = s.window(119 * S)[0]
    # window = slice holding 110..119 plus the five before it: seconds 60..119
    assert sk.count == 60
    assert sk.min == 61.0 and sk.max == 120.0
    assert s.totals(119 * S)[0].count == 120


def test_late_observation_older_than_window_goes_to_totals(impl: ModuleType) -> None:
    s = make(impl)
    s.record(1.0, 100 * S)
    s.record(2.0, 10 * S)  # 90 s late: outside the window, must not clobber a newer slice
    assert s.window(100 * S)[0].count == 1
    assert s.totals(100 * S)[0].count == 2


def test_errors_and_exact_threshold_count(impl: ModuleType) -> None:
    s = make(impl, threshold=0.1)
    for i in range(1000):
        s.record(0.05 if i % 10 else 0.2, S + i)
    s.record_error(0.3, S + 2000)
    sk, errors, above, _ = s.window(2 * S)
    assert errors == 1 and s.errors == 1
    assert above == 101 and s.above_threshold == 101
    assert sk.count == 1001


def test_nan_dropped_and_counted(impl: ModuleType) -> None:
    s = make(impl)
    s.record(math.nan, S)
    s.record(math.inf, S)
    s.record(1.0, S)
    assert s.count == 1 and s.dropped == 2


def test_rate_uses_covered_time(impl: ModuleType) -> None:
    s = impl.Series(window_seconds=60, slices=6, ticks_per_second=1e9, created=0)
    for i in range(300):
        s.record(0.001, i * S // 10)  # 10/s for 30 s
    _, _, _, secs = s.window(30 * S)
    assert secs == pytest.approx(30.0)


def test_threads_lose_nothing(impl: ModuleType) -> None:
    s = make(impl)
    n_threads, per = 8, 5000

    def work() -> None:
        for i in range(per):
            s.record(0.001 * (i % 50 + 1), S + i)

    threads = [threading.Thread(target=work) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert s.count == n_threads * per
    assert s.totals(2 * S)[0].count == n_threads * per


def test_bad_series_arguments(impl: ModuleType) -> None:
    with pytest.raises(ValueError, match="slices=0"):
        impl.Series(slices=0)
    with pytest.raises(ValueError, match="window_seconds=-1"):
        impl.Series(window_seconds=-1)
    with pytest.raises(ValueError, match=r"alpha=1\.0"):
        impl.Series(alpha=1.0)
