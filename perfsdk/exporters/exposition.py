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

Rendering is kept cheap by caching, per label set, the text around the numbers (as bytes, one
prefix per line), by writing the numbers into it in C (:func:`perfsdk._speedups.format_samples`,
and :func:`perfsdk._speedups.histogram_samples`, which reads the histogram counts straight from
the serialised sketch in one pass), and by reusing the histogram block of a series whose sketch
did not change since the last render (idle series cost almost nothing).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
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

# The summary's values of a series: the window's quantiles, then the total's sum and count.
_SUMMARY_VALUES = attrgetter(
    *(f"window.{field}" for field, _ in QUANTILES), "total.sum", "total.count"
)
_NAN_QUANTILES = (math.nan,) * len(QUANTILES)
_RESERVED = {"le": "exported_le", "quantile": "exported_quantile"}
_SPECIAL = {"nan": "NaN", "inf": "+Inf", "-inf": "-Inf"}

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


# --- histogram counts -------------------------------------------------------------------------


def _last_key_at_or_below(bound: float, mult: float) -> int:
    """The highest sketch key whose representative value is ``<= bound``."""
    k = key_of(bound, mult)
    while value_of(k, mult) > bound:
        k -= 1
    while value_of(k + 1, mult) <= bound:
        k += 1
    return k


class _Ladders(dict[float, tuple[int, ...]]):
    """For each sketch accuracy met, the bucket bounds as sketch keys (the last key at or below
    each bound): ``histogram_samples`` looks the sketch's alpha up here."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        super().__init__()
        self.buckets = buckets

    def __missing__(self, alpha: float) -> tuple[int, ...]:
        if len(self) > 64:
            self.clear()
        mult = multiplier_for(alpha)
        keys = self[alpha] = tuple(_last_key_at_or_below(b, mult) for b in self.buckets)
        return keys


def bucket_counts(
    sketch: _accel.Sketch, buckets: Sequence[float], keys: Sequence[int] | None = None
) -> tuple[int, ...]:
    """Cumulative counts of ``sketch`` for each upper bound in ``buckets``, then ``+Inf``
    (``sketch.count``), by the rule in the module documentation."""
    if keys is None:
        keys = [_last_key_at_or_below(float(b), sketch.mult) for b in buckets]
    return sketch.cumulative_counts(keys)


# --- rendering ----------------------------------------------------------------------------------


@dataclass(slots=True)
class _TimerText:
    """The lines of one timer series without their values (UTF-8 templates for
    ``format_samples``), and its last histogram."""

    summary: bytes  # 5 quantiles, _sum, _count
    hist: bytes  # one line per bucket bound, +Inf, _sum, _count
    errors: bytes  # the line's start
    dropped: bytes
    # (sketch bytes, histogram lines) of the last render; one attribute, replaced atomically
    last: tuple[bytes, bytes] | None = None


def _timer_text(name: str, labels: Labels, le_labels: Sequence[str]) -> _TimerText:
    lab = _label_text(labels, _RESERVED)  # escaped: no newline in it
    inner = f"{lab}," if lab else ""
    tail = f"{{{lab}}} " if lab else " "
    summary = "".join(f'{name}{{{inner}quantile="{q!r}"}} \n' for _, q in QUANTILES)
    summary += f"{name}_sum{tail}\n{name}_count{tail}\n"
    hist = "".join(f'{name}_hist_bucket{{{inner}le="{le}"}} \n' for le in le_labels)
    hist += f"{name}_hist_sum{tail}\n{name}_hist_count{tail}\n"
    return _TimerText(
        summary.encode(),
        hist.encode(),
        f"{name}_errors_total{tail}".encode(),
        f"{name}_dropped_total{tail}".encode(),
    )


@dataclass(slots=True)
class _GroupText:
    """The texts of one timer family's series, in snapshot order, while its label sets stay."""

    labels: list[Labels]
    texts: list[_TimerText]
    summary: bytes  # every series' summary lines, one template
    errors: bytes  # every series' errors line, one template


def _group_text(labels: list[Labels], texts: list[_TimerText]) -> _GroupText:
    return _GroupText(
        labels,
        texts,
        b"".join(t.summary for t in texts),
        b"".join(t.errors + b"\n" for t in texts),
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
        self._ladders = _Ladders(self.buckets)
        self._groups: dict[str, _GroupText] = {}  # by timer name, as of the last render

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
        families = _Families()
        timer_groups: dict[str, _GroupText] = {}
        out: list[bytes] = []
        for (name, kind), group in groups.items():
            if kind == "timer":
                self._timer(name, group, families, timer_groups, out)
            elif kind in ("counter", "gauge"):
                _simple(name, kind, group, families, out)
        self._groups = timer_groups
        return b"".join(out)

    def _texts(self, name: str, group: list[SeriesSnapshot]) -> _GroupText:
        labels = [s.labels for s in group]
        known = self._groups.get(name)
        if known is not None and known.labels == labels:
            return known
        old = dict(zip(known.labels, known.texts)) if known is not None else {}
        texts = []
        for lab in labels:
            text = old.get(lab)
            if text is None:
                text = _timer_text(name, lab, self._le_labels)
            texts.append(text)
        return _group_text(labels, texts)

    def _timer(
        self,
        name: str,
        group: list[SeriesSnapshot],
        families: _Families,
        timer_groups: dict[str, _GroupText],
        out: list[bytes],
    ) -> None:
        group = [s for s in group if s.total is not None]
        if not group:
            return
        gtext = timer_groups[name] = self._texts(name, group)
        source = f"the timer {name!r}"
        what = _escape_help(group[0].help or name)
        hist = f"{name}_hist"
        errors = f"{name}_errors_total"
        dropped = f"{name}_dropped_total"
        # Claimed in this order (it decides which of two clashing families is kept), then
        # rendered series by series: the sum of a series is formatted once for both families.
        want_summary = families.claim(name, (f"{name}_sum", f"{name}_count"), source)
        want_hist = any(s.total_sketch is not None for s in group) and families.claim(
            hist, (f"{hist}_bucket", f"{hist}_sum", f"{hist}_count"), source
        )
        want_errors = families.claim(errors, (), source)
        want_dropped = any(s.dropped for s in group) and families.claim(dropped, (), source)

        histogram_samples = _accel.histogram_samples
        ladders = self._ladders
        texts = gtext.texts
        summary_values: list[object] = []
        hists: list[bytes] = []
        error_values: list[int] = []
        for s, text in zip(group, texts):
            total = s.total
            assert total is not None
            if want_summary:
                if s.window is not None:
                    summary_values += _SUMMARY_VALUES(s)
                else:
                    summary_values += (*_NAN_QUANTILES, total.sum, total.count)
            data = s.total_sketch
            if want_hist and data is not None:
                last = text.last
                if last is None or last[0] != data:
                    last = text.last = (data, histogram_samples(data, ladders, text.hist))
                hists.append(last[1])
            error_values.append(total.errors)

        if want_summary:
            out.append(
                f"# HELP {name} {what} (quantiles over the rolling window; sum and count "
                f"since start)\n# TYPE {name} summary\n".encode()
            )
            out.append(_accel.format_samples(gtext.summary, summary_values))
        if want_hist:
            out.append(
                f"# HELP {hist} {what} (histogram since start; buckets from the sketch, "
                f"see docs/exporters.md)\n# TYPE {hist} histogram\n".encode()
            )
            out += hists
        if want_errors:
            out.append(
                f"# HELP {errors} Observations of {name} recorded as errors, since start.\n"
                f"# TYPE {errors} counter\n".encode()
            )
            out.append(_accel.format_samples(gtext.errors, error_values))
        if want_dropped:
            out.append(
                f"# HELP {dropped} NaN or infinite observations of {name} dropped, since "
                f"start.\n# TYPE {dropped} counter\n".encode()
            )
            out += [
                b"%s%d\n" % (text.dropped, s.dropped) for s, text in zip(group, texts) if s.dropped
            ]


def _simple(
    name: str, kind: str, group: list[SeriesSnapshot], families: _Families, out: list[bytes]
) -> None:
    if not families.claim(name, (), f"the {kind} {name!r}"):
        return
    lines = [f"# HELP {name} {_escape_help(group[0].help or name)}\n# TYPE {name} {kind}\n"]
    for s in group:
        value = format_value(s.value if s.value is not None else math.nan)
        if s.labels:
            lines.append(f"{name}{{{_label_text(s.labels)}}} {value}\n")
        else:
            lines.append(f"{name} {value}\n")
    out.append("".join(lines).encode())


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
