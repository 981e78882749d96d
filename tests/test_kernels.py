"""The Numba batch kernels give exactly what the sketch's own one-by-one path gives."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import perfsdk._speedups_py as twin

pytest.importorskip("numba")
from perfsdk import kernels

pytestmark = pytest.mark.numba

ROOT = Path(__file__).resolve().parent.parent
QS = [0.0, 0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0]

any_float = st.floats(width=64)  # NaN, ±inf, ±0.0 and subnormals included
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
latency = st.floats(min_value=1e-9, max_value=100.0)
alphas = st.sampled_from([0.001, 0.01, 0.02, 0.05])


def add_one_by_one(sk: Any, data: list[float]) -> None:
    for v in data:
        sk.add(float(v))


def assert_same_sketch(g: Any, w: Any, data: list[float]) -> None:
    """Everything identical except the sum, which may differ by the order of additions."""
    assert g.bins() == w.bins()
    assert (g.count, g.zero_count, g.dropped) == (w.count, w.zero_count, w.dropped)
    np.testing.assert_array_equal([g.min, g.max], [w.min, w.max])
    np.testing.assert_array_equal(g.quantiles(QS), w.quantiles(QS))
    scale = sum(abs(x) for x in data if math.isfinite(x)) + abs(w.sum)
    if math.isfinite(scale) and math.isfinite(w.sum):
        assert abs(g.sum - w.sum) <= 1e-12 * scale


@pytest.mark.parametrize("alpha", [0.001, 0.01, 0.05])
def test_bucket_values_match_the_specification(alpha: float) -> None:
    # value_of() for every key a finite double can map to, through the quantile kernel: one sketch
    # per key would be slow, so feed the kernel a synthetic one-bucket sketch per key directly.
    import numba

    mult = twin.multiplier_for(alpha)
    lo = math.floor(-1023 * mult) - 2
    hi = math.floor(1025 * mult) + 2
    keys = np.arange(lo, hi, max(1, (hi - lo) // 20_000), dtype=np.int64)
    keys = np.concatenate([keys, np.arange(hi - 50, hi)])
    kernels._load()  # registers the helpers with Numba and binds numpy
    value_of = numba.njit(kernels._value_of)  # the same body the kernels inline
    got = np.array([value_of(int(k), mult) for k in keys])
    want = np.array([twin.value_of(int(k), mult) for k in keys])
    np.testing.assert_array_equal(got, want)


@settings(max_examples=150, deadline=None)
@given(
    data=st.lists(st.one_of(any_float, latency), max_size=400),
    prefix=st.lists(finite, max_size=30),
    alpha=alphas,
)
def test_ingest_equals_adding_one_by_one(
    impl: ModuleType, data: list[float], prefix: list[float], alpha: float
) -> None:
    batch, single = impl.Sketch(alpha), impl.Sketch(alpha)
    add_one_by_one(batch, prefix)
    add_one_by_one(single, prefix)
    kernels.ingest(batch, np.array(data, dtype=np.float64))
    add_one_by_one(single, data)
    assert_same_sketch(batch, single, prefix + data)


@settings(max_examples=100, deadline=None)
@given(data=st.lists(finite, max_size=300), max_bins=st.sampled_from([16, 64, 256]))
def test_ingest_folds_like_the_store(impl: ModuleType, data: list[float], max_bins: int) -> None:
    # The oracle is the specification (the twin, one by one): with a bucket cap the kernel folds
    # the lowest keys exactly as the store does.
    batch, spec = impl.Sketch(0.01, max_bins), twin.Sketch(0.01, max_bins)
    kernels.ingest(batch, data)
    add_one_by_one(spec, data)
    assert_same_sketch(batch, spec, data)


@pytest.mark.parametrize("max_bins", [0, 16, 200])
def test_ingest_into_a_capped_twin_with_content(max_bins: int) -> None:
    rng = np.random.default_rng(7)
    prefix = list(rng.lognormal(-3, 4, 500))
    data = np.concatenate([rng.lognormal(2, 4, 3000), -rng.lognormal(0, 2, 300)])
    batch, single = twin.Sketch(0.01, max_bins), twin.Sketch(0.01, max_bins)
    add_one_by_one(batch, prefix)
    add_one_by_one(single, prefix)
    kernels.ingest(batch, data)
    add_one_by_one(single, list(data))
    assert_same_sketch(batch, single, prefix + list(data))


@pytest.mark.parametrize(
    "order", ["shuffled", "ascending", "descending"], ids=lambda o: f"order={o}"
)
def test_large_batches_cross_chunks_and_grow(impl: ModuleType, order: str) -> None:
    # Sorted input makes the kernel's count arrays grow at almost every chunk, up and down.
    rng = np.random.default_rng(3)
    data = np.concatenate(
        [
            rng.lognormal(-7, 2.5, 20_000),
            -rng.lognormal(0, 3, 5_000),
            rng.pareto(1.2, 5_000) + 1,
            [0.0, -0.0, 5e-324, -1e-310, 1e-300, 1e300, -1e300, math.nan, math.inf, -math.inf],
        ]
    )
    if order == "shuffled":
        rng.shuffle(data)
    else:
        data = np.sort(data)  # NaN sorts last
        if order == "descending":
            data = data[::-1].copy()
    batch, single = impl.Sketch(0.01), impl.Sketch(0.01)
    kernels.ingest(batch, data)
    add_one_by_one(single, list(data))
    assert_same_sketch(batch, single, list(data))


def test_nan_and_inf_are_dropped_and_counted(impl: ModuleType) -> None:
    sk = impl.Sketch(0.01)
    kernels.ingest(sk, [math.nan, math.inf, -math.inf, 1.0, -math.nan, 0.0])
    assert sk.dropped == 4
    assert sk.count == 2
    assert sk.zero_count == 1
    assert (sk.min, sk.max, sk.sum) == (0.0, 1.0, 1.0)
    only_bad = impl.Sketch(0.01)
    kernels.ingest(only_bad, np.array([math.nan] * 5))
    assert only_bad.dropped == 5 and only_bad.count == 0
    assert math.isnan(only_bad.quantile(0.5))


def test_ingest_accepts_any_array_like(impl: ModuleType) -> None:
    values = [0.25, 1.5, 3.0, 1e-3, 7.0, 2.5]
    want = impl.Sketch(0.01)
    add_one_by_one(want, values)
    for form in (
        values,
        np.array(values, dtype=np.float32).astype(np.float64),
        np.array(values).reshape(2, 3),
        np.array(values * 2)[::2],  # not contiguous
        np.array([1, 2, 3], dtype=np.int64),
    ):
        got, ref = impl.Sketch(0.01), impl.Sketch(0.01)
        kernels.ingest(got, form)
        add_one_by_one(ref, list(np.asarray(form, dtype=np.float64).ravel()))
        assert_same_sketch(got, ref, list(np.asarray(form, dtype=np.float64).ravel()))
    empty = impl.Sketch(0.01)
    kernels.ingest(empty, np.array([]))
    assert empty.count == 0 and empty.dropped == 0


@settings(max_examples=100, deadline=None)
@given(
    datasets=st.lists(
        st.tuples(st.lists(st.one_of(any_float, latency), max_size=120), alphas), max_size=8
    ),
    qs=st.lists(st.floats(min_value=0.0, max_value=1.0), max_size=12),
)
def test_quantiles_many_equals_quantiles(
    impl: ModuleType, datasets: list[tuple[list[float], float]], qs: list[float]
) -> None:
    sketches = []
    for data, alpha in datasets:
        sk = impl.Sketch(alpha)
        add_one_by_one(sk, data)
        sketches.append(sk)
    got = kernels.quantiles_many(sketches, qs)
    assert got.shape == (len(sketches), len(qs))
    assert got.dtype == np.float64
    for row, sk in zip(got, sketches, strict=True):
        np.testing.assert_array_equal(row, sk.quantiles(qs))


def test_quantiles_many_on_ingested_sketches(impl: ModuleType) -> None:
    rng = np.random.default_rng(11)
    sketches = []
    for i in range(50):
        sk = impl.Sketch(0.01)
        kernels.ingest(sk, rng.lognormal(-5 + i * 0.1, 1.0 + i * 0.05, 2_000) * (-1) ** i)
        sketches.append(sk)
    sketches.append(impl.Sketch(0.01))  # empty: a row of NaN
    got = kernels.quantiles_many(sketches, QS)
    for row, sk in zip(got, sketches, strict=True):
        np.testing.assert_array_equal(row, sk.quantiles(QS))
    assert np.isnan(got[-1]).all()


def test_quantiles_many_edge_shapes_and_errors(impl: ModuleType) -> None:
    assert kernels.quantiles_many([], [0.5]).shape == (0, 1)
    assert kernels.quantiles_many([impl.Sketch()], []).shape == (1, 0)
    with pytest.raises(ValueError, match=r"1\.5"):
        kernels.quantiles_many([impl.Sketch()], [0.5, 1.5])


def test_import_does_not_load_numba_or_numpy() -> None:
    if not (ROOT / "perfsdk" / "__init__.py").exists():
        pytest.skip("perfsdk/__init__.py is not there yet")
    code = (
        "import sys, perfsdk, perfsdk.kernels; "
        "print(sorted(m for m in ('numba', 'numpy', 'llvmlite') if m in sys.modules))"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT, env=env
    )
    assert out.stdout.strip() == "[]"
