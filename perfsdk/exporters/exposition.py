"""Prometheus text exposition (format 0.0.4) of a :class:`~perfsdk.records.Snapshot`.

What a snapshot becomes (``<name>`` is the series' name, labels as recorded):

===============================  =========  =====================================================
family                           type       samples
===============================  =========  =====================================================
``<name>`` (a counter)           counter    ``<name>`` (``jobs_total`` stays ``jobs_total``)
``<name>`` (a gauge)             gauge      ``<name>``
``<name>`` (a timer)             summary    ``<name>{quantile="0.5"|"0.9"|"0.95"|"0.99"|"0.999"}``
                                            over the rolling window (NaN while it is empty);
                                            ``<name>_sum`` and ``<name>_count`` since start
``<name>_hist`` (a timer)        histogram  ``<name>_hist_bucket{le=...}`` (cumulative),
                                            ``<name>_hist_sum``, ``<name>_hist_count``, since
                                            start
``<name>_errors_total``          counter    a timer's observations recorded as errors
``<name>_dropped_total``         counter    a timer's NaN/infinite observations dropped (only
                                            for series that dropped some)
===============================  =========  =====================================================

The summary keeps the bare name because it is what perfsdk measures best (quantiles exact to the
sketch's ``alpha``); its ``_sum``/``_count`` are cumulative, as in the Go client's summaries. The
histogram is there to aggregate across instances (``histogram_quantile``).

**Buckets.** A fixed ladder (:data:`DEFAULT_BUCKETS`: 1, 2.5 and 5 per decade from 1 µs to 100 s,
then ``+Inf``), identical at every scrape, so series never churn. Counts are exact functions of the
sketch: a sketch bucket is counted in ``le=b`` when its *representative value* (the value the
sketch reports for every observation in it; the summary's quantiles are made of these) is
``<= b``. A sketch bucket straddling ``b`` thus goes wholly to one side, always the same side; an
observation ``x`` counted in ``le=b`` satisfies ``x < b / (1 - alpha)``, one left out
``x > b / (1 + alpha)``. Zero and negative observations are counted in every bucket;
``le="+Inf"`` equals ``_count``.

**Clashes.** Two families never write the same sample name: the first family in snapshot order
wins, the later one is left out and logged once (rename one of the metrics). A timer's own ``le``
or ``quantile`` label is written as ``exported_le`` / ``exported_quantile``, as Prometheus renames
clashing target labels.

Rendering is done in Python and kept cheap by caching, per label set, the text around the numbers,
and by reusing the histogram block of a series whose sketch did not change since the last render
(idle series cost almost nothing).
"""

from __future__ import annotations

import logging
import math
import re
import struct
import threading
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import accumulate, pairwise
from operator import attrgetter

from perfsdk import _accel
from perfsdk._speedups_py import key_of, multiplier_for, value_of
from perfsdk.errors import ConfigError
from perfsdk.naming import Labels
from perfsdk.records import QUANTILES, SeriesSnapshot, Snapshot

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_BUCKETS",
    "Renderer",
    "bucket_counts",
    "check_buckets",
    "format_value",
    "render_exposition",
]

log = logging.getLogger("perfsdk.exporters")

#: The content type of the text exposition format this module writes.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Histogram upper bounds in seconds: 1, 2.5, 5 per decade from 1 µs to 100 s (``+Inf`` is added).
#: Parsed from decimal literals so ``le`` reads ``0.0025``, not ``0.0025000000000000005``.
DEFAULT_BUCKETS: tuple[float, ...] = (
    *(float(f"{m}e{e}") for e in range(-6, 2) for m in ("1", "2.5", "5")),
    100.0,
)

_QUANTILE_GETTER = attrgetter(*(field for field, _ in QUANTILES))
_NAN_QUANTILES = ("NaN",) * len(QUANTILES)
_RESERVED = {"le": "exported_le", "quantile": "exported_quantile"}
_SPECIAL = {"nan": "NaN", "inf": "+Inf", "-inf": "-Inf"}
_D = struct.Struct("<d")
_SKETCH_MAGIC = b"PSK1"

# Family names already reported as clashing, so each is logged once per process.
_clash_logged: set[str] = set()
_clash_lock = threading.Lock()


# --- values and text ----------------------------------------------------------------------------


def format_value(v: float) -> str:
    """A sample value as Prometheus reads it: the shortest round-trip repr, or ``NaN``,
    ``+Inf``, ``-Inf``."""
    if type(v) is int:
        return str(v)
    text = repr(float(v))
    return _SPECIAL.get(text, text)


def _escape_label_value(value: str) -> str:
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _label_text(labels: Labels, rename: dict[str, str] | None = None) -> str:
    """``a="1",b="2"`` (no braces); ``rename`` maps label names the family uses itself."""
    if rename:
        return ",".join(f'{rename.get(k, k)}="{_escape_label_value(v)}"' for k, v in labels)
    return ",".join(f'{k}="{_escape_label_value(v)}"' for k, v in labels)


def _percent_safe(text: str) -> str:
    return text.replace("%", "%%")


def check_buckets(buckets: Iterable[float]) -> tuple[float, ...]:
    """Validate histogram upper bounds: finite, positive seconds, strictly increasing (``+Inf``
    is added by the renderer)."""
    out = tuple(float(b) for b in buckets)
    if not out:
        raise ConfigError("buckets=() is empty; give at least one finite upper bound in seconds")
    for b in out:
        if not (0.0 < b < math.inf):
            raise ConfigError(
                f"bucket bound {b!r} is invalid: bounds must be finite and positive seconds "
                "(+Inf is added automatically)"
            )
    for a, b in pairwise(out):
        if a >= b:
            raise ConfigError(f"buckets={out!r} must be strictly increasing ({a!r} >= {b!r})")
    return out


# --- histogram counts from a serialised sketch --------------------------------------------------


def _last_key_at_or_below(bound: float, mult: float) -> int:
    """The highest sketch key whose representative value is ``<= bound``."""
    k = key_of(bound, mult)
    while value_of(k, mult) > bound:
        k -= 1
    while value_of(k + 1, mult) <= bound:
        k += 1
    return k


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = 0
    shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


# The fixed-width start of Sketch.to_bytes() version 1, up to the positive store's key range:
# magic, version, alpha, then varints max_bins, zero count, dropped, then sum, min, max (doubles),
# then the positive store's number of keys and its zigzagged first key (varints).
_VARINT = rb"([\x80-\xff]*[\x00-\x7f])"
_HEADER = re.compile(
    rb"PSK1\x01(.{8})[\x80-\xff]*[\x00-\x7f]"
    + _VARINT
    + rb"[\x80-\xff]*[\x00-\x7f](.{8}).{16}"
    + _VARINT
    + _VARINT
    + b"?",
    re.S,
)


def _varint_value(raw: bytes) -> int:
    if len(raw) == 1:
        return raw[0]
    value = 0
    for shift, byte in enumerate(raw):
        value |= (byte & 0x7F) << (7 * shift)
    return value


class _Plan:
    """How to read one key range's counts: bounds below the range see only the zero bucket,
    bounds inside it a prefix of the range (summed slice by slice), bounds above it everything."""

    __slots__ = ("above", "below", "slices", "tail")

    def __init__(self, bound_keys: Sequence[int], kmin: int, n: int) -> None:
        # prefix length for bound key K: the keys kmin..K, clipped to 0..n
        idx = [min(max(k - kmin + 1, 0), n) for k in bound_keys]
        self.below = sum(1 for i in idx if i == 0)
        self.above = sum(1 for i in idx if i == n) + 1  # + the +Inf bucket
        inner = [i for i in idx if 0 < i < n]
        self.slices = [slice(a, b) for a, b in zip([0, *inner], inner)]
        self.tail = slice(inner[-1] if inner else 0, None)


class _Ladder:
    """The bucket bounds as sketch keys, for one sketch accuracy, and reading plans by range."""

    __slots__ = ("keys", "plans")

    def __init__(self, mult: float, buckets: tuple[float, ...]) -> None:
        self.keys = [_last_key_at_or_below(b, mult) for b in buckets]
        self.plans: dict[tuple[int, int], _Plan] = {}

    def plan(self, kmin: int, n: int) -> _Plan:
        got = self.plans.get((kmin, n))
        if got is None:
            if len(self.plans) > 8192:
                self.plans.clear()
            got = self.plans[(kmin, n)] = _Plan(self.keys, kmin, n)
        return got


class _Counter:
    """Histogram counts (cumulative, ``+Inf`` last), sum and count of serialised sketches."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self._ladders: dict[float, _Ladder] = {}

    def ladder(self, alpha: float) -> _Ladder:
        ladder = self._ladders.get(alpha)
        if ladder is None:
            ladder = self._ladders[alpha] = _Ladder(multiplier_for(alpha), self.buckets)
        return ladder

    def counts(self, data: bytes) -> tuple[tuple[int, ...], float]:
        """(cumulative counts per bound then ``+Inf``, sum) of the sketch ``data`` serialises."""
        fast = self._counts_small(data)
        return fast if fast is not None else self._counts_sketch(_accel.Sketch.from_bytes(data))

    def _counts_small(self, data: bytes) -> tuple[tuple[int, ...], float] | None:
        # Reads the version-1 layout of Sketch.to_bytes() directly when every positive bucket
        # count is a one-byte varint (< 128) and there are no negative values: then the counts
        # are the bytes themselves, summed in C. Anything else goes through Sketch.from_bytes.
        m = _HEADER.match(data)
        if m is None:
            return None
        raw_alpha, raw_zero, raw_sum, raw_n, raw_kmin = m.groups()
        zero = _varint_value(raw_zero)
        (total_sum,) = _D.unpack(raw_sum)
        n = _varint_value(raw_n)
        pos = m.end()
        if n == 0:
            if data[pos - len(raw_kmin or b"") :] != b"\x00":  # the empty negative store
                return None
            return (zero,) * (len(self.buckets) + 1), total_sum
        if raw_kmin is None:
            return None
        region = data[pos : pos + n]
        if len(region) != n or not region.isascii() or data[pos + n :] != b"\x00":
            return None
        zz = _varint_value(raw_kmin)
        (alpha,) = _D.unpack(raw_alpha)
        plan = self.ladder(alpha).plan((zz >> 1) ^ -(zz & 1), n)
        inner = list(accumulate([sum(region[s]) for s in plan.slices], initial=zero))
        total = inner[-1] + sum(region[plan.tail])
        return (zero,) * plan.below + tuple(inner[1:]) + (total,) * plan.above, total_sum

    def _counts_sketch(self, sketch: _accel.Sketch) -> tuple[tuple[int, ...], float]:
        return bucket_counts(sketch, self.buckets, self.ladder(sketch.alpha).keys), sketch.sum


def bucket_counts(
    sketch: _accel.Sketch, buckets: Sequence[float], keys: Sequence[int] | None = None
) -> tuple[int, ...]:
    """Cumulative counts of ``sketch`` for each upper bound in ``buckets``, then ``+Inf``
    (``sketch.count``), by the rule in the module documentation."""
    if keys is None:
        keys = [_last_key_at_or_below(float(b), sketch.mult) for b in buckets]
    pos, neg, zero = sketch.bins()
    base = zero + sum(neg.values())
    if not pos:
        return (*([base] * len(keys)), sketch.count)
    sketch_keys = list(pos)  # both implementations give the keys in ascending order
    cum = list(accumulate(pos.values(), initial=base))  # cum[i]: base + the first i buckets
    return (*(cum[bisect_right(sketch_keys, k)] for k in keys), cum[-1])


# --- rendering ----------------------------------------------------------------------------------


@dataclass(slots=True)
class _TimerText:
    """The text of one timer series with ``%`` holes for the numbers, and its last histogram."""

    summary: str  # 5 quantiles %s, sum %s, count %d
    hist: str  # one %d per bucket, +Inf %d, sum %s, count %d
    errors: str  # prefix; the value follows
    dropped: str
    # (sketch bytes, histogram text) of the last render; one attribute, replaced atomically
    last: tuple[bytes, str] | None = None


def _timer_text(name: str, labels: Labels, le_labels: Sequence[str]) -> _TimerText:
    plain = _label_text(labels, _RESERVED)
    lab = _percent_safe(plain)
    inner = f"{lab}," if lab else ""
    tail = f"{{{lab}}} " if lab else " "
    plain_tail = f"{{{plain}}} " if plain else " "
    summary = "".join(f'{name}{{{inner}quantile="{q!r}"}} %s\n' for _, q in QUANTILES)
    summary += f"{name}_sum{tail}%s\n{name}_count{tail}%d\n"
    hist = "".join(f'{name}_hist_bucket{{{inner}le="{le}"}} %d\n' for le in le_labels)
    hist += f"{name}_hist_sum{tail}%s\n{name}_hist_count{tail}%d\n"
    return _TimerText(
        summary,
        hist,
        f"{name}_errors_total{plain_tail}",
        f"{name}_dropped_total{plain_tail}",
    )


class _Families:
    """Family and sample names already written, so no two families write the same name."""

    __slots__ = ("names",)

    def __init__(self) -> None:
        self.names: set[str] = set()

    def claim(self, family: str, samples: Iterable[str], source: str) -> bool:
        wanted = {family, *samples}
        clash = wanted & self.names
        if not clash:
            self.names |= wanted
            return True
        with _clash_lock:
            first = family not in _clash_logged
            _clash_logged.add(family)
        if first:
            log.warning(
                "perfsdk: Prometheus family %r (from %s) is left out of the exposition: "
                "%s already written by another metric; rename one of them",
                family,
                source,
                ", ".join(sorted(clash)),
            )
        return False


class Renderer:
    """Renders snapshots to the text exposition, caching text between renders.

    :param buckets: histogram upper bounds in seconds (default :data:`DEFAULT_BUCKETS`).

    One renderer per endpoint: it remembers the text of the series it rendered last, so reuse
    it across snapshots. Safe to call from several threads (the caches are only replaced whole).
    """

    def __init__(self, buckets: Sequence[float] = DEFAULT_BUCKETS) -> None:
        self.buckets = DEFAULT_BUCKETS if buckets is DEFAULT_BUCKETS else check_buckets(buckets)
        self._le_labels = [format_value(b) for b in self.buckets] + ["+Inf"]
        self._counter = _Counter(self.buckets)
        self._timers: dict[tuple[str, Labels], _TimerText] = {}
        self._values: dict[float, str] = {}

    def render(self, snapshot: Snapshot) -> bytes:
        """The exposition of ``snapshot`` (UTF-8, :data:`CONTENT_TYPE`); ``b""`` if it is empty.

        Take the snapshot with ``include_sketches=True``: a timer without its total sketch gets
        no histogram. Families come in the order of the first series of each name.
        """
        groups: dict[tuple[str, str], list[SeriesSnapshot]] = {}
        for s in snapshot.series:
            group = groups.get((s.name, s.kind))
            if group is None:
                groups[(s.name, s.kind)] = [s]
            else:
                group.append(s)
        if len(self._values) > 100_000:
            self._values = {}
        families = _Families()
        timers: dict[tuple[str, Labels], _TimerText] = {}
        out: list[str] = []
        for (name, kind), group in groups.items():
            if kind == "timer":
                self._timer(name, group, families, timers, out)
            elif kind in ("counter", "gauge"):
                _simple(name, kind, group, families, out)
        self._timers = timers
        return "".join(out).encode("utf-8")

    def _fmt(self, v: float) -> str:
        # Quantiles are sketch bucket values, a small set: remember their text.
        text = self._values.get(v)
        if text is None:
            text = self._values[v] = format_value(v)
        return text

    def _timer(
        self,
        name: str,
        group: list[SeriesSnapshot],
        families: _Families,
        timers: dict[tuple[str, Labels], _TimerText],
        out: list[str],
    ) -> None:
        group = [s for s in group if s.total is not None]
        if not group:
            return
        old = self._timers
        texts = []
        for s in group:
            key = (name, s.labels)
            text = old.get(key)
            if text is None:
                text = _timer_text(name, s.labels, self._le_labels)
            timers[key] = text
            texts.append(text)
        source = f"the timer {name!r}"
        what = _escape_help(group[0].help or name)
        known = self._values.get

        if families.claim(name, (f"{name}_sum", f"{name}_count"), source):
            out.append(
                f"# HELP {name} {what} (quantiles over the rolling window; sum and count "
                f"since start)\n# TYPE {name} summary\n"
            )
            for s, text in zip(group, texts):
                total = s.total
                assert total is not None
                window = s.window
                if window is None:
                    qs: tuple[str | None, ...] = _NAN_QUANTILES
                else:
                    values = _QUANTILE_GETTER(window)
                    qs = tuple(map(known, values))  # all in C when every value is known
                    if None in qs:
                        qs = tuple(map(self._fmt, values))
                out.append(text.summary % (*qs, format_value(total.sum), total.count))

        hist = f"{name}_hist"
        if any(s.total_sketch is not None for s in group) and families.claim(
            hist, (f"{hist}_bucket", f"{hist}_sum", f"{hist}_count"), source
        ):
            out.append(
                f"# HELP {hist} {what} (histogram since start; buckets from the sketch, "
                f"see docs/exporters.md)\n# TYPE {hist} histogram\n"
            )
            counter = self._counter
            for s, text in zip(group, texts):
                data = s.total_sketch
                if data is None:
                    continue
                last = text.last
                if last is not None and last[0] == data:
                    out.append(last[1])
                    continue
                counts, total_sum = counter.counts(data)
                block = text.hist % (*counts, format_value(total_sum), counts[-1])
                text.last = (data, block)
                out.append(block)

        errors = f"{name}_errors_total"
        if families.claim(errors, (), source):
            out.append(
                f"# HELP {errors} Observations of {name} recorded as errors, since start.\n"
                f"# TYPE {errors} counter\n"
            )
            for s, text in zip(group, texts):
                assert s.total is not None
                out.append(f"{text.errors}{s.total.errors}\n")

        dropped = f"{name}_dropped_total"
        if any(s.dropped for s in group) and families.claim(dropped, (), source):
            out.append(
                f"# HELP {dropped} NaN or infinite observations of {name} dropped, since "
                f"start.\n# TYPE {dropped} counter\n"
            )
            out.extend(
                [f"{text.dropped}{s.dropped}\n" for s, text in zip(group, texts) if s.dropped]
            )


def _simple(
    name: str, kind: str, group: list[SeriesSnapshot], families: _Families, out: list[str]
) -> None:
    if not families.claim(name, (), f"the {kind} {name!r}"):
        return
    out.append(f"# HELP {name} {_escape_help(group[0].help or name)}\n# TYPE {name} {kind}\n")
    for s in group:
        value = format_value(s.value if s.value is not None else math.nan)
        if s.labels:
            out.append(f"{name}{{{_label_text(s.labels)}}} {value}\n")
        else:
            out.append(f"{name} {value}\n")


_renderers: dict[tuple[float, ...], Renderer] = {}


def render_exposition(snapshot: Snapshot, *, buckets: Sequence[float] = DEFAULT_BUCKETS) -> bytes:
    """The Prometheus text exposition (format 0.0.4, :data:`CONTENT_TYPE`) of ``snapshot``.

    Take the snapshot with ``include_sketches=True``: a timer without its total sketch gets no
    histogram. See the module documentation for names, the bucket rule and clashes.
    """
    key = DEFAULT_BUCKETS if buckets is DEFAULT_BUCKETS else check_buckets(buckets)
    renderer = _renderers.get(key)
    if renderer is None:
        if len(_renderers) > 16:
            _renderers.clear()
        renderer = _renderers[key] = Renderer(key)
    return renderer.render(snapshot)
