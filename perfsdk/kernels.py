"""Numba batch kernels: add a whole array to a sketch, read quantiles of many sketches at once.

Numba and NumPy are imported, and the kernels compiled (``cache=True``: later processes load the
machine code from ``__pycache__``), on the first call, never by ``import perfsdk`` or
``import perfsdk.kernels``; install them with the ``kernels`` extra.

The kernels repeat the arithmetic of the pure-Python twin ``perfsdk._speedups_py`` (the
specification) operation for operation, in the same order and without fast-math, so :func:`ingest`
produces exactly the buckets, counts, minimum, maximum and quantiles that adding the values one by
one would. Only the sum may differ in its last bits: the batch is summed on its own and then added
to the sketch's sum, a different order of additions.

Both work on ``perfsdk._speedups.Sketch`` (compiled) and ``perfsdk._speedups_py.Sketch`` (twin);
they reach the sketch through ``mult``, ``max_bins``, ``bins()``, ``count``, ``min``, ``max`` and
``_add_bins()``, which the two share.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ._speedups_py import CARDANO_D0, CUBIC_A, CUBIC_B, CUBIC_C, DBL_MAX_VALUE, check_quantiles

if TYPE_CHECKING:
    import numpy
    import numpy.typing as npt

    from ._speedups_py import Sketch

__all__ = ["compile_kernels", "ingest", "quantiles_many"]

TWO_POW_M52 = 2.0**-52
MANTISSA_MASK = 0xFFFFFFFFFFFFF
EXPONENT_MASK = 0x7FF
NO_KEY = -(1 << 62)  # below every key (keys lie within about ±1075 * mult)
SLACK = 64
CHUNK = 2048  # values per chunk: their keys (16 KiB) stay in L1

# NumPy, bound by _load(). The kernels below name it as a global because Numba resolves globals when
# it compiles, and a function body may not import; binding it late keeps `import perfsdk` light.
np: Any = None

_lock = threading.Lock()
_compiled: tuple[Any, Any] | None = None


# --- kernel bodies (plain Python until _load() hands them to numba.njit) -------------------------


def _cover(counts: Any, base: int, lo: int, hi: int, thr: int, upward: bool) -> tuple[Any, int]:
    """A new count array covering keys lo..hi plus slack, holding counts re-based, and every key
    below thr folded into thr (a store's max_bins rule)."""
    if lo < thr:
        lo = thr
    span = hi - lo + 1
    size = span + span // 2 + SLACK
    if upward:
        start = lo
    else:
        start = hi + 1 - size
        if start < thr:
            start = thr
            size = hi - start + 1
    out = np.zeros(size, np.int64)
    for i in range(counts.shape[0]):
        c = counts[i]
        if c != 0:
            k = base + i
            if k < thr:
                k = thr
            out[k - start] += c
    return out, start


def _finish(counts: Any, base: int, thr: int) -> tuple[int, Any]:
    """(first key, counts from it to the last non-empty key), keys below thr folded into thr."""
    n = counts.shape[0]
    if thr > base and n > 0:
        j = thr - base
        folded = 0
        for i in range(min(j, n)):
            folded += counts[i]
            counts[i] = 0
        if folded:
            counts[j] += folded
    first = 0
    while first < n and counts[first] == 0:
        first += 1
    last = n - 1
    while last >= first and counts[last] == 0:
        last -= 1
    return base + first, counts[first : last + 1]


def _count_chunk(
    values: Any,
    bits: Any,
    keys: Any,
    start: int,
    pos: Any,
    neg: Any,
    st: Any,
    fst: Any,
    max_bins: int,
) -> Any:
    """Count values[start:] (keys in keys[start:]) into pos/neg. Stops at the first key outside its
    array, returning its index (len(values) when done), for the caller to grow that array: no array
    is replaced in here, which keeps the loop free of reference counting."""
    pbase, pkmax, pthr = st[0], st[1], st[2]
    nbase, nkmax, nthr = st[3], st[4], st[5]
    zero, dropped = st[6], st[7]
    total, vmin, vmax = fst[0], fst[1], fst[2]
    ptop = pbase + pos.shape[0] - 1
    ntop = nbase + neg.shape[0] - 1
    stop = values.shape[0]
    for j in range(start, values.shape[0]):
        b = bits[j]
        ex = (b >> 52) & EXPONENT_MASK
        if ex == EXPONENT_MASK:  # NaN or infinity
            dropped += 1
            continue
        if ex == 0:  # zero or subnormal: |x| < 2.2250738585072014e-308
            zero += 1
        elif b >= 0:
            k = keys[j]
            if k > ptop:
                stop = j
                break
            if k > pkmax:
                pkmax = k
                if max_bins > 0:
                    pthr = k - max_bins + 1
            if k < pthr:
                k = pthr
            if k < pbase:
                stop = j
                break
            pos[k - pbase] += 1
        else:
            k = keys[j]
            if k > ntop:
                stop = j
                break
            if k > nkmax:
                nkmax = k
                if max_bins > 0:
                    nthr = k - max_bins + 1
            if k < nthr:
                k = nthr
            if k < nbase:
                stop = j
                break
            neg[k - nbase] += 1
        x = values[j]
        total += x
        if x < vmin:
            vmin = x
        if x > vmax:
            vmax = x
    st[1], st[2], st[4], st[5], st[6], st[7] = pkmax, pthr, nkmax, nthr, zero, dropped
    fst[0], fst[1], fst[2] = total, vmin, vmax
    return stop


def _grow(counts: Any, base: int, thr: int, k: int, max_bins: int) -> tuple[Any, int]:
    """counts re-allocated to also cover key k (which _count_chunk found outside it)."""
    if counts.shape[0] == 0:
        return _cover(counts, base, k, k, thr, True)
    top = base + counts.shape[0] - 1
    if k > top:
        if max_bins > 0 and k - max_bins + 1 > thr:
            thr = k - max_bins + 1
        return _cover(counts, base, base, k, thr, True)
    return _cover(counts, base, max(k, thr), top, thr, False)


def _ingest_kernel(values: Any, bits: Any, mult: float, max_bins: int) -> tuple[Any, ...]:
    # Chunk by chunk: first the key of every value, exactly as key_of() computes it from the float's
    # bits (a branch-free loop the compiler vectorises), then _count_chunk classifies each value and
    # counts its key into a dense array per sign, with every address already known (one fused loop
    # that also grew the arrays ran at 25 M values/s here, this at about 100 M). The arrays grow
    # (rarely) when a key falls outside them; with max_bins > 0 they never span more than about
    # 1.5 * max_bins keys, lower keys being clamped to thr as the store folds them: the store's
    # folding depends only on its highest key, so folding a batch early changes nothing.
    pos = np.zeros(0, np.int64)
    neg = np.zeros(0, np.int64)
    # pbase, pkmax, pthr, nbase, nkmax, nthr, zero, dropped
    st = np.array([0, NO_KEY, NO_KEY, 0, NO_KEY, NO_KEY, 0, 0], np.int64)
    fst = np.array([0.0, math.inf, -math.inf])  # sum, min, max
    n = values.shape[0]
    keys = np.empty(CHUNK, np.int64)
    for c0 in range(0, n, CHUNK):
        m = min(CHUNK, n - c0)
        for j in range(m):
            b = bits[c0 + j]
            s = float(b & MANTISSA_MASK) * TWO_POW_M52
            e = float(((b >> 52) & EXPONENT_MASK) - 1023)
            keys[j] = math.floor((((CUBIC_A * s + CUBIC_B) * s + CUBIC_C) * s + e) * mult)
        cv = values[c0 : c0 + m]
        cb = bits[c0 : c0 + m]
        j = 0
        while True:
            j = _count_chunk(cv, cb, keys, j, pos, neg, st, fst, max_bins)
            if j >= m:
                break
            if cb[j] >= 0:
                pos, st[0] = _grow(pos, st[0], st[2], keys[j], max_bins)
            else:
                neg, st[3] = _grow(neg, st[3], st[5], keys[j], max_bins)
    pk, pc = _finish(pos, st[0], st[2])
    nk, nc = _finish(neg, st[3], st[5])
    return pk, pc, nk, nc, st[6], st[7], fst[0], fst[1], fst[2]


def _exp2_approx(y: float) -> float:
    e = math.floor(y)
    d = y - e
    d1 = (
        2.0 * CUBIC_B * CUBIC_B * CUBIC_B
        - 9.0 * CUBIC_A * CUBIC_B * CUBIC_C
        - 27.0 * CUBIC_A * CUBIC_A * d
    )
    # np.cbrt compiles to a call of libm's cbrt, the function math.cbrt and the extension call.
    p = np.cbrt((d1 - math.sqrt(d1 * d1 - 4.0 * CARDANO_D0 * CARDANO_D0 * CARDANO_D0)) / 2.0)
    s = -(CUBIC_B + p + CARDANO_D0 / p) / (3.0 * CUBIC_A)
    return math.ldexp(1.0 + s, e)


def _value_of(key: int, mult: float) -> float:
    lo = _exp2_approx(float(key) / mult)
    hi = _exp2_approx(float(key + 1) / mult)
    if math.isinf(hi):
        hi = DBL_MAX_VALUE  # the top bucket ends at the largest double
    r = hi / lo
    return lo * (2.0 * r / (1.0 + r))


def _quantiles_kernel(
    keys: Any,
    counts: Any,
    neg_end: Any,
    pos_end: Any,
    zeros: Any,
    totals: Any,
    mins: Any,
    maxs: Any,
    mults: Any,
    sq: Any,
    order: Any,
    out: Any,
) -> None:
    # Sketch si owns keys[pos_end[si-1]:neg_end[si]] (negative store, descending key) and
    # keys[neg_end[si]:pos_end[si]] (positive store, ascending): Sketch._quantiles_sorted's walk.
    nq = sq.shape[0]
    start = 0
    for si in range(totals.shape[0]):
        count = totals[si]
        if count == 0:
            for j in range(nq):
                out[si, order[j]] = math.nan
            start = pos_end[si]
            continue
        mult = mults[si]
        last = float(count - 1)
        i = 0
        cum = 0.0
        for m in range(start, neg_end[si]):
            if i >= nq:
                break
            cum += float(counts[m])
            if cum > sq[i] * last:
                v = -_value_of(keys[m], mult)
                while i < nq and cum > sq[i] * last:
                    out[si, order[i]] = v
                    i += 1
        if zeros[si] != 0 and i < nq:
            cum += float(zeros[si])
            while i < nq and cum > sq[i] * last:
                out[si, order[i]] = 0.0
                i += 1
        for m in range(neg_end[si], pos_end[si]):
            if i >= nq:
                break
            cum += float(counts[m])
            if cum > sq[i] * last:
                v = _value_of(keys[m], mult)
                while i < nq and cum > sq[i] * last:
                    out[si, order[i]] = v
                    i += 1
        while i < nq:
            out[si, order[i]] = maxs[si]
            i += 1
        lo = mins[si]
        hi = maxs[si]
        for j in range(nq):
            v = out[si, order[j]]
            if v < lo or sq[j] <= 0.0:
                out[si, order[j]] = lo
            elif v > hi or sq[j] >= 1.0:
                out[si, order[j]] = hi
        start = pos_end[si]


# --- loading -------------------------------------------------------------------------------------


def _load() -> tuple[Any, Any]:
    global _compiled, np
    if _compiled is not None:
        return _compiled
    with _lock:
        if _compiled is None:
            try:
                import numba
                import numpy
            except ImportError as exc:
                raise ImportError(
                    f"perfsdk.kernels needs numba and numpy ({exc}); "
                    "install them with: pip install 'perfsdk[kernels]'"
                ) from exc
            np = numpy
            for helper in (_cover, _grow, _count_chunk, _finish, _exp2_approx, _value_of):
                numba.extending.register_jitable(helper)
            jit = numba.njit(cache=True, nogil=True)
            _compiled = (jit(_ingest_kernel), jit(_quantiles_kernel))
    return _compiled


def compile_kernels() -> None:
    """Compile (or load from the cache) both kernels now rather than on the first call."""
    from ._speedups_py import Sketch

    _load()
    sk = Sketch(0.01)
    ingest(sk, np.array([1.0, -2.0, 0.0, math.nan]))
    quantiles_many([sk], [0.5])


# --- public functions ----------------------------------------------------------------------------


def ingest(sketch: Sketch, values: npt.ArrayLike) -> None:
    """Add every value of a float array to ``sketch`` in one compiled call (run without the GIL).

    Equivalent to ``for v in values: sketch.add(float(v))`` (NaN and infinities are dropped and
    counted), except that the sum may differ by rounding. Accepts anything ``numpy.asarray`` takes;
    multi-dimensional arrays are flattened.
    """
    kernel, _ = _load()
    arr = np.ascontiguousarray(values, dtype=np.float64).reshape(-1)
    if arr.shape[0] == 0:
        return
    pk, pc, nk, nc, zero, dropped, total, vmin, vmax = kernel(
        arr, arr.view(np.int64), float(sketch.mult), int(sketch.max_bins)
    )
    sketch._add_bins(
        (int(pk), pc.tolist()) if pc.shape[0] else None,
        (int(nk), nc.tolist()) if nc.shape[0] else None,
        int(zero),
        float(total),
        float(vmin),
        float(vmax),
        int(dropped),
    )


def quantiles_many(sketches: Sequence[Sketch], qs: Iterable[float]) -> numpy.ndarray:
    """Quantiles of many sketches in one compiled call.

    ``out[i, j] == sketches[i].quantiles(qs)[j]``, bit for bit. Same rank rule as
    ``Sketch.quantiles``: the value at rank ``floor(q * (count - 1))``, reported as its bucket's
    value clamped to the sketch's [min, max]; q == 0 gives min and q == 1 max; a row of NaN for an
    empty sketch. Returns a float64 array of shape (len(sketches), len(qs)).
    """
    _, kernel = _load()
    ql = check_quantiles(qs)
    nq = len(ql)
    ns = len(sketches)
    order = np.argsort(np.array(ql, dtype=np.float64), kind="stable")
    sq = np.array(ql, dtype=np.float64)[order]
    keys: list[int] = []
    counts: list[int] = []
    neg_end = np.empty(ns, np.int64)
    pos_end = np.empty(ns, np.int64)
    zeros = np.empty(ns, np.int64)
    totals = np.empty(ns, np.int64)
    mins = np.empty(ns, np.float64)
    maxs = np.empty(ns, np.float64)
    mults = np.empty(ns, np.float64)
    for i, sk in enumerate(sketches):
        pos, neg, zero = sk.bins()
        for k in sorted(neg, reverse=True):
            keys.append(k)
            counts.append(neg[k])
        neg_end[i] = len(keys)
        for k in sorted(pos):
            keys.append(k)
            counts.append(pos[k])
        pos_end[i] = len(keys)
        zeros[i] = zero
        totals[i] = sk.count
        mins[i] = sk.min
        maxs[i] = sk.max
        mults[i] = sk.mult
    out: numpy.ndarray = np.empty((ns, nq), np.float64)
    if ns and nq:
        kernel(
            np.array(keys, dtype=np.int64),
            np.array(counts, dtype=np.float64),
            neg_end,
            pos_end,
            zeros,
            totals,
            mins,
            maxs,
            mults,
            sq,
            order.astype(np.int64),
            out,
        )
    return out
