"""The rolling window: slices expire under an injected clock; totals are kept beside it."""

from __future__ import annotations

import math
import threading
from types import ModuleType

import pytest

from tests.conftest import NO_EXT

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


def _same(a: object, b: object) -> bool:
    """Equal, NaN equal to NaN (element-wise for tuples)."""
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b and type(a) is type(b)


def _expected_stats(impl: ModuleType, s: object, now: int, qs: list[float]) -> tuple[object, ...]:
    """What stats() must give, built from window() and totals()."""
    out = []
    for sk, errors, above, seconds in (s.window(now), s.totals(now)):  # type: ignore[attr-defined]
        count = sk.count
        out.append(
            (
                count,
                errors,
                sk.sum,
                sk.min,
                sk.max,
                sk.sum / count if count else math.nan,
                count / seconds if seconds > 0 else 0.0,
                *sk.quantiles(qs),
                seconds,
                above if s.threshold is not None else None,  # type: ignore[attr-defined]
            )
        )
    w, t = s.window(now)[0], s.totals(now)[0]  # type: ignore[attr-defined]
    return (out[0], out[1], s.dropped, w.to_bytes(), t.to_bytes())  # type: ignore[attr-defined]


@pytest.mark.parametrize("threshold", [None, 0.1])
def test_stats_is_window_and_totals_in_one_call(impl: ModuleType, threshold: float | None) -> None:
    s = make(impl, threshold=threshold, created=3 * S)
    qs = [0.5, 0.9, 0.95, 0.99, 0.999]
    assert _same(s.stats(3 * S, qs, True), _expected_stats(impl, s, 3 * S, qs))  # empty
    for sec in range(150):
        s.record(0.001 * (1 + sec % 37), (3 + sec) * S)
        if sec % 11 == 0:
            s.record_error(0.3, (3 + sec) * S)
        if sec % 13 == 0:
            s.record(math.nan, (3 + sec) * S)
    s.record(-2.0, 100 * S)
    s.record(0.0, 100 * S)
    for now in (152 * S, 152 * S + 123, 160 * S, 400 * S):
        want = _expected_stats(impl, s, now, qs)
        assert _same(s.stats(now, qs, True), want)
        assert _same(s.stats(now, qs), (*want[:3], None, None))
    # quantiles in any order come back in that order
    got = s.stats(152 * S, [0.99, 0.5, 1.0, 0.0])
    assert _same(got[1][7:11], tuple(s.totals(152 * S)[0].quantiles([0.99, 0.5, 1.0, 0.0])))
    with pytest.raises(ValueError, match="outside"):
        s.stats(152 * S, [1.5])


def test_state_version_moves_with_every_change(impl: ModuleType) -> None:
    s = make(impl, created=0)
    seen = []

    def version(now: int) -> int:
        v, epoch, wsec, tsec = s.state(now)
        assert epoch == now // (10 * S)
        assert tsec == now * 1e-9
        assert wsec == s.window(now)[3]
        seen.append(v)
        return int(v)

    v0 = version(S)
    assert version(2 * S) == v0  # time passing is not a change of the data
    s.record(0.1, S)
    v1 = version(2 * S)
    s.record(math.nan, S)  # dropped: a change too
    v2 = version(2 * S)
    s.record_error(0.2, S)
    v3 = version(2 * S)
    s.record(0.1, 70 * S)  # takes a slice into use, retiring the old one
    v4 = version(70 * S)
    s.record(0.1, 5 * S)  # older than the window: into the totals
    v5 = version(70 * S)
    s.clear(80 * S)  # forgets everything, yet the version moves on
    v6 = s.state(80 * S)[0]
    assert v0 < v1 < v2 < v3 < v4 < v5 < v6
    s.record(0.1, 80 * S)
    assert s.state(80 * S)[0] > v6


@pytest.mark.skipif(NO_EXT, reason="PERFSDK_NO_EXTENSIONS=1: the compiled module is not used")
def test_state_and_stats_compiled_and_twin_agree() -> None:
    import perfsdk._speedups as native
    import perfsdk._speedups_py as twin

    a, b = make(native, threshold=0.05), make(twin, threshold=0.05)
    qs = [0.5, 0.9, 0.99]
    for i in range(400):
        now = (i // 3) * S + i
        v = [0.001 * (1 + i % 17), math.nan, -1.0, 0.0, 0.2][i % 5]
        for s in (a, b):
            if i % 7 == 0:
                s.record_error(v, now)
            else:
                s.record(v, now)
        if i % 50 == 0:
            assert a.state(now) == b.state(now)
            assert _same(a.stats(now, qs, True), b.stats(now, qs, True))
    for s in (a, b):
        s.clear(500 * S)
    assert a.state(501 * S) == b.state(501 * S)
