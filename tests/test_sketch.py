"""Property tests of the sketch: accuracy, merge, serialisation, and compiled == twin."""

from __future__ import annotations

import math
import pickle
from types import ModuleType

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import perfsdk._speedups_py as twin
from tests.conftest import NO_EXT

QS = [0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0]
TOL = 1e-12  # floating-point slack on top of alpha in the bound check

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
positive = st.floats(min_value=1e-9, max_value=1e6, allow_nan=False)
values = st.lists(finite, min_size=1, max_size=300)
alphas = st.sampled_from([0.001, 0.005, 0.01, 0.02, 0.05])


def exact(data: list[float], q: float) -> float:
    return float(np.quantile(np.array(data, dtype=float), q, method="lower"))


def within(got: float, want: float, alpha: float) -> bool:
    if want == 0.0 or abs(want) < 2.2250738585072014e-308:
        return got == 0.0 or abs(got) < 2.2250738585072014e-308
    return abs(got - want) <= (alpha + TOL) * abs(want)


@settings(max_examples=150, deadline=None)
@given(data=values, alpha=alphas)
def test_every_quantile_within_alpha(impl: ModuleType, data: list[float], alpha: float) -> None:
    sk = impl.Sketch(alpha)
    sk.add_many(data)
    got = sk.quantiles(QS)
    for q, g in zip(QS, got, strict=True):
        assert within(g, exact(data, q), alpha), (q, g, exact(data, q))
    assert sk.count == len(data)
    assert sk.min == min(data) and sk.max == max(data)


@settings(max_examples=60, deadline=None)
@given(data=st.lists(positive, min_size=1, max_size=2000))
def test_latency_like_values(impl: ModuleType, data: list[float]) -> None:
    sk = impl.Sketch(0.01)
    for v in data:
        sk.add(v)
    for q, g in zip(QS, sk.quantiles(QS), strict=True):
        assert within(g, exact(data, q), 0.01)


@settings(max_examples=80, deadline=None)
@given(a=values, b=values, alpha=alphas)
def test_merge_equals_sketch_of_concatenation(
    impl: ModuleType, a: list[float], b: list[float], alpha: float
) -> None:
    s1, s2, both = impl.Sketch(alpha), impl.Sketch(alpha), impl.Sketch(alpha)
    s1.add_many(a)
    s2.add_many(b)
    both.add_many(a + b)
    s1.merge(s2)
    assert s1.bins() == both.bins()
    assert s1.count == both.count
    assert s1.quantiles(QS) == both.quantiles(QS)
    # sums differ only by the order of floating-point additions
    scale = sum(abs(x) for x in a + b)
    if math.isfinite(scale):
        assert abs(s1.sum - both.sum) <= 1e-9 * scale


@settings(max_examples=80, deadline=None)
@given(data=st.lists(st.one_of(finite, st.just(math.nan), st.just(math.inf)), max_size=200))
def test_serialisation_round_trips(impl: ModuleType, data: list[float]) -> None:
    sk = impl.Sketch(0.01)
    sk.add_many(data)
    blob = sk.to_bytes()
    back = impl.Sketch.from_bytes(blob)
    assert back.to_bytes() == blob
    assert back.bins() == sk.bins()
    assert back.count == sk.count and back.dropped == sk.dropped
    assert pickle.loads(pickle.dumps(sk)).to_bytes() == blob
    # and across twins: the bytes are one format
    assert twin.Sketch.from_bytes(blob).to_bytes() == blob


@pytest.mark.skipif(NO_EXT, reason="PERFSDK_NO_EXTENSIONS=1: the compiled module is not used")
@settings(max_examples=200, deadline=None)
@given(
    data=st.lists(st.one_of(finite, st.just(math.nan), st.just(-math.inf)), max_size=300),
    alpha=alphas,
)
def test_compiled_and_twin_agree(data: list[float], alpha: float) -> None:
    import perfsdk._speedups as native

    c, p = native.Sketch(alpha), twin.Sketch(alpha)
    for v in data:
        c.add(v)
        p.add(v)
    assert c.to_bytes() == p.to_bytes()
    assert c.bins() == p.bins()
    cq, pq = c.quantiles(QS), p.quantiles(QS)
    assert all((x == y) or (math.isnan(x) and math.isnan(y)) for x, y in zip(cq, pq, strict=True))
    assert (c.count, c.dropped, c.zero_count) == (p.count, p.dropped, p.zero_count)


def test_zero_negative_nan_rules(impl: ModuleType) -> None:
    sk = impl.Sketch(0.01)
    for v in [0.0, -0.0, 5e-324, -3.0, 2.0, math.nan, math.inf, -math.inf]:
        sk.add(v)
    assert sk.count == 5
    assert sk.dropped == 3
    assert sk.zero_count == 3
    assert sk.quantile(0.0) == -3.0
    assert sk.quantile(0.5) == 0.0
    assert sk.quantile(1.0) == 2.0


def test_empty_sketch_reports_nan(impl: ModuleType) -> None:
    sk = impl.Sketch()
    assert math.isnan(sk.quantile(0.5))
    assert math.isnan(sk.min) and math.isnan(sk.max)


def test_bad_input_names_the_value(impl: ModuleType) -> None:
    for bad in (0, 1, 1.5, -0.1, "x"):
        with pytest.raises(ValueError, match=repr(bad).replace("(", r"\(")):
            impl.Sketch(bad)
    sk = impl.Sketch()
    with pytest.raises(ValueError, match=r"1\.5"):
        sk.quantile(1.5)
    with pytest.raises(ValueError, match="bad magic"):
        impl.Sketch.from_bytes(b"nope-nope-nope")
    with pytest.raises(ValueError, match="different accuracy"):
        impl.Sketch(0.01).merge(impl.Sketch(0.02))


def test_bucket_cap_folds_lowest(impl: ModuleType) -> None:
    sk = impl.Sketch(0.01, max_bins=128)
    data = [10.0**e for e in range(-12, 13)]
    sk.add_many(data)
    pos, _neg, _zero = sk.bins()
    assert max(pos) - min(pos) + 1 <= 128
    assert sum(pos.values()) == len(data)
    # the top of the distribution is still exact to alpha
    assert within(sk.quantile(1.0), 1e12, 0.01)
    assert within(sk.quantile(0.99), exact(data, 0.99), 0.01)


def test_memory_bound_for_latencies(impl: ModuleType) -> None:
    series = impl.Series(alpha=0.01, window_seconds=60, slices=6, ticks_per_second=1e9)
    latencies = np.geomspace(1e-6, 10.0, 200_000)
    step = int(60e9 / len(latencies))
    for i, v in enumerate(latencies):
        series.record(float(v), i * step)
    assert series.count == len(latencies)
    if impl.__name__.endswith("_speedups"):
        assert series.nbytes <= 64 * 1024


@pytest.mark.skipif(NO_EXT, reason="PERFSDK_NO_EXTENSIONS=1: the compiled module is not used")
@settings(max_examples=300, deadline=None)
@given(
    data=st.lists(
        st.floats(min_value=-1e12, max_value=1e12, allow_nan=False).filter(lambda x: x != 0),
        min_size=1,
        max_size=60,
    ),
    max_bins=st.sampled_from([16, 17, 40, 300]),
)
def test_capped_sketch_compiled_and_twin_agree(data: list[float], max_bins: int) -> None:
    """Folding the lowest buckets, including a jump far above the range, matches the twin."""
    import perfsdk._speedups as native

    c, p = native.Sketch(0.01, max_bins), twin.Sketch(0.01, max_bins)
    for v in data:
        c.add(v)
        p.add(v)
    assert c.bins() == p.bins()
    assert c.to_bytes() == p.to_bytes()
    pos, neg, _ = c.bins()
    for store in (pos, neg):
        if store:
            assert max(store) - min(store) + 1 <= max_bins


# --- bucket counts and exposition text (the Prometheus renderer's native helpers) ---------------

LADDER = {0.01: (-700, -400, -300, -200, -200, 0, 45, 300)}  # ascending; equal neighbours allowed
HIST_TEMPLATE = b"".join(b"b%d \n" % i for i in range(len(LADDER[0.01]) + 1)) + b"sum \ncount \n"


def _outcome(fn: object, *args: object) -> object:
    """The result of fn(*args), or the type and message of what it raised."""
    try:
        return fn(*args)  # type: ignore[operator]
    except Exception as exc:  # the point is to compare any exception
        return (type(exc), str(exc))


@settings(max_examples=150, deadline=None)
@given(data=values, alpha=alphas, doublings=st.sampled_from([0, 8]))
def test_cumulative_counts(
    impl: ModuleType, data: list[float], alpha: float, doublings: int
) -> None:
    sk = impl.Sketch(alpha)
    sk.add_many(data)
    for _ in range(doublings):
        sk.merge(sk.copy())
    pos, neg, zero = sk.bins()
    keys = sorted(set(pos) | {0, -100, 100})[::3]
    want = [zero + sum(neg.values()) + sum(c for k, c in pos.items() if k <= key) for key in keys]
    assert sk.cumulative_counts(keys) == (*want, sk.count)
    assert sk.cumulative_counts(tuple(keys)) == (*want, sk.count)
    assert sk.cumulative_counts([]) == (sk.count,)
    with pytest.raises(ValueError, match="ascending"):
        sk.cumulative_counts([3, 2])


def test_format_samples(impl: ModuleType) -> None:
    template = b'a{x="1"} \nb \nc \nd \ne \nf \ng \n'
    values = (3, -7, 0.1, math.nan, -math.inf, b"raw", 2**70)
    assert impl.format_samples(template, values) == (
        b'a{x="1"} 3\nb -7\nc 0.1\nd NaN\ne -Inf\nf raw\ng 1180591620717411303424\n'
    )
    assert impl.format_samples(b"x \n", [1e-06]) == b"x 1e-06\n"
    assert impl.format_samples(b"x \n", [True]) == b"x 1.0\n"  # as format_value: not an int
    assert impl.format_samples(b"", ()) == b""
    with pytest.raises(ValueError, match="2 values for a template of 1 lines"):
        impl.format_samples(b"x \n", (1, 2))
    with pytest.raises(ValueError, match="1 values for a template of 2 lines"):
        impl.format_samples(b"x \ny \n", (1,))
    with pytest.raises(ValueError, match="ends with a newline"):
        impl.format_samples(b"x ", (1,))
    with pytest.raises(TypeError):
        impl.format_samples("x \n", (1,))
    with pytest.raises(TypeError):
        impl.format_samples(b"x \n", (object(),))


@settings(max_examples=150, deadline=None)
@given(data=values, doublings=st.sampled_from([0, 1, 8]), max_bins=st.sampled_from([0, 16]))
def test_histogram_samples(
    impl: ModuleType, data: list[float], doublings: int, max_bins: int
) -> None:
    sk = impl.Sketch(0.01, max_bins)
    sk.add_many(data)
    for _ in range(doublings):
        sk.merge(sk.copy())
    raw = sk.to_bytes()
    counts = sk.cumulative_counts(LADDER[0.01])
    want = impl.format_samples(HIST_TEMPLATE, (*counts, sk.sum, sk.count))
    assert impl.histogram_samples(raw, LADDER, HIST_TEMPLATE) == want
    assert impl.histogram_samples(bytearray(raw), LADDER, HIST_TEMPLATE) == want
    with pytest.raises(KeyError):
        impl.histogram_samples(raw, {}, HIST_TEMPLATE)
    with pytest.raises(ValueError, match="template"):
        impl.histogram_samples(raw, LADDER, HIST_TEMPLATE + b"more \n")


@pytest.mark.skipif(NO_EXT, reason="PERFSDK_NO_EXTENSIONS=1: the compiled module is not used")
@settings(max_examples=300, deadline=None)
@given(
    data=st.lists(st.one_of(finite, st.just(math.nan)), max_size=60),
    max_bins=st.sampled_from([0, 16]),
    cut=st.integers(min_value=0, max_value=400),
    flip=st.tuples(st.integers(min_value=0, max_value=400), st.integers(0, 255)),
    ladders=st.sampled_from([LADDER, {}]),
)
def test_histogram_samples_compiled_and_twin_agree_on_any_bytes(
    data: list[float],
    max_bins: int,
    cut: int,
    flip: tuple[int, int],
    ladders: dict[float, tuple[int, ...]],
) -> None:
    """Truncated or corrupted bytes: the same answer or the same error from both."""
    import perfsdk._speedups as native

    sk = native.Sketch(0.01, max_bins)
    sk.add_many(data)
    raw = bytearray(sk.to_bytes())
    variants = [bytes(raw), bytes(raw[:cut])]
    if flip[0] < len(raw):
        raw[flip[0]] = flip[1]
        variants.append(bytes(raw))
    for b in variants:
        got = _outcome(native.histogram_samples, b, ladders, HIST_TEMPLATE)
        want = _outcome(twin.histogram_samples, b, ladders, HIST_TEMPLATE)
        if isinstance(got, tuple) and isinstance(want, tuple) and got[0] is want[0] is ValueError:
            continue  # both refuse the bytes; the wording of corrupt-varint errors may differ
        assert got == want


@pytest.mark.skipif(NO_EXT, reason="PERFSDK_NO_EXTENSIONS=1: the compiled module is not used")
def test_format_samples_compiled_and_twin_agree() -> None:
    import perfsdk._speedups as native

    floats = [0.1, 1e-300, -2.5e22, 5e-324, 1.7976931348623157e308, 123456789.123, 1e16, 0.0, -0.0]
    template = b"v \n" * len(floats)
    assert native.format_samples(template, floats) == twin.format_samples(template, floats)
    again = native.format_samples(template, floats)  # from the native text cache this time
    assert again == twin.format_samples(template, floats)
