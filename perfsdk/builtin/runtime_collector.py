"""Built-in plugin: Python runtime metrics (garbage collector, threads) from the stdlib only.

Samples (generation is ``"0"``, ``"1"`` or ``"2"``):

``python_gc_collections_total{generation}``             counter, collections run
``python_gc_objects_collected_total{generation}``       counter, objects the collector freed
``python_gc_objects_uncollectable_total{generation}``   counter, uncollectable objects found
``python_gc_generation_count{generation}``              gauge, ``gc.get_count()``
``python_threads``                                      gauge, ``threading.active_count()``

Disable with ``PERFSDK_DISABLED_PLUGINS=runtime_collector``.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Mapping

from perfsdk.hookspecs import hookimpl
from perfsdk.protocols import Collector, Sample

__all__ = ["RuntimeCollector", "perfsdk_collectors"]

# strict=False below: a future interpreter may report a different number of generations.
_GENERATIONS = (("generation", "0"),), (("generation", "1"),), (("generation", "2"),)

_COLLECTIONS_HELP = "Garbage collections run, per generation (gc.get_stats)."
_COLLECTED_HELP = "Objects freed by the garbage collector, per generation (gc.get_stats)."
_UNCOLLECTABLE_HELP = "Uncollectable objects found by the collector, per generation (gc.get_stats)."
_COUNT_HELP = (
    "gc.get_count() per generation: allocations minus deallocations since the last collection "
    "(generation 0), or collections of the younger generation since this one was collected."
)
_THREADS_HELP = "Threads currently alive (threading.active_count)."


class RuntimeCollector:
    """Reads the garbage collector's and threading's counters; a few microseconds per call."""

    name = "python_runtime"

    def collect(self) -> list[Sample]:
        """Return the current readings."""
        samples: list[Sample] = []
        for labels, stats in zip(_GENERATIONS, gc.get_stats(), strict=False):
            samples.append(
                Sample(
                    "python_gc_collections_total",
                    float(stats["collections"]),
                    labels,
                    "counter",
                    _COLLECTIONS_HELP,
                )
            )
            samples.append(
                Sample(
                    "python_gc_objects_collected_total",
                    float(stats["collected"]),
                    labels,
                    "counter",
                    _COLLECTED_HELP,
                )
            )
            samples.append(
                Sample(
                    "python_gc_objects_uncollectable_total",
                    float(stats["uncollectable"]),
                    labels,
                    "counter",
                    _UNCOLLECTABLE_HELP,
                )
            )
        for labels, count in zip(_GENERATIONS, gc.get_count(), strict=False):
            samples.append(
                Sample("python_gc_generation_count", float(count), labels, "gauge", _COUNT_HELP)
            )
        samples.append(
            Sample("python_threads", float(threading.active_count()), (), "gauge", _THREADS_HELP)
        )
        return samples


@hookimpl
def perfsdk_collectors(config: Mapping[str, object]) -> list[Collector]:
    """Contribute the runtime collector."""
    return [RuntimeCollector()]
