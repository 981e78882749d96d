"""Pure-Python twin of ``perfsdk._speedups`` (``ext/_speedups.pyx``): the specification.

Same keys, same floating-point operations in the same order, same serialised bytes: the test-suite
checks the two agree value for value. Used when the extension is not built or
``PERFSDK_NO_EXTENSIONS=1``; type checkers read this module.

Atomicity: the compiled module relies on the GIL; here a lock guards every state change.
"""

from __future__ import annotations

import math
import struct
import threading
import time
import types
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import accumulate
from typing import Any

__all__ = [
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

CUBIC_A = 6.0 / 35.0
CUBIC_B = -3.0 / 5.0
CUBIC_C = 10.0 / 7.0
MAX_SLOPE_RATIO = 1.00988652862228
MIN_INDEXABLE = 2.2250738585072014e-308
DBL_MAX_VALUE = 1.7976931348623157e308
# Below this the bucket ratio gamma rounds towards 1 and the key mapping loses meaning.
MIN_ALPHA = 1e-6
CARDANO_D0 = CUBIC_B * CUBIC_B - 3.0 * CUBIC_A * CUBIC_C
GROW_SLACK = 32
EMPTY_EPOCH = -(1 << 62)
FORMAT_MAGIC = b"PSK1"
_D = struct.Struct("<d")


def approx_log2(x: float) -> float:
    m, ex = math.frexp(x)
    s = 2.0 * m - 1.0
    e = float(ex - 1)
    return ((CUBIC_A * s + CUBIC_B) * s + CUBIC_C) * s + e


def key_of(magnitude: float, mult: float) -> int:
    return math.floor(approx_log2(magnitude) * mult)


def exp2_approx(y: float) -> float:
    e = math.floor(y)
    d = y - e
    d1 = (
        2.0 * CUBIC_B * CUBIC_B * CUBIC_B
        - 9.0 * CUBIC_A * CUBIC_B * CUBIC_C
        - 27.0 * CUBIC_A * CUBIC_A * d
    )
    p = math.cbrt((d1 - math.sqrt(d1 * d1 - 4.0 * CARDANO_D0 * CARDANO_D0 * CARDANO_D0)) / 2.0)
    s = -(CUBIC_B + p + CARDANO_D0 / p) / (3.0 * CUBIC_A)
    try:
        return math.ldexp(1.0 + s, int(e))
    except OverflowError:
        return math.inf


def value_of(key: int, mult: float) -> float:
    lo = exp2_approx(float(key) / mult)
    hi = exp2_approx(float(key + 1) / mult)
    if math.isinf(hi):
        hi = DBL_MAX_VALUE  # the top bucket ends at the largest double
    r = hi / lo
    return lo * (2.0 * r / (1.0 + r))  # the harmonic mean of lo and hi, without overflow


def multiplier_for(alpha: float) -> float:
    gamma = (1.0 + alpha) / (1.0 - alpha)
    return MAX_SLOPE_RATIO / math.log2(gamma)


def check_alpha(alpha: Any) -> float:
    """Validate a relative accuracy; return it as a float."""
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise ValueError(
            f"alpha={alpha!r} is not a number; expected a float in (0, 1), e.g. 0.01"
        ) from None
    if not (MIN_ALPHA <= a < 1.0):
        raise ValueError(
            f"alpha={alpha!r} is outside [1e-06, 1); expected e.g. 0.01 for 1% relative error"
        )
    return a


def check_quantiles(qs: Iterable[Any]) -> list[float]:
    out = []
    for q in qs:
        try:
            f = float(q)
        except (TypeError, ValueError):
            raise ValueError(
                f"quantile {q!r} is not a number; expected a float in [0, 1]"
            ) from None
        if not (0.0 <= f <= 1.0):
            raise ValueError(f"quantile {q!r} is outside [0, 1]; write p99 as 0.99")
        out.append(f)
    return out


def _classify(x: float, mult: float) -> tuple[int, int]:
    """(kind, key): kind 2 drop (NaN/inf), 1 positive, -1 negative, 0 zero bucket."""
    if math.isnan(x) or math.isinf(x):
        return 2, 0
    if x >= MIN_INDEXABLE:
        return 1, key_of(x, mult)
    if x <= -MIN_INDEXABLE:
        return -1, key_of(-x, mult)
    return 0, 0


class _Store:
    """Counts by key; beyond max_bins distinct keys the lowest are folded into one bucket."""

    __slots__ = ("bins", "kmax", "kmin", "total")

    def __init__(self) -> None:
        self.bins: dict[int, int] = {}
        self.kmin = 0
        self.kmax = -1
        self.total = 0

    def clear(self) -> None:
        self.bins.clear()
        self.kmin = 0
        self.kmax = -1
        self.total = 0

    def add(self, key: int, n: int, max_bins: int) -> None:
        if n == 0:
            return
        bins = self.bins
        if self.total == 0:
            self.kmin = self.kmax = key
        elif key > self.kmax:
            if max_bins > 0 and key - self.kmin + 1 > max_bins:
                new_lo = key - max_bins + 1
                folded = 0
                for k in [k for k in bins if k < new_lo]:
                    folded += bins.pop(k)
                self.kmin = new_lo
                if self.kmax < new_lo:
                    self.kmax = new_lo
                if folded:
                    bins[new_lo] = bins.get(new_lo, 0) + folded
            self.kmax = key
        elif key < self.kmin:
            if max_bins > 0 and self.kmax - key + 1 > max_bins:
                key = self.kmax - max_bins + 1
            if key < self.kmin:
                self.kmin = key
        bins[key] = bins.get(key, 0) + n
        self.total += n

    def merge(self, other: _Store, max_bins: int) -> None:
        for k in sorted(other.bins):
            c = other.bins[k]
            if c:
                self.add(k, c, max_bins)

    def nbytes(self) -> int:
        return 0 if self.total == 0 else 8 * (self.kmax - self.kmin + 1 + GROW_SLACK)


class Sketch:
    """A relative-error quantile sketch (DDSketch-style log buckets, accuracy ``alpha``).

    Every quantile it reports is within ``alpha`` (relative) of the true value of the same rank
    (rank ``floor(q * (count - 1))``, numpy's ``method="lower"``). Zero and magnitudes below
    2.2250738585072014e-308 go to a zero bucket (reported as 0.0); negative values go to a mirrored
    store; NaN and infinities are dropped and counted in ``dropped``. ``max_bins=0`` (the default)
    never folds buckets: memory grows with the log of the data's dynamic range (about 35 buckets per
    power of two at 1%). With a cap, the lowest buckets are folded into one.
    """

    __slots__ = (
        "_count",
        "_dropped",
        "_max",
        "_min",
        "_neg",
        "_pos",
        "_sum",
        "_zero",
        "alpha",
        "max_bins",
        "mult",
    )

    def __init__(self, alpha: float = 0.01, max_bins: int = 0) -> None:
        self.alpha = check_alpha(alpha)
        self.mult = multiplier_for(self.alpha)
        mb = int(max_bins)
        if mb != 0 and mb < 16:
            raise ValueError(
                f"max_bins={max_bins!r} is too small; expected 0 (no cap) or an integer >= 16"
            )
        self.max_bins = mb
        self._pos = _Store()
        self._neg = _Store()
        self._zero = 0
        self._count = 0
        self._dropped = 0
        self._sum = 0.0
        self._min = math.inf
        self._max = -math.inf

    def _add_key(self, kind: int, key: int, x: float) -> None:
        if kind > 0:
            self._pos.add(key, 1, self.max_bins)
        elif kind < 0:
            self._neg.add(key, 1, self.max_bins)
        else:
            self._zero += 1
        self._count += 1
        self._sum += x
        if x < self._min:
            self._min = x
        if x > self._max:
            self._max = x

    def add(self, value: float) -> None:
        x = float(value)
        kind, key = _classify(x, self.mult)
        if kind == 2:
            self._dropped += 1
        else:
            self._add_key(kind, key, x)

    def add_many(self, values: Iterable[float]) -> None:
        for v in values:
            self.add(v)

    def _merge_data(self, other: Sketch) -> None:
        self._pos.merge(other._pos, self.max_bins)
        self._neg.merge(other._neg, self.max_bins)
        self._zero += other._zero
        self._count += other._count
        self._dropped += other._dropped
        self._sum += other._sum
        if other._min < self._min:
            self._min = other._min
        if other._max > self._max:
            self._max = other._max

    def merge(self, other: Sketch) -> None:
        if other.alpha != self.alpha:
            raise ValueError(
                f"cannot merge sketches of different accuracy: alpha={other.alpha!r} "
                f"into alpha={self.alpha!r}"
            )
        self._merge_data(other)

    def copy(self) -> Sketch:
        out = Sketch(self.alpha, self.max_bins)
        out.merge(self)
        return out

    def clear(self) -> None:
        self._pos.clear()
        self._neg.clear()
        self._zero = 0
        self._count = 0
        self._dropped = 0
        self._sum = 0.0
        self._min = math.inf
        self._max = -math.inf

    @property
    def count(self) -> int:
        return self._count

    @property
    def sum(self) -> float:
        return self._sum

    @property
    def min(self) -> float:
        return self._min if self._count else math.nan

    @property
    def max(self) -> float:
        return self._max if self._count else math.nan

    @property
    def zero_count(self) -> int:
        return self._zero

    @property
    def dropped(self) -> int:
        return self._dropped

    @property
    def nbytes(self) -> int:
        return 96 + self._pos.nbytes() + self._neg.nbytes()

    def quantile(self, q: float) -> float:
        return self.quantiles([q])[0]

    def _quantiles_sorted(self, qs: Sequence[float]) -> list[float]:
        n = len(qs)
        out = [0.0] * n
        if self._count == 0:
            return [math.nan] * n
        i = 0
        cum = 0.0
        last = float(self._count - 1)
        mult = self.mult
        if self._neg.total > 0:
            for k in sorted(self._neg.bins, reverse=True):
                if i >= n:
                    break
                c = self._neg.bins[k]
                if c:
                    cum += float(c)
                    if cum > qs[i] * last:  # value_of only for buckets reported
                        v = -value_of(k, mult)
                        while i < n and cum > qs[i] * last:
                            out[i] = v
                            i += 1
        if self._zero and i < n:
            cum += float(self._zero)
            while i < n and cum > qs[i] * last:
                out[i] = 0.0
                i += 1
        if self._pos.total > 0:
            for k in sorted(self._pos.bins):
                if i >= n:
                    break
                c = self._pos.bins[k]
                if c:
                    cum += float(c)
                    if cum > qs[i] * last:
                        v = value_of(k, mult)
                        while i < n and cum > qs[i] * last:
                            out[i] = v
                            i += 1
        while i < n:
            out[i] = self._max
            i += 1
        for j in range(n):
            if out[j] < self._min or qs[j] <= 0.0:
                out[j] = self._min
            elif out[j] > self._max or qs[j] >= 1.0:
                out[j] = self._max
        return out

    def quantiles(self, qs: Iterable[float]) -> list[float]:
        ql = check_quantiles(qs)
        order = sorted(range(len(ql)), key=ql.__getitem__)
        got = self._quantiles_sorted([ql[i] for i in order])
        res = [0.0] * len(ql)
        for j, i in enumerate(order):
            res[i] = got[j]
        return res

    def cumulative_counts(self, keys: Iterable[int]) -> tuple[int, ...]:
        """Cumulative counts at each of ``keys`` (ascending sketch keys), then ``count``.

        Entry i counts the zero and negative observations and the positive ones in buckets whose
        key is ``<= keys[i]``; the last entry is ``count``. (The Prometheus histogram passes, for
        each upper bound, the last key whose representative value is at or below it.)
        """
        ks = _check_keys(keys)
        pos_keys = sorted(k for k, c in self._pos.bins.items() if c)
        cum = list(
            accumulate((self._pos.bins[k] for k in pos_keys), initial=self._zero + self._neg.total)
        )
        return (*(cum[bisect_right(pos_keys, k)] for k in ks), self._count)

    def bins(self) -> tuple[dict[int, int], dict[int, int], int]:
        """(positive {key: count}, negative {key: count}, zero count) for inspection and tests."""
        pos = {k: c for k, c in sorted(self._pos.bins.items()) if c}
        neg = {k: c for k, c in sorted(self._neg.bins.items()) if c}
        return pos, neg, self._zero

    def to_bytes(self) -> bytes:
        out = bytearray(FORMAT_MAGIC)
        out.append(1)
        out += _D.pack(self.alpha)
        _varint(out, self.max_bins)
        _varint(out, self._zero)
        _varint(out, self._dropped)
        out += _D.pack(self._sum)
        out += _D.pack(self._min)
        out += _D.pack(self._max)
        for st in (self._pos, self._neg):
            if st.total == 0:
                _varint(out, 0)
                continue
            _varint(out, st.kmax - st.kmin + 1)
            _varint(out, _zigzag(st.kmin))
            for k in range(st.kmin, st.kmax + 1):
                _varint(out, st.bins.get(k, 0))
        return bytes(out)

    @staticmethod
    def from_bytes(data: bytes | bytearray | memoryview) -> Sketch:
        buf = bytes(data)
        if len(buf) < 13 or buf[:4] != FORMAT_MAGIC:
            raise ValueError(
                "not perfsdk sketch bytes (bad magic); expected the output of Sketch.to_bytes()"
            )
        if buf[4] != 1:
            raise ValueError(
                f"unsupported sketch format version {buf[4]}; this perfsdk reads version 1"
            )
        r = _Reader(buf, 5)
        alpha = r.float64()
        max_bins = r.varint()
        s = Sketch(alpha, max_bins)
        s._zero = r.varint()
        s._dropped = r.varint()
        s._sum = r.float64()
        s._min = r.float64()
        s._max = r.float64()
        for st in (s._pos, s._neg):
            nb = r.varint()
            if nb == 0:
                continue
            if nb > len(buf) - r.pos:
                raise ValueError("corrupt sketch bytes (bucket count larger than the payload)")
            kmin = _unzigzag(r.varint())
            for i, c in enumerate(r.varints(nb)):
                if c:
                    st.add(kmin + i, c, s.max_bins)
        if r.pos != len(buf):
            raise ValueError("corrupt sketch bytes (trailing data)")
        s._count = s._zero + s._pos.total + s._neg.total
        return s

    def _add_bins(
        self,
        pos: tuple[int, Sequence[int]] | None,
        neg: tuple[int, Sequence[int]] | None,
        zero: int,
        count_sum: float,
        vmin: float,
        vmax: float,
        dropped: int = 0,
    ) -> None:
        """Merge pre-bucketed counts (from the Numba kernels). pos/neg: (first_key, counts)."""
        for st, pair in ((self._pos, pos), (self._neg, neg)):
            if pair is None:
                continue
            k0, counts = pair
            for i in range(len(counts)):
                c = int(counts[i])
                if c:
                    st.add(int(k0) + i, c, self.max_bins)
                    self._count += c
        self._zero += int(zero)
        self._count += int(zero)
        self._dropped += int(dropped)
        self._sum += float(count_sum)
        if vmin < self._min:
            self._min = float(vmin)
        if vmax > self._max:
            self._max = float(vmax)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Sketch.from_bytes, (self.to_bytes(),))

    def __repr__(self) -> str:
        return f"Sketch(alpha={self.alpha!r}, count={self._count})"


def _varint(out: bytearray, v: int) -> None:
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)


def _zigzag(v: int) -> int:
    return ((v << 1) ^ (v >> 63)) & 0xFFFFFFFFFFFFFFFF


def _unzigzag(v: int) -> int:
    return (v >> 1) ^ -(v & 1)


class _Reader:
    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf = buf
        self.pos = pos

    def varint(self) -> int:
        v = 0
        shift = 0
        while True:
            if self.pos >= len(self.buf) or shift > 63:
                raise ValueError("truncated or corrupt sketch bytes (varint)")
            byte = self.buf[self.pos]
            self.pos += 1
            v |= (byte & 0x7F) << shift
            if byte < 0x80:
                return v & 0xFFFFFFFFFFFFFFFF
            shift += 7

    def varints(self, n: int) -> Sequence[int]:
        """The next n varints; when they are n bytes below 0x80, those bytes are the values."""
        run = self.buf[self.pos : self.pos + n]
        if len(run) == n and run.isascii():
            self.pos += n
            return run
        return [self.varint() for _ in range(n)]

    def float64(self) -> float:
        if self.pos + 8 > len(self.buf):
            raise ValueError("truncated sketch bytes (float)")
        (d,) = _D.unpack_from(self.buf, self.pos)
        self.pos += 8
        return float(d)


class _Slice:
    __slots__ = ("above", "epoch", "errors", "sk")

    def __init__(self, alpha: float, max_bins: int) -> None:
        self.sk = Sketch(alpha, max_bins)
        self.epoch = EMPTY_EPOCH
        self.errors = 0
        self.above = 0


class Series:
    """One named series: totals since start plus a rolling window made of a ring of time slices.

    Times are in ticks of the clock that feeds it (``ticks_per_second`` of them a second); values in
    seconds (or any unit). The window is the current slice plus the ``slices - 1`` before it. A
    recording touches only the current slice; a slice's content is folded into the retired totals
    when its slot is reused (as HdrHistogram's Recorder swaps intervals).
    """

    def __init__(
        self,
        alpha: float = 0.01,
        window_seconds: float = 60.0,
        slices: int = 6,
        ticks_per_second: float = 1e9,
        threshold: float | None = None,
        created: int = 0,
        max_bins: int = 4096,
    ) -> None:
        self.alpha = check_alpha(alpha)
        self.mult = multiplier_for(self.alpha)
        mb = int(max_bins)
        if mb != 0 and mb < 16:
            raise ValueError(
                f"max_bins={max_bins!r} is too small; expected 0 (no cap) or an integer >= 16"
            )
        self.max_bins = mb
        n = int(slices)
        if n < 1 or n > 1000:
            raise ValueError(f"slices={slices!r} is outside 1..1000")
        ws = float(window_seconds)
        if not (ws > 0.0) or math.isinf(ws):
            raise ValueError(
                f"window_seconds={window_seconds!r} must be a positive number of seconds"
            )
        tps = float(ticks_per_second)
        if not (tps > 0.0) or math.isinf(tps):
            raise ValueError(f"ticks_per_second={ticks_per_second!r} must be positive")
        self.slices = n
        self.ticks_per_second = tps
        self.seconds_per_tick = 1.0 / tps
        self.slice_ticks = max(1, int(ws * tps / n))
        self._ring = [_Slice(self.alpha, mb) for _ in range(n)]
        self._retired = Sketch(self.alpha, mb)
        self._retired_errors = 0
        self._retired_above = 0
        self.created = int(created)
        if threshold is None:
            self._threshold: float | None = None
        else:
            t = float(threshold)
            if math.isnan(t):
                raise ValueError(f"threshold={threshold!r} is not a number")
            self._threshold = t
        # Slices taken into use and clears (a clear adds what it forgets): with the counts of
        # observations, dropped values and errors, it makes the version (see state()).
        self._events = 0
        self._lock = threading.Lock()

    def _slice_for(self, now: int) -> _Slice | None:
        epoch = now // self.slice_ticks
        s = self._ring[epoch % self.slices]
        if s.epoch != epoch:
            if s.epoch > epoch:
                return None  # older than the window: counted in the totals only
            self._events += 1
            if s.epoch != EMPTY_EPOCH:
                self._retired._merge_data(s.sk)
                self._retired_errors += s.errors
                self._retired_above += s.above
                s.sk.clear()
                s.errors = 0
                s.above = 0
            s.epoch = epoch
        return s

    def _record(self, value: float, now: int, error: bool) -> None:
        x = float(value)
        kind, key = _classify(x, self.mult)
        with self._lock:
            s = self._slice_for(int(now))
            if s is None:
                if error:
                    self._retired_errors += 1
                if kind == 2:
                    self._retired._dropped += 1
                    return
                self._retired._add_key(kind, key, x)
                if self._threshold is not None and x > self._threshold:
                    self._retired_above += 1
                return
            if error:
                s.errors += 1
            if kind == 2:
                s.sk._dropped += 1
                return
            s.sk._add_key(kind, key, x)
            if self._threshold is not None and x > self._threshold:
                s.above += 1

    def clear(self, created: int) -> None:
        """Forget every observation (a forked child starts clean); start again at created."""
        with self._lock:
            self._events = self._version() + 1  # the version still moves forward
            self._retired.clear()
            self._retired_errors = 0
            self._retired_above = 0
            for s in self._ring:
                s.sk.clear()
                s.errors = 0
                s.above = 0
                s.epoch = EMPTY_EPOCH
            self.created = int(created)

    def record(self, value: float, now: int) -> None:
        """Record one observation taken at ``now`` (ticks)."""
        self._record(value, now, False)

    def record_error(self, value: float, now: int) -> None:
        """Record one failed observation: an error, and (a real duration) measured."""
        self._record(value, now, True)

    def window(self, now: int) -> tuple[Sketch, int, int, float]:
        """(sketch, errors, above_threshold, seconds covered) over the window ending at now."""
        with self._lock:
            return self._window(int(now))

    def _window(self, now: int) -> tuple[Sketch, int, int, float]:
        out = Sketch(self.alpha, self.max_bins)
        epoch_now = now // self.slice_ticks
        errors = above = 0
        for s in self._ring:
            if epoch_now - self.slices < s.epoch <= epoch_now:
                out._merge_data(s.sk)
                errors += s.errors
                above += s.above
        out._dropped = 0
        return out, errors, above, self._spans(now)[1]

    def totals(self, now: int) -> tuple[Sketch, int, int, float]:
        """(sketch, errors, above_threshold, seconds since the series was created) since start."""
        with self._lock:
            return self._totals(int(now))

    def _totals(self, now: int) -> tuple[Sketch, int, int, float]:
        out = Sketch(self.alpha, self.max_bins)
        out._merge_data(self._retired)
        errors = self._retired_errors
        above = self._retired_above
        for s in self._ring:
            out._merge_data(s.sk)
            errors += s.errors
            above += s.above
        return out, errors, above, self._spans(now)[2]

    def _spans(self, now: int) -> tuple[int, float, float]:
        """(window epoch, window seconds, seconds since start) at now."""
        epoch_now = now // self.slice_ticks
        start = max((epoch_now - self.slices + 1) * self.slice_ticks, self.created)
        return (
            epoch_now,
            float(now - start) * self.seconds_per_tick,
            float(now - self.created) * self.seconds_per_tick,
        )

    def _version(self) -> int:
        return (
            self._events
            + self._retired._count
            + self._retired._dropped
            + self._retired_errors
            + sum(s.sk._count + s.sk._dropped + s.errors for s in self._ring)
        )

    def state(self, now: int) -> tuple[int, int, float, float]:
        """(version, window epoch, window seconds, seconds since start) at ``now``: cheap.

        ``version`` moves forward with every change of the data (an observation, a dropped
        value, an error, a slice taken into use, a clear); the window epoch (``now`` in slices)
        moves when the window does. While both stay the same, ``stats()`` gives the same
        answers but for the two spans (the last two items here) and the rates made of them.
        """
        with self._lock:
            return (self._version(), *self._spans(int(now)))

    def stats(
        self, now: int, qs: Iterable[float], sketches: bool = False
    ) -> tuple[tuple[Any, ...], tuple[Any, ...], int, bytes | None, bytes | None]:
        """Everything a snapshot takes from the series, in one call and one consistent view.

        Returns ``(window, total, dropped, window_bytes, total_bytes)``. ``window`` and ``total``
        are ``(count, errors, sum, min, max, mean, rate, *quantiles, seconds, above)``, the fields
        of ``perfsdk.records.Stats`` in order, with one quantile per entry of ``qs``; ``min``,
        ``max`` and the quantiles are NaN, ``mean`` NaN and ``rate`` 0.0 when the span is empty
        (rate is 0.0 too over no time); ``above`` is None without a threshold. The sketches'
        bytes (``Sketch.to_bytes()`` of ``window(now)[0]`` and ``totals(now)[0]``) only when
        ``sketches`` is true, else None. Same numbers as ``window(now)`` and ``totals(now)``.
        """
        ql = check_quantiles(qs)
        with self._lock:
            wsk, werr, wabove, wsec = self._window(int(now))
            tsk, terr, tabove, tsec = self._totals(int(now))
        has_threshold = self._threshold is not None
        return (
            _stats_tuple(wsk, werr, wsec, ql, wabove if has_threshold else None),
            _stats_tuple(tsk, terr, tsec, ql, tabove if has_threshold else None),
            tsk.dropped,
            wsk.to_bytes() if sketches else None,
            tsk.to_bytes() if sketches else None,
        )

    @property
    def count(self) -> int:
        return self._retired._count + sum(s.sk._count for s in self._ring)

    @property
    def errors(self) -> int:
        return self._retired_errors + sum(s.errors for s in self._ring)

    @property
    def above_threshold(self) -> int:
        return self._retired_above + sum(s.above for s in self._ring)

    @property
    def dropped(self) -> int:
        return self._retired._dropped + sum(s.sk._dropped for s in self._ring)

    @property
    def threshold(self) -> float | None:
        return self._threshold

    @property
    def window_seconds(self) -> float:
        return self.slice_ticks * self.slices * self.seconds_per_tick

    @property
    def nbytes(self) -> int:
        return self._retired.nbytes + sum(24 + s.sk.nbytes for s in self._ring)

    def __repr__(self) -> str:
        return f"Series(count={self.count}, errors={self.errors})"


def _stats_tuple(
    sk: Sketch, errors: int, seconds: float, qs: list[float], above: int | None
) -> tuple[Any, ...]:
    count = sk.count
    return (
        count,
        errors,
        sk.sum,
        sk.min,
        sk.max,
        sk.sum / count if count else math.nan,
        count / seconds if seconds > 0 else 0.0,
        *sk.quantiles(qs),
        seconds,
        above,
    )


# --- bucket counts and exposition text ------------------------------------------------------------

_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1
_SPECIAL_TEXT = {"nan": b"NaN", "inf": b"+Inf", "-inf": b"-Inf"}


def _check_keys(keys: Iterable[int]) -> list[int]:
    """Bucket keys as ints; they must be ascending (equal neighbours allowed)."""
    out: list[int] = []
    for k in keys:
        key = k.__index__()
        if not (_INT64_MIN <= key <= _INT64_MAX):
            raise OverflowError(f"bucket key {k!r} is out of range")
        if out and key < out[-1]:
            raise ValueError(f"bucket keys must be ascending; got {out[-1]!r} then {k!r}")
        out.append(key)
    return out


def _value_text(v: Any) -> bytes:
    if type(v) is bytes:
        return v
    if type(v) is int:
        return str(v).encode("ascii")
    text = repr(float(v))
    return _SPECIAL_TEXT.get(text) or text.encode("ascii")


def _template_lines(template: Any, nvalues: int) -> list[bytes]:
    """The lines of ``template`` (each ends with a newline, one per value), without newlines."""
    if not isinstance(template, bytes):
        raise TypeError(f"a template is bytes, got {type(template).__name__}")
    lines = template.split(b"\n")
    if lines.pop() != b"":
        raise ValueError("every line of a template ends with a newline")
    if len(lines) != nvalues:
        raise ValueError(f"{nvalues} values for a template of {len(lines)} lines")
    return lines


def format_samples(template: bytes, values: Iterable[Any]) -> bytes:
    """``template`` with each value's text written at the end of its line, as one bytes.

    ``template`` is exposition lines without their values: each ends with a newline, one line
    per value. A value that is ``bytes`` is written as it is (text formatted earlier); an
    ``int`` in decimal; anything else as a float, the shortest text that reads back as the same
    float (``repr``), or ``NaN``, ``+Inf``, ``-Inf``.
    """
    vs = tuple(values)
    lines = _template_lines(template, len(vs))
    return b"".join([line + _value_text(v) + b"\n" for line, v in zip(lines, vs)])


def histogram_samples(
    data: bytes | bytearray | memoryview,
    ladders: Mapping[float, Sequence[int]],
    template: bytes,
) -> bytes:
    """The Prometheus histogram lines of the sketch ``data`` serialises (``Sketch.to_bytes()``).

    ``ladders`` maps a sketch's ``alpha`` to its bucket keys (ascending: for each upper bound, the
    last key whose representative value is at or below it); a missing alpha raises ``KeyError``.
    ``template`` has one line per key, then the ``+Inf``, ``_sum`` and ``_count`` lines, as
    :func:`format_samples` takes them; the values are ``Sketch.cumulative_counts(keys)`` (the
    last, ``+Inf``, is ``count``), then the sketch's ``sum`` and ``count``. Same as decoding
    ``data`` with ``Sketch.from_bytes``, without building the sketch.
    """
    sketch = Sketch.from_bytes(data)
    counts = sketch.cumulative_counts(ladders[sketch.alpha])
    return format_samples(template, (*counts, sketch.sum, sketch.count))


# --- the clock ------------------------------------------------------------------------------------

now_ticks: Callable[[], int] = time.perf_counter_ns


def ticks_per_second() -> float:
    return 1e9


def refine_clock() -> float:
    return 1e9


def clock_source() -> str:
    return "monotonic"


# --- the per-call wrapper -------------------------------------------------------------------------


class TimedFunction:
    """What ``@perfsdk.timed`` returns for a plain function: times each call and records it."""

    def __init__(
        self, func: Callable[..., Any], series: Series, clock: Callable[[], int] | None = None
    ):
        if not callable(func):
            raise TypeError(f"timed() needs a callable, got {func!r}")
        if series is None:
            raise TypeError("TimedFunction() needs a Series, got None")
        self.func = func
        self.series = series
        self.clock = clock
        self._read = clock if clock is not None else time.perf_counter_ns

    def _now(self) -> int:
        try:
            return int(self._read())
        except Exception:
            return 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        t0 = self._now()
        try:
            r = self.func(*args, **kwargs)
        except BaseException:
            t1 = self._now()
            self.series._record(float(t1 - t0) * self.series.seconds_per_tick, t1, True)
            raise
        t1 = self._now()
        self.series._record(float(t1 - t0) * self.series.seconds_per_tick, t1, False)
        return r

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        if obj is None:
            return self
        return types.MethodType(self, obj)

    def __reduce__(self) -> str:
        return str(getattr(self, "__qualname__", None) or self.func.__qualname__)

    def __repr__(self) -> str:
        return f"<timed {self.func!r}>"


# --- counters and gauges --------------------------------------------------------------------------


class Counter:
    """A monotonically increasing total."""

    __slots__ = ("_lock", "_value")

    def __init__(self) -> None:
        self._value = 0.0
        self._lock = threading.Lock()

    def inc(self, amount: float = 1.0) -> None:
        a = float(amount)
        if not (a >= 0.0) or math.isinf(a):
            raise ValueError(
                f"counter increment {amount!r} must be finite and >= 0; "
                "use a gauge for values that go down"
            )
        with self._lock:
            self._value += a

    def reset(self) -> None:
        """Back to zero (a forked child starts clean)."""
        self._value = 0.0

    @property
    def value(self) -> float:
        return self._value


class Gauge:
    """A value that goes up and down."""

    __slots__ = ("_lock", "_value")

    def __init__(self) -> None:
        self._value = 0.0
        self._lock = threading.Lock()

    def set(self, value: float) -> None:
        self._value = float(value)

    def inc(self, amount: float = 1.0) -> None:
        with self._lock:
            self._value += float(amount)

    def dec(self, amount: float = 1.0) -> None:
        with self._lock:
            self._value -= float(amount)

    @property
    def value(self) -> float:
        return self._value


# --- records --------------------------------------------------------------------------------------


class RecordMaker:
    """``RecordMaker(cls, names)(*values)``: a ``cls`` with each slot of ``names`` set to its value.

    For the frozen, slotted dataclasses of ``perfsdk.records``: the same object as
    ``cls(*values)`` (every field given), built without ``__init__`` (whose
    ``object.__setattr__`` per field is slow): the slots are set as plain attributes of a mutable
    class with the very same slots, then the object is given its real class (allowed: the two
    layouts are identical). A snapshot builds three records per timer, thousands a second.
    """

    def __init__(self, cls: type, names: Iterable[str]) -> None:
        if not isinstance(cls, type):
            raise TypeError(f"RecordMaker needs a class, got {cls!r}")
        names = list(names)
        for name in names:
            if type(cls.__dict__.get(name)) is not types.MemberDescriptorType:
                raise TypeError(f"{cls.__name__}.{name} is not a slot of {cls.__name__}")
        slots = cls.__dict__.get("__slots__", ())
        mutable = type(f"_Mutable{cls.__name__}", (), {"__slots__": slots})
        lines = [f"def make({', '.join(names)}):", "    o = new(mutable)"]
        lines += [f"    o.{name} = {name}" for name in names]
        lines += ["    o.__class__ = cls", "    return o"]
        namespace: dict[str, Any] = {"new": object.__new__, "mutable": mutable, "cls": cls}
        exec("\n".join(lines), namespace)
        self._make: Callable[..., Any] = namespace["make"]
        self._cls = cls
        self._n = len(names)

    def __call__(self, *values: Any) -> Any:
        if len(values) != self._n:
            raise TypeError(f"{self._cls.__name__} takes {self._n} values, got {len(values)}")
        return self._make(*values)

    def __repr__(self) -> str:
        return f"RecordMaker({self._cls.__name__})"


# --- vectorised threshold check -------------------------------------------------------------------

STAT_CODES = {
    "count": 0,
    "rate": 1,
    "mean": 2,
    "min": 3,
    "max": 4,
    "sum": 5,
    "quantile": 6,
    "errors": 7,
    "error_ratio": 8,
    "above": 9,
}
OP_CODES = {">": 0, ">=": 1, "<": 2, "<=": 3}


def evaluate_rules(
    sketches: list[Sketch],
    seconds: Sequence[float],
    errors: Sequence[float],
    above: Sequence[float],
    series_idx: Sequence[int],
    stat: Sequence[int],
    arg: Sequence[float],
    op: Sequence[int],
    limit: Sequence[float],
    out_value: Any,
    out_match: Any,
) -> None:
    """Evaluate many rules against many series in one call (rules sorted by series, quantile)."""
    n = len(series_idx)
    i = 0
    nan = math.nan
    while i < n:
        si = series_idx[i]
        sk = sketches[si]
        j = i
        while j < n and series_idx[j] == si:
            j += 1
        qs = [arg[m] for m in range(i, j) if stat[m] == 6]
        qv = sk._quantiles_sorted(qs) if qs else []
        nq = 0
        c = float(sk._count)
        for m in range(i, j):
            o = stat[m]
            if o == 0:
                v = c
            elif o == 1:
                v = c / seconds[si] if seconds[si] > 0 else nan
            elif o == 2:
                v = sk._sum / c if c > 0 else nan
            elif o == 3:
                v = sk._min if c > 0 else nan
            elif o == 4:
                v = sk._max if c > 0 else nan
            elif o == 5:
                v = sk._sum
            elif o == 6:
                v = qv[nq]
                nq += 1
            elif o == 7:
                v = float(errors[si])
            elif o == 8:
                v = errors[si] / c if c > 0 else nan
            else:
                v = float(above[si])
            out_value[m] = v
            o = op[m]
            lim = limit[m]
            if o == 0:
                out_match[m] = v > lim
            elif o == 1:
                out_match[m] = v >= lim
            elif o == 2:
                out_match[m] = v < lim
            else:
                out_match[m] = v <= lim
        i = j
